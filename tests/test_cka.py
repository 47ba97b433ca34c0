"""Linear CKA: known properties, an independent kernel-form reference, real tiny checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from trainer_utils import tiny_config, train_tiny_tokenizer

from proximity.analysis.cka import compare_models, linear_cka, model_folder
from proximity.errors import ProximityError
from proximity.training.loop import train


def _hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """The kernel form (Kornblith et al. 2019, eq. 1 with linear kernels), via Gram matrices."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h)  # noqa: E731
    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def test_cka_matches_the_kernel_form_and_its_invariances():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    y = x @ rng.normal(size=(8, 5)) + 0.5 * rng.normal(size=(60, 5))
    assert linear_cka(x, y) == pytest.approx(_hsic_cka(x, y), rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert linear_cka(x @ q * 3.7, y) == pytest.approx(linear_cka(x, y), rel=1e-10)
    stretched = x @ np.diag([10.0, 1, 1, 1, 1, 1, 1, 0.1])  # not isotropic: CKA changes
    assert abs(linear_cka(stretched, y) - linear_cka(x, y)) > 1e-3
    assert linear_cka(x, rng.normal(size=(60, 5))) < 0.5
    with pytest.raises(ValueError):
        linear_cka(x, y[:10])


@pytest.fixture(scope="module")
def tiny_run(shared_data: Path, tmp_path_factory) -> Path:
    """12 steps of pretraining with checkpoints at step 6 and at the end."""
    tokenizer = train_tiny_tokenizer(shared_data, tmp_path_factory.mktemp("tok"))
    out = tmp_path_factory.mktemp("run")
    train(tiny_config(tokenizer, shared_data, out, checkpoint={"steps": [6]}))
    return out


def test_per_layer_cka_of_real_checkpoints(tiny_run: Path, shared_data: Path):
    step6 = tiny_run / "checkpoints" / "step-000006"
    table = compare_models(
        tiny_run, [tiny_run, step6], data="c4", n_windows=8, seq_len=32,
        data_dir=shared_data, n_docs=300, max_chars=4000, labels=["itself", "step 6"],
    )  # fmt: skip
    itself = table[table["model"] == "itself"]["cka"].to_numpy()
    earlier = table[table["model"] == "step 6"]["cka"].to_numpy()
    assert len(itself) == len(earlier) == 3  # embeddings + 2 layers (micro-2l-64)
    assert np.allclose(itself, 1.0)
    assert (earlier < 1 - 1e-6).all() and (earlier > 0).all()
    assert (table["tokens"] == 8 * 32).all()


def test_cka_command_writes_the_table_and_figure_7(tiny_run: Path, shared_data: Path, tmp_path):
    proximity = str(Path(sys.executable).parent / "proximity")
    done = subprocess.run(
        [proximity, "cka", str(tiny_run), str(tiny_run / "checkpoints" / "step-000006"),
         "--data", "c4", "--n-windows", "4", "--seq-len", "32", "--n-docs", "300",
         "--max-chars", "4000", "--data-dir", str(shared_data), "--out", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(tmp_path / "cka.csv")
    assert list(table["layer"]) == [0, 1, 2]
    assert (tmp_path / "fig7_cka.png").stat().st_size > 10_000
    assert (tmp_path / "fig7_cka.pdf").exists()


def test_not_a_model_is_a_one_line_error(tmp_path):
    with pytest.raises(ProximityError, match="not a checkpoint"):
        model_folder(tmp_path)
