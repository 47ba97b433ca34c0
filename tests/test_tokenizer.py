"""Tokenizers load by alias, file or folder, and their fingerprints tell them apart."""

import pytest

from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer, tokenizer_fingerprint


def test_pythia_alias_resolves_to_the_local_gpt_neox_tokenizer(shared_data):
    tokenizer = load_tokenizer("pythia", shared_data)
    assert tokenizer.get_vocab_size() == 50277
    assert tokenizer.encode("Hello world").ids == [12092, 1533]  # Pythia's ids (MANIFEST.md)
    assert (
        load_tokenizer("EleutherAI/pythia-160m", shared_data).encode("Hi").ids
        == tokenizer.encode("Hi").ids
    )


def test_gpt2_from_vocab_and_merges_folder_matches_its_tokenizer_json(shared_data, tmp_path):
    folder = tmp_path / "gpt2"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes((shared_data / "tokenizers/gpt2" / name).read_bytes())
    from_pair = load_tokenizer(str(folder))
    from_json = load_tokenizer(str(shared_data / "tokenizers/gpt2/tokenizer.json"))
    text = "Midtraining bridges pretraining and posttraining distributions."
    assert from_pair.encode(text).ids == from_json.encode(text).ids
    assert from_json.encode("Hello world").ids == [15496, 995]


def test_fingerprints_differ_between_tokenizers(shared_data):
    pythia = load_tokenizer("pythia", shared_data)
    gpt2 = load_tokenizer("gpt2", shared_data)
    assert tokenizer_fingerprint(pythia) != tokenizer_fingerprint(gpt2)
    assert tokenizer_fingerprint(pythia) == tokenizer_fingerprint(
        load_tokenizer("pythia", shared_data)
    )


def test_missing_tokenizer_file_and_unreachable_hub(tmp_path, monkeypatch):
    from proximity import readers

    with pytest.raises(ProximityError, match="tokenizer file not found"):
        load_tokenizer(str(tmp_path / "tokenizer.json"))
    monkeypatch.setattr(readers, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ProximityError, match=r"unreachable.*--data-dir"):
        load_tokenizer("pythia")  # no data folder given


def test_fingerprint_follows_a_tokenizer_changed_in_place(shared_data):
    # A memo keyed on the object (or its id) would keep the old fingerprint here, and the
    # statistics cache would then serve counts made with the unchanged vocabulary.
    tokenizer = load_tokenizer("pythia", shared_data)
    before = tokenizer_fingerprint(tokenizer)
    tokenizer.add_tokens(["<|proximity-test|>"])
    assert tokenizer_fingerprint(tokenizer) != before
