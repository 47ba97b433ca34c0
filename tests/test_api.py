"""Issue 18 §6: `proximity.similarity_matrix` and `proximity.proximity_advantage` give the
command line's numbers, under the flags' names, as DataFrames a notebook can use directly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import proximity
from proximity.errors import ProximityError

ROOT = Path(__file__).resolve().parents[1]
PROXIMITY = str(Path(sys.executable).parent / "proximity")
N_DOCS = 40  # a small sample: the numbers must agree, whatever they are


def _cli(*argv: str, data: Path, out: Path) -> None:
    command = [PROXIMITY, *argv, "--n-docs", str(N_DOCS), "--data-dir", str(data),
               "--out", str(out), "--no-plot", "--no-cache"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("flags", "keywords"),
    [
        ([], {}),
        (["--metric", "cosine", "--max-tokens", "64"], {"metric": "cosine", "max_tokens": 64}),
    ],
    ids=["paper", "cosine-64-tokens"],
)  # fmt: skip
def test_similarity_matrix_is_the_commands_csv_as_a_square(shared_data, tmp_path, flags, keywords):
    datasets = ["c4", "gsm8k", "code=pycode"]
    _cli("similarity", *datasets, *flags, data=shared_data, out=tmp_path)
    written = pd.read_csv(tmp_path / "similarity.csv")

    matrix = proximity.similarity_matrix(
        datasets, n_docs=N_DOCS, data_dir=shared_data, no_cache=True, **keywords
    )
    assert list(matrix.index) == list(matrix.columns) == ["c4", "gsm8k", "code"]
    for row in written.itertuples():
        assert matrix.loc[row.a, row.b] == row.value  # exactly: the same computation
    assert len(written) == matrix.size


def test_proximity_advantage_is_the_commands_table(shared_data, tmp_path):
    mixes = ["starcoder:0.2", "math:0.12", "starcoder"]
    _cli("advantage", "--pretrain", "c4", "--target", "gsm8k", *[f"--mix={m}" for m in mixes],
         data=shared_data, out=tmp_path)  # fmt: skip
    written = pd.read_csv(tmp_path / "advantage.csv")

    ranked = proximity.proximity_advantage(
        "c4", "gsm8k", mixes, n_docs=N_DOCS, data_dir=shared_data, no_cache=True
    )
    assert list(ranked.columns) == list(written.columns)
    assert list(ranked["mix"]) == list(written["mix"]) and list(ranked["rank"]) == [1, 2, 3]
    for column in ("advantage", "sim_mix_target", "sim_pretrain_target", "weight"):
        assert ranked[column].tolist() == written[column].tolist()
    # PA = sim(mix, target) − sim(pretrain, target), row by row
    difference = ranked["sim_mix_target"] - ranked["sim_pretrain_target"]
    assert difference.tolist() == pytest.approx(ranked["advantage"].tolist(), abs=1e-12)


def test_bootstrap_intervals_come_as_frames_of_the_same_shape(shared_data):
    matrix = proximity.similarity_matrix(
        ["c4", "gsm8k"], n_docs=N_DOCS, data_dir=shared_data, bootstrap=20
    )
    for bound in ("ci_low", "ci_high"):
        frame = matrix.attrs[bound]
        assert frame.shape == matrix.shape and list(frame.index) == list(matrix.index)
    assert (matrix.attrs["ci_low"] <= matrix.attrs["ci_high"]).all().all()
    assert proximity.similarity_matrix(["c4", "gsm8k"], n_docs=N_DOCS,
                                       data_dir=shared_data).attrs == {}  # fmt: skip


def test_a_bad_keyword_value_names_the_flag(shared_data):
    with pytest.raises(ProximityError, match="--n-docs must be positive"):
        proximity.similarity_matrix(["c4", "gsm8k"], n_docs=0, data_dir=shared_data)


def test_import_proximity_stays_light():
    """Every command imports the package: the API's pandas must load only when used."""
    code = "import sys, proximity; print('pandas' in sys.modules, proximity.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["False", proximity.__version__]
    with pytest.raises(AttributeError, match="no attribute 'similarity_matrics'"):
        proximity.similarity_matrics  # noqa: B018


def test_the_readme_example_runs(shared_data, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    (block,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    monkeypatch.setenv("PROXIMITY_DATA_DIR", str(shared_data))
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    matrix, ranked = namespace["matrix"], namespace["ranked"]
    assert list(matrix.index) == list(matrix.columns) == ["c4", "starcoder", "gsm8k"]
    assert (pd.Series(matrix.values.diagonal()) == 1.0).all()  # paper metric: 1 with itself
    assert ranked["advantage"].is_monotonic_decreasing and len(ranked) == 2
    assert "advantage" in capsys.readouterr().out
    assert os.environ["PROXIMITY_DATA_DIR"] == str(shared_data)
