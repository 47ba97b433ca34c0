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
