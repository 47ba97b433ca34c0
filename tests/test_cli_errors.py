"""Issue 2 §5: every kind of bad input is one line on stderr, exit code 2, no traceback.

Run through the installed console script, as a user would meet them. The hub is made
unreachable on purpose (HF_ENDPOINT on a closed local port) so the offline messages are
tested the same way with or without internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROXIMITY = Path(sys.executable).parent / "proximity"


def _write(folder: Path) -> dict[str, str]:
    files = {
        "bad": '{"text": "fine"}\n{"text": broken}\n',
        "nofield": '{"body": "a document"}\n',
        "empty": "",
    }
    for name, content in files.items():
        (folder / f"{name}.jsonl").write_text(content)
    (folder / "latin1.jsonl").write_bytes('{"text": "fine"}\n{"text": "café"}\n'.encode("latin-1"))
    return {name: str(folder / f"{name}.jsonl") for name in [*files, "latin1"]}


CASES = [
    (["gsm8kk"], True, "unknown dataset 'gsm8kk': did you mean gsm8k?"),
    (["{missing}"], True, "file not found"),
    (["{bad}"], True, "bad.jsonl:2: malformed JSON"),
    (["{nofield}"], True, "field 'text' not found; fields present: body"),
    (["{empty}"], True, "has no non-empty documents"),
    (["{latin1}"], True, "latin1.jsonl:2: not UTF-8 (byte 0xe9 at column 14)"),
    (["c4:0.5+gsm8k:0.4"], True, "weights sum to 0.9, they must sum to 1"),
    (["gsm8k", "--tokenizer", "{missing_tokenizer}"], True, "tokenizer file not found"),
    (["gsm8k"], False, "needs the Hugging Face hub, which is unreachable"),  # tokenizer offline
    (["python_stdlib"], False, "local-only"),
]


@pytest.mark.parametrize(("extra", "with_data", "message"), CASES)
def test_bad_input_is_one_line_with_exit_code_2(shared_data, tmp_path, extra, with_data, message):
    paths = _write(tmp_path) | {
        "missing": str(tmp_path / "missing.jsonl"),
        "missing_tokenizer": str(tmp_path / "nope" / "tokenizer.json"),
    }
    args = [argument.format(**paths) for argument in extra]
    command = [
        str(PROXIMITY),
        "similarity",
        "c4_placeholder",
        *args,
        "--out",
        str(tmp_path / "out"),
    ]
    command[2] = str(shared_data / "gsm8k_test.jsonl") + "?field=question"  # a valid first dataset
    if with_data:
        command += ["--data-dir", str(shared_data)]
    elif "local-only" in message:
        command += ["--tokenizer", str(shared_data / "tokenizers/gpt-neox-20b/tokenizer.json")]
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "80"}
    env.pop("PROXIMITY_DATA_DIR", None)
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


# Issue 18 §1: usage errors as click shows them (usage line, hint, message), exit 2, no
# traceback, for every command and sub-command; help and --version exit 0.
TRAIN_CLI = [sys.executable, "-m", "training.cli"]
USAGE_CASES = [
    # (command line, exit code, the usage line it must show, text the output must hold)
    ([], (0, 2), "Usage: proximity [OPTIONS] COMMAND", "similarity"),
    (["-h"], (0,), "Usage: proximity [OPTIONS] COMMAND", "correlate"),
    (["--help"], (0,), "Usage: proximity [OPTIONS] COMMAND", "train-grid"),
    (["corelate"], (2,), "Usage: proximity [OPTIONS] COMMAND", "No such command 'corelate'"),
    (["--bogus"], (2,), "Usage: proximity [OPTIONS] COMMAND", "No such option: --bogus"),
    (["similarity", "gsm8k", "--n-docs", "abc"], (2,), "Usage: proximity similarity", "'abc'"),
    (["similarity", "gsm8k", "--metirc", "kl"], (2,), "Usage: proximity similarity", "--metirc"),
    (["similarity", "-h"], (0,), "Usage: proximity similarity", "--n-docs"),
    (
        ["advantage", "--pretrain", "c4", "--mix", "math"],
        (2,),
        "Usage: proximity advantage",
        "--target",
    ),
    (["train"], (0, 2), "Usage: proximity train [OPTIONS] COMMAND", "pretrain"),
    (["train", "pretrian"], (2,), "Usage: proximity train", "No such command 'pretrian'"),
    (["train", "pretrain"], (2,), "Usage: proximity train pretrain", "--config"),
    (
        ["train", "pretrain", "-c", "x.yaml", "--bogus"],
        (2,),
        "Usage: proximity train pretrain",
        "--bogus",
    ),
    (
        ["train", "prepare", "c4", "--workers", "abc"],
        (2,),
        "Usage: proximity train prepare",
        "'abc'",
    ),
    (["train", "sft", "-h"], (0,), "Usage: proximity train sft", "--resume"),
    (["train-grid"], (2,), "Usage: proximity train-grid", "spec"),
    (["train-grid", "smoke", "--jobs", "abc"], (2,), "Usage: proximity train-grid", "'abc'"),
    (["train-grid", "-h"], (0,), "Usage: proximity train-grid", "--dry-run"),
    (["tokenizer", "--bogus"], (2,), "Usage: proximity tokenizer", "--bogus"),
    (["correlate"], (2,), "Usage: proximity correlate", "runs_dir"),
    (["correlate", "runs", "--n-docs", "abc"], (2,), "Usage: proximity correlate", "'abc'"),
    (["report", "runs", "--bogus"], (2,), "Usage: proximity report", "--bogus"),
    (["report", "-h"], (0,), "Usage: proximity report", "--analysis"),
    (["recommend", "--target", "gsm8k"], (2,), "Usage: proximity recommend", "--candidates"),
    (["cka", "--n-windows", "abc"], (2,), "Usage: proximity cka", "'abc'"),
    ([*TRAIN_CLI, "-h"], (0,), "Usage: python -m training.cli", "pretrain"),
    (
        # click raises "requires an argument" without its context, so it shows no usage line
        [*TRAIN_CLI, "midtrain", "--config"],
        (2,),
        "",
        "Option '--config' requires an argument",
    ),
    (
        [*TRAIN_CLI, "sft", "-c", "x.yaml", "--resum"],
        (2,),
        "Usage: python -m training.cli sft",
        "--resum",
    ),
]


@pytest.mark.parametrize(
    ("argv", "codes", "usage", "text"),
    USAGE_CASES,
    ids=[" ".join(c[0][-3:]) or "bare" for c in USAGE_CASES],
)
def test_usage_errors_show_usage_and_exit_2_without_traceback(argv, codes, usage, text):
    command = argv if argv[:1] == [sys.executable] else [str(PROXIMITY), *argv]
    env = {**os.environ, "COLUMNS": "200"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    output = result.stdout + result.stderr
    assert result.returncode in codes, output
    assert "Traceback" not in output
    # typer 0.12 writes argument names in capitals, 0.28 in lower case
    assert usage in output and text.lower() in output.lower(), output
    if codes == (2,):
        assert usage in result.stderr and result.stdout == ""  # errors go to stderr only
        assert "Error" in result.stderr


def test_version_is_the_one_pyproject_declares():
    """`--version` prints the version pyproject.toml gives the package, and nothing else."""
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    result = subprocess.run([str(PROXIMITY), "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout == f"proximity {declared['project']['version']}\n"
