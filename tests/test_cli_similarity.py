"""`proximity similarity` and `proximity advantage` end to end on real data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import proximity.commands  # noqa: F401  (registers the commands on the app)
from proximity.cli import app

PROXIMITY = Path(sys.executable).parent / "proximity"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def paths(shared_data: Path) -> dict[str, str]:
    return {
        "c4": f"{shared_data / 'c4_en_sample.jsonl'}?field=text",
        "c4_extra": f"{shared_data / 'c4_extra.jsonl'}?field=text",
    }


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_similarity_writes_a_sane_matrix_csv_json_and_heatmap(
    shared_data: Path, paths: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "sim"
    args = ["similarity", paths["c4"], paths["c4_extra"], "starcoder", "gsm8k"]
    options = ["--n-docs", "60", "--data-dir", str(shared_data), "--bootstrap", "20"]
    output = _run([*args, *options, "--out", str(out)])
    assert "substitute" in output and "python_stdlib_code.jsonl" in output

    table = pd.read_csv(out / "similarity.csv")
    assert len(table) == 16 and set(table["metric"]) == {"paper"}
    values = table.set_index(["a", "b"])["value"]
    for label in (paths["c4"], "starcoder"):
        assert values[(label, label)] == pytest.approx(1.0)
    assert values[(paths["c4"], "starcoder")] < values[(paths["c4"], paths["c4_extra"])]
    assert (table["ci_low"] <= table["value"] + 1e-9).all()
    assert (table["value"] <= table["ci_high"] + 1e-9).all()
    assert (table["n_tokens_a"] > 1000).all()
    assert table.loc[table["b"] == "starcoder", "notes_b"].str.contains("substitute").all()

    record = json.loads((out / "similarity.json").read_text())
    assert record["options"]["n_docs"] == 60 and record["bootstrap"]["n_resamples"] == 20
    assert record["datasets"]["starcoder"]["source"]["substitute"]
    assert len(record["results"]) == 16
    assert (out / "similarity_heatmap.png").read_bytes()[:8] == PNG_MAGIC


def test_similarity_with_an_equal_token_budget_reports_equal_counts(
    shared_data: Path, paths: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "eq"
    args = ["similarity", paths["c4"], "gsm8k", "--equal-tokens", "6000", "--metric", "jaccard"]
    _run([*args, "--data-dir", str(shared_data), "--out", str(out)])
    table = pd.read_csv(out / "similarity.csv")
    assert set(table["n_tokens_a"]) == {6000} and set(table["metric"]) == {"jaccard"}


def test_advantage_ranks_mixes_and_writes_outputs(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "adv"
    args = ["advantage", "--pretrain", "c4", "--target", "gsm8k", "--n-docs", "50"]
    mixes = ["--mix", "starcoder:0.2", "--mix", "gsm8k:0.1", "--mix", "c4:0.5+math:0.5"]
    _run([*args, *mixes, "--data-dir", str(shared_data), "--out", str(out)])
    table = pd.read_csv(out / "advantage.csv")
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["advantage"].is_monotonic_decreasing
    assert table.iloc[0]["mix"] == "gsm8k:0.1"
    assert set(table["mix_spec"]) >= {"c4:0.8+starcoder:0.2", "c4:0.5+math:0.5"}
    diff = table["sim_mix_target"] - table["sim_pretrain_target"]
    assert (diff - table["advantage"]).abs().max() < 1e-12
    record = json.loads((out / "advantage.json").read_text())
    assert record["pretrain"] == "c4" and record["mixes"]["starcoder:0.2"]
    assert (out / "advantage.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["similarity", "c4", "--metric", "cosin"], "unknown metric 'cosin'"),
        (["advantage", "--pretrain", "c4", "--target", "gsm8k", "--mix", "math:1.2"], "--mix"),
        (["similarity", "c4", "gsm8k", "--ngram-buckets", "1000"], "--ngram-buckets"),
        (["similarity", "c4", "gsm8k", "--ci-method", "bca"], "--ci-method"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(
    shared_data: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    result = subprocess.run(
        [str(PROXIMITY), *args, "--data-dir", str(shared_data), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},  # so a soft wrap cannot split the one line
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written on bad input
