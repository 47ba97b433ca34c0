"""Issue 18 §7: every command's help says what it writes and where; one convention for default
output places (a grid's analysis into RUNS/analysis, everything else into outputs/<command>)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from grid_utils import generated_results, write_grid
from typer.testing import CliRunner

from proximity import cli

PROXIMITY = str(Path(sys.executable).parent / "proximity")


@pytest.fixture(scope="module")
def app():
    cli._register_core_commands()
    cli._register_plugins()
    return cli.app


TRAINS = r"Writes config\.yaml, metrics\.jsonl and checkpoints/ into out_dir"


@pytest.mark.parametrize(
    ("command", "writes"),
    [
        (["similarity"], r"similarity\.csv.*--out \(default outputs/similarity\)"),
        (["advantage"], r"advantage\.csv.*--out \(default outputs/advantage\)"),
        (["correlate"], r"correlation\.csv.*--out \(default RUNS_DIR/analysis\)"),
        (["report"], r"report\.html and report\.md .*\(default RUNS_DIR/analysis/report\.html\)"),
        (["cka"], r"cka\.csv.*with --grid, RUNS/analysis.*else outputs/cka"),
        (["recommend"], r"recommend\.csv to --out \(default outputs/recommend\)"),
        (["train", "pretrain"], TRAINS),
        (["train", "midtrain"], TRAINS),
        (["train", "sft"], TRAINS),
        (["train", "prepare"], r"Writes one build folder per dataset under --out"),
        (["train", "keys"], r"writes nothing"),
        (["train-grid"], r"Writes into DIR: grid\.yaml.*results\.csv"),
        (["tokenizer", "train"], r"writes OUT/tokenizer\.json"),
        (["tokenizer", "info"], r"writes nothing"),
    ],
)  # fmt: skip
def test_help_says_what_each_command_writes_and_where(app, command, writes):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # unwrapped, unboxed
    assert re.search(writes, text), text


def test_report_goes_beside_the_analysis_it_reads_by_default(shared_data, tmp_path):
    root = write_grid(generated_results(), tmp_path / "grid", shared_data)
    run = [PROXIMITY, "correlate", str(root), "--n-docs", "150", "--no-plot"]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    assert (root / "analysis" / "statistics.json").exists()  # correlate's default place
    done = subprocess.run([PROXIMITY, "report", str(root)], capture_output=True, text=True,
                          cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (root / "analysis" / "report.html").exists()
    assert (root / "analysis" / "report.md").exists()
    assert not (tmp_path / "report.html").exists()  # the old default, the current folder


def test_a_recorded_path_is_relative_when_it_lies_within_or_beside_the_working_folder(
    tmp_path, monkeypatch
):
    """Committed tables and reports must not carry one machine's absolute paths."""
    from proximity.outputs import portable_path

    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    assert portable_path(work / "runs" / "g") == "runs/g"
    assert portable_path(tmp_path / "shared" / "data") == "../shared/data"
    assert portable_path("already/relative") == "already/relative"
    far = Path("/") / "scratch" / "elsewhere"  # two or more levels up: kept as given
    assert portable_path(far) == str(far)
