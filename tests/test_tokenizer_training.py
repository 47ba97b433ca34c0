"""`proximity tokenizer train`: a small byte-level BPE that round-trips text and loads anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from proximity.data import load_texts
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.tokenizer_training import save_tokenizer, tokenizer_app, train_tokenizer

VOCAB = 1000


@pytest.fixture(scope="module")
def c4_texts(shared_data: Path) -> list[str]:
    return list(load_texts("c4", n_docs=300, data_dir=shared_data))


@pytest.fixture(scope="module")
def trained(c4_texts):
    return train_tokenizer(c4_texts, VOCAB)


def test_trained_tokenizer_has_the_requested_size_and_neox_special_ids(trained):
    assert trained.get_vocab_size() == VOCAB
    assert trained.token_to_id("<|endoftext|>") == 0
    assert trained.token_to_id("<|padding|>") == 1


def test_trained_tokenizer_round_trips_text(trained, c4_texts, shared_data):
    code = next(load_texts("starcoder", n_docs=1, max_chars=3000, data_dir=shared_data))
    unseen = ["naïve café — 日本語 🙂\n\ttabs  and  spaces", code, *c4_texts[:50]]
    for text in unseen:
        ids = trained.encode(text, add_special_tokens=False).ids
        assert trained.decode(ids) == unicodedata.normalize("NFC", text)
    # It learned merges: far fewer tokens than bytes on its own corpus.
    n_tokens = sum(len(e.ids) for e in trained.encode_batch(c4_texts[:50]))
    assert n_tokens < 0.5 * sum(len(t.encode()) for t in c4_texts[:50])


def test_saved_tokenizer_loads_with_load_tokenizer(trained, c4_texts, tmp_path):
    path = save_tokenizer(trained, tmp_path / "tok")
    for name in (path, path.parent):
        loaded = load_tokenizer(str(name))
        assert loaded.encode(c4_texts[0]).ids == trained.encode(c4_texts[0]).ids


def test_cli_trains_and_saves_a_tokenizer(shared_data, tmp_path):
    out = tmp_path / "tok-600"
    args = ["train", "--corpus", "c4", "--vocab-size", "600", "--n-docs", "100"]
    result = CliRunner().invoke(
        tokenizer_app, [*args, "--out", str(out), "--data-dir", str(shared_data)]
    )
    assert result.exit_code == 0, result.output
    assert load_tokenizer(str(out)).get_vocab_size() == 600
    info = json.loads((out / "tokenizer_info.json").read_text())
    assert info["corpus"] == "c4" and info["n_docs"] == 100 and info["vocab_size"] == 600


def test_cli_bad_vocab_size_is_a_one_line_error_naming_the_flag(shared_data, tmp_path):
    args = ["train", "--corpus", "c4", "--vocab-size", "100", "--out", str(tmp_path / "t")]
    result = CliRunner().invoke(tokenizer_app, [*args, "--data-dir", str(shared_data)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ProximityError)
    assert "--vocab-size" in str(result.exception) and "\n" not in str(result.exception)
    assert not (tmp_path / "t").exists()


def test_console_script_prints_one_line_for_a_missing_corpus(shared_data, tmp_path):
    script = Path(sys.executable).with_name("proximity")
    args = ["tokenizer", "train", "--corpus", "no_such_file.jsonl", "--out", str(tmp_path / "t")]
    done = subprocess.run(
        [str(script), *args, "--data-dir", str(shared_data)], capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error:") and len(done.stderr.strip().splitlines()) == 1
