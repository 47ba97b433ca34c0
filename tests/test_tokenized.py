"""Token streams on disk: round trip, dtype, cache reuse and the held-out split."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest

from proximity.data import load_texts
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.data.tokenized import TokenizedDataset, token_dtype, tokenize_dataset

EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def pythia(pythia_tokenizer_path: Path):
    return load_tokenizer(str(pythia_tokenizer_path))


def _build(tokenizer, cache: Path, data: Path, **options) -> TokenizedDataset:
    options = {"n_docs": 150, "val_fraction": 0.1, **options}
    return tokenize_dataset(
        "c4", tokenizer, cache_dir=cache, data_dir=data, progress=False, **options
    )


def _documents(tokenizer, stream: np.ndarray) -> list[str]:
    text = tokenizer.decode(stream.tolist(), skip_special_tokens=False)
    assert text.endswith(EOS)
    return text.split(EOS)[:-1]


def test_streams_decode_to_the_documents_with_eos_after_each(pythia, shared_data, tmp_path):
    dataset = _build(pythia, tmp_path, shared_data)
    texts = [
        unicodedata.normalize("NFC", t) for t in load_texts("c4", n_docs=150, data_dir=shared_data)
    ]
    val_docs = set(np.load(dataset.directory / "val_docs.npy").tolist())
    assert _documents(pythia, dataset.train) == [
        t for i, t in enumerate(texts) if i not in val_docs
    ]
    assert _documents(pythia, dataset.val) == [t for i, t in enumerate(texts) if i in val_docs]
    assert dataset.manifest["n_docs"] == 150
    assert dataset.manifest["n_tokens"] == len(dataset.train) + len(dataset.val)
    assert int((dataset.train == dataset.eos_id).sum()) == dataset.manifest["n_train_docs"]


def test_pythia_vocabulary_is_stored_as_uint16_and_larger_ones_as_uint32(
    pythia, shared_data, tmp_path
):
    dataset = _build(pythia, tmp_path, shared_data, n_docs=20)
    assert isinstance(dataset.train, np.memmap)
    assert dataset.train.dtype == np.uint16 and dataset.manifest["dtype"] == "uint16"
    assert (dataset.directory / "train.bin").stat().st_size == 2 * len(dataset.train)
    assert token_dtype(65_535) == np.uint16
    assert token_dtype(65_536) == np.uint32


def test_cache_is_reused_and_rebuilt_when_options_change(pythia, shared_data, tmp_path):
    first = _build(pythia, tmp_path, shared_data)
    manifest = first.directory / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = _build(pythia, tmp_path, shared_data)
    assert again.directory == first.directory and manifest.stat().st_mtime_ns == stamp

    fewer = _build(pythia, tmp_path, shared_data, n_docs=100)
    other_split = _build(pythia, tmp_path, shared_data, val_fraction=0.2)
    assert len({first.directory, fewer.directory, other_split.directory}) == 3
    assert fewer.manifest["n_docs"] == 100
    assert other_split.manifest["n_val_docs"] > first.manifest["n_val_docs"]

    manifest.unlink()  # an unfinished build (no manifest) is rebuilt, not trusted
    rebuilt = _build(pythia, tmp_path, shared_data)
    assert manifest.exists() and np.array_equal(rebuilt.train, first.train)


def test_validation_documents_never_reach_training(pythia, shared_data, tmp_path):
    dataset = _build(pythia, tmp_path, shared_data, n_docs=300, val_fraction=0.2)
    train_docs = set(_documents(pythia, dataset.train))
    val_docs = _documents(pythia, dataset.val)
    assert len(val_docs) == dataset.manifest["n_val_docs"] > 0
    assert train_docs.isdisjoint(val_docs)
    # The split is per document: reading more documents keeps the earlier ones where they were.
    smaller = _build(pythia, tmp_path, shared_data, n_docs=100, val_fraction=0.2)
    held_small = np.load(smaller.directory / "val_docs.npy")
    held_large = np.load(dataset.directory / "val_docs.npy")
    assert np.array_equal(held_small, held_large[held_large < 100])


def test_small_datasets_still_hold_out_min_val_docs(pythia, shared_data, tmp_path):
    dataset = _build(pythia, tmp_path, shared_data, n_docs=12, val_fraction=0.01, min_val_docs=3)
    assert dataset.manifest["n_val_docs"] == 3
    assert len(_documents(pythia, dataset.val)) == 3
    assert len(_documents(pythia, dataset.train)) == 9


def test_mixture_spec_is_refused_with_a_hint(pythia, shared_data, tmp_path):
    with pytest.raises(ProximityError, match="tokenise each part"):
        tokenize_dataset("c4:0.8+gsm8k:0.2", pythia, cache_dir=tmp_path, data_dir=shared_data)


def test_editing_a_registry_template_builds_new_tokens_not_stale_ones(
    pythia, shared_data, tmp_path, monkeypatch
):
    """The training token cache keys on the resolved formatting, as the statistics cache does:
    an edited template is a new build whose tokens are the new text's."""
    registry = tmp_path / "mine.toml"
    monkeypatch.setenv("PROXIMITY_REGISTRY", str(registry))
    entry = '[mine]\nplain = "{template}"\n[[mine.local]]\nfiles = ["gsm8k_test.jsonl"]\n'

    def build(template: str) -> TokenizedDataset:
        registry.write_text(entry.format(template=template))
        return tokenize_dataset(
            "mine", pythia, cache_dir=tmp_path / "cache", data_dir=shared_data, n_docs=30,
            val_fraction=0.1, progress=False,
        )  # fmt: skip

    short = build("{question}")
    full = build("{question}\\n{answer}")
    assert full.directory != short.directory
    assert len(full.train) > len(short.train)
    texts = list(load_texts("mine", n_docs=30, data_dir=shared_data))
    assert all("####" in text for text in texts)  # the edited template's text
    assert _documents(pythia, full.train)[0] in {unicodedata.normalize("NFC", t) for t in texts}
    assert build("{question}").directory == short.directory  # the first build is still there
