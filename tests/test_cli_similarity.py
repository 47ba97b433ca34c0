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
from proximity.outputs import png_figure_key

PROXIMITY = Path(sys.executable).parent / "proximity"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def paths(shared_data: Path) -> dict[str, str]:
    return {
        "c4": f"{shared_data / 'c4_en_sample.jsonl'}?field=text",
        "c4_extra": f"{shared_data / 'c4_extra.jsonl'}?field=text",
    }


def _run(args: list[str], columns: int = 200) -> str:
    result = CliRunner().invoke(
        app, args, catch_exceptions=False, env={"COLUMNS": str(columns), "TERM": "dumb"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_similarity_writes_a_sane_matrix_csv_json_and_heatmap(
    shared_data: Path, paths: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "sim"
    args = ["similarity", paths["c4"], f"web={paths['c4_extra']}", "starcoder", "gsm8k"]
    options = ["--n-docs", "60", "--data-dir", str(shared_data), "--bootstrap", "20"]
    output = _run([*args, *options, "--out", str(out)])
    assert "substitute" in output and "python_stdlib_code.jsonl" in output

    table = pd.read_csv(out / "similarity.csv")
    assert len(table) == 16 and set(table["metric"]) == {"paper"}
    assert list(dict.fromkeys(table["a"])) == ["c4_en_sample", "web", "starcoder", "gsm8k"]
    values = table.set_index(["a", "b"])["value"]
    for label in ("c4_en_sample", "starcoder"):
        assert values[(label, label)] == pytest.approx(1.0)
    assert values[("c4_en_sample", "starcoder")] < values[("c4_en_sample", "web")]
    off = table[table["a"] != table["b"]]
    assert (off["ci_high"] > off["ci_low"]).all()
    assert (table["n_tokens_a"] > 1000).all()
    assert table.loc[table["b"] == "starcoder", "notes_b"].str.contains("substitute").all()

    record = json.loads((out / "similarity.json").read_text())
    assert record["options"]["n_docs"] == 60 and record["bootstrap"]["n_resamples"] == 20
    assert record["bootstrap"]["method"] == "basic" and record["mixture"] == "expected"
    assert record["datasets"]["starcoder"]["source"]["substitute"]
    assert record["datasets"]["gsm8k"]["read"]["sampling"] == "first 60 documents"
    assert record["compared"]["web"] == paths["c4_extra"]
    assert len(record["results"]) == 16
    heatmap = out / "similarity_heatmap.png"
    assert heatmap.read_bytes()[:8] == PNG_MAGIC and png_figure_key(heatmap)


def test_a_rerun_keeps_a_current_figure_and_no_plot_draws_none(
    shared_data: Path, tmp_path: Path
) -> None:
    base = ["similarity", "gsm8k", "math", "--n-docs", "40", "--data-dir", str(shared_data)]
    out = tmp_path / "a"
    assert f"wrote {out / 'similarity_heatmap.png'}" in _run([*base, "--out", str(out)])
    before = (out / "similarity_heatmap.png").stat().st_mtime_ns
    again = _run([*base, "--out", str(out)])
    assert f"up to date {out / 'similarity_heatmap.png'}" in again
    assert (out / "similarity_heatmap.png").stat().st_mtime_ns == before
    changed = _run([*base, "--metric", "cosine", "--out", str(out)])  # other values: redrawn
    assert f"wrote {out / 'similarity_heatmap.png'}" in changed
    bare = tmp_path / "b"
    _run([*base, "--no-plot", "--out", str(bare)])
    assert sorted(p.name for p in bare.iterdir()) == ["similarity.csv", "similarity.json"]


def test_similarity_with_an_equal_token_budget_reports_equal_counts(
    shared_data: Path, paths: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "eq"
    args = ["similarity", paths["c4"], "gsm8k", "--equal-tokens", "6000", "--metric", "jaccard"]
    _run([*args, "--data-dir", str(shared_data), "--out", str(out)])
    table = pd.read_csv(out / "similarity.csv")
    assert set(table["n_tokens_a"]) == {6000} and set(table["metric"]) == {"jaccard"}


def test_random_samples_under_a_budget_depend_on_the_seed_and_are_recorded(
    shared_data: Path, tmp_path: Path
) -> None:
    runs = {}
    for seed in (1, 2):
        out = tmp_path / f"s{seed}"
        args = ["similarity", "gsm8k", "lima", "--sample", "random", "--seed", str(seed)]
        _run([*args, "--equal-tokens", "8000", "--n-docs", "200", "--no-plot",
              "--data-dir", str(shared_data), "--out", str(out)])  # fmt: skip
        runs[seed] = json.loads((out / "similarity.json").read_text())
    one, two = runs[1]["results"][1]["value"], runs[2]["results"][1]["value"]
    assert one != two
    read = runs[1]["datasets"]["gsm8k"]["read"]
    assert read["sampling"] == "uniform random sample of 200 records (seed 1)"
    assert runs[1]["options"]["sample"] == "random" and runs[1]["bootstrap"]["seed"] == 0


def test_advantage_ranks_mixes_cpt_included_and_writes_outputs(
    shared_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adv"
    args = ["advantage", "--pretrain", "c4", "--target", "gsm8k", "--n-docs", "50"]
    mixes = ["--mix", "starcoder:0.2", "--mix", "gsm8k:0.1", "--mix", "c4:0.5+math:0.5",
             "--mix", "math"]  # fmt: skip
    output = _run([*args, *mixes, "--data-dir", str(shared_data), "--out", str(out)])
    assert "baseline sim(c4, gsm8k)" in output
    table = pd.read_csv(out / "advantage.csv")
    assert table["rank"].tolist() == [1, 2, 3, 4]
    assert table["advantage"].is_monotonic_decreasing
    assert table.iloc[0]["mix"] == "gsm8k:0.1"
    assert set(table["mix_spec"]) == {"c4:0.8+starcoder:0.2", "c4:0.9+gsm8k:0.1",
                                      "c4:0.5+math:0.5", "math"}  # fmt: skip
    assert table.set_index("mix").loc["math", "weight"] == 1.0
    diff = table["sim_mix_target"] - table["sim_pretrain_target"]
    assert (diff - table["advantage"]).abs().max() < 1e-12
    record = json.loads((out / "advantage.json").read_text())
    assert record["pretrain"] == "c4" and record["mixes"]["starcoder:0.2"]
    assert (out / "advantage.png").read_bytes()[:8] == PNG_MAGIC


def _table_cells(output: str, columns: int) -> list[list[str]]:
    """Rows of a rich table as printed, folded cells joined back together."""
    rows: list[list[str]] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if len(cells) != columns:
            continue
        if cells[0]:
            rows.append(cells)
        else:
            rows[-1] = [a + b for a, b in zip(rows[-1], cells, strict=True)]
    return rows


def test_an_80_column_table_never_shows_two_mixtures_as_the_same_text(
    shared_data: Path, tmp_path: Path
) -> None:
    mixes = ["c4:0.8+starcoder:0.2", "c4:0.8+starcoder:0.1+math:0.1", "math:0.12"]
    args = ["advantage", "--pretrain", "c4", "--target", "pycode", "--n-docs", "30"]
    output = _run(
        [*args, *[a for m in mixes for a in ("--mix", m)], "--data-dir", str(shared_data),
         "--no-plot", "--out", str(tmp_path)],
        columns=80,
    )  # fmt: skip
    assert max(len(line) for line in output.splitlines()) <= 80
    rows = _table_cells(output, 5)
    assert sorted(row[1] for row in rows) == sorted(mixes)
    assert sorted(row[2] for row in rows) == sorted(
        ["c4:0.8+starcoder:0.2", "c4:0.8+starcoder:0.1+math:0.1", "c4:0.88+math:0.12"]
    )


def test_resample_mode_runs_the_authors_mixing_and_says_where_it_differs(
    shared_data: Path, tmp_path: Path
) -> None:
    args = ["advantage", "--pretrain", "c4", "--target", "pycode", "--mix", "starcoder:0.2"]
    output = _run([*args, "--mixture", "resample", "--n-docs", "40", "--no-plot",
                   "--data-dir", str(shared_data), "--out", str(tmp_path)])  # fmt: skip
    assert "resample: c4: 160 documents needed for weight 0.8, its sample has 40" in output
    record = json.loads((tmp_path / "advantage.json").read_text())
    assert record["mixture"] == "resample" and record["options"]["per_document"]


def test_a_dataset_with_fewer_documents_than_asked_says_so(
    shared_data: Path, tmp_path: Path
) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text('{"text": "The only document in this file."}\n')
    out = tmp_path / "out"
    output = _run(["similarity", str(one), "gsm8k", "--data-dir", str(shared_data),
                   "--no-plot", "--out", str(out)])  # fmt: skip
    assert "one: 1 document read, 1,000 asked for" in output.replace("\n", " ")
    record = json.loads((out / "similarity.json").read_text())
    entry = record["datasets"][str(one)]
    assert entry["n_docs"] == 1 and entry["n_docs_requested"] == 1000
    assert entry["notes"] == [
        "1 document read, 1,000 asked for: the dataset has no more non-empty documents"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["similarity", "c4", "--metric", "cosin"], "unknown metric 'cosin'"),
        (["advantage", "--pretrain", "c4", "--target", "gsm8k", "--mix", "math:1.2"], "--mix"),
        (["similarity", "c4", "gsm8k", "--ngram-buckets", "1000"], "--ngram-buckets"),
        (["similarity", "c4", "gsm8k", "--ci-method", "centered"], "--ci-method"),
        (["similarity", "c4", "gsm8k", "--mixture", "exact"], "--mixture"),
        (["similarity", "x=c4", "x=gsm8k"], "both be called 'x'"),
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
