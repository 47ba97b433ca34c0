"""The statistics cache: reused across calls, invalidated by data, tokenizer or options."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import proximity.stats
from proximity.cache import cache_dir, entry_paths
from proximity.registry import Registry
from proximity.stats import StatsOptions, compute_stats


@pytest.fixture(scope="module")
def tokenizer(pythia_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(pythia_tokenizer_path))


@pytest.fixture
def tokenisations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every real counting pass (a cache hit makes none)."""
    calls: list[str] = []
    real = proximity.stats.count_texts

    def counting(texts, tokenizer, options, **kwargs):
        calls.append(kwargs.get("metadata", {}).get("spec", "?"))
        return real(texts, tokenizer, options, **kwargs)

    monkeypatch.setattr(proximity.stats, "count_texts", counting)
    return calls


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PROXIMITY_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def gsm_copy(shared_data: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "gsm8k_copy.jsonl"
    shutil.copyfile(shared_data / "gsm8k_test.jsonl", copy)
    return copy


def _spec(path: Path) -> str:
    return f"{path}?field=question,answer"


def test_second_call_reads_the_cache_without_tokenising(
    gsm_copy: Path, tokenizer: Tokenizer, tokenisations: list[str], private_cache: Path
) -> None:
    options = StatsOptions(n_docs=60, ngram_order=2)
    first = compute_stats(_spec(gsm_copy), tokenizer, options)
    second = compute_stats(_spec(gsm_copy), tokenizer, options)
    assert len(tokenisations) == 1
    assert (first.metadata["cache_hit"], second.metadata["cache_hit"]) == (False, True)
    np.testing.assert_array_equal(first.counts, second.counts)
    np.testing.assert_array_equal(first.ngram_counts, second.ngram_counts)
    assert second.n_tokens == first.n_tokens and second.n_docs == 60
    assert cache_dir() == private_cache
    npz, meta = entry_paths(first.metadata["key"])
    assert npz.exists() and meta.exists()
    assert not [p for p in npz.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes


def test_changing_the_file_invalidates_the_cache(
    gsm_copy: Path, shared_data: Path, tokenizer: Tokenizer, tokenisations: list[str],
    private_cache: Path,
) -> None:  # fmt: skip
    options = StatsOptions(n_docs=None)
    before = compute_stats(_spec(gsm_copy), tokenizer, options)
    extra = (shared_data / "gsm8k_train.jsonl").open(encoding="utf-8").readline()
    with gsm_copy.open("a", encoding="utf-8") as handle:
        handle.write(extra)
    after = compute_stats(_spec(gsm_copy), tokenizer, options)
    assert len(tokenisations) == 2
    assert after.n_docs == before.n_docs + 1
    assert after.metadata["key"] != before.metadata["key"]


def test_changing_an_option_invalidates_but_an_irrelevant_one_does_not(
    gsm_copy: Path, tokenizer: Tokenizer, tokenisations: list[str], private_cache: Path
) -> None:
    compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=50))
    compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=50, max_tokens=32))
    compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=50, token_budget=2000))
    assert len(tokenisations) == 3
    # The seed cannot change a "first N" sample and the batch size never changes counts.
    compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=50, seed=7, batch_size=5))
    assert len(tokenisations) == 3
    compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=50, sample="random", seed=7))
    assert len(tokenisations) == 4


def test_a_bootstrap_request_upgrades_an_entry_without_per_document_counts(
    gsm_copy: Path, tokenizer: Tokenizer, tokenisations: list[str], private_cache: Path
) -> None:
    compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=40))
    full = compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=40, per_document=True))
    assert full.doc_counts is not None and len(tokenisations) == 2
    # The richer entry now serves both kinds of request.
    plain = compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=40))
    again = compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=40, per_document=True))
    assert len(tokenisations) == 2
    assert plain.metadata["cache_hit"] and (again.doc_counts != full.doc_counts).nnz == 0


def test_a_corrupt_entry_is_a_miss_and_gets_rewritten(
    gsm_copy: Path, tokenizer: Tokenizer, tokenisations: list[str], private_cache: Path
) -> None:
    first = compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=30))
    npz, _ = entry_paths(first.metadata["key"])
    npz.write_bytes(b"not a zip file")
    second = compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=30))
    assert len(tokenisations) == 2
    np.testing.assert_array_equal(first.counts, second.counts)
    third = compute_stats(_spec(gsm_copy), tokenizer, StatsOptions(n_docs=30))
    assert third.metadata["cache_hit"]


def test_atomic_writes_get_ordinary_file_permissions(tmp_path: Path) -> None:
    import os

    from proximity.atomic import write_text_atomic

    old = os.umask(0o022)
    try:
        written = write_text_atomic(tmp_path / "result.json", "{}")
    finally:
        os.umask(old)
    assert written.stat().st_mode & 0o777 == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_editing_a_registry_template_is_a_miss_not_stale_counts(
    shared_data: Path, tokenizer: Tokenizer, tokenisations: list[str], private_cache: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    registry_file = tmp_path / "mine.toml"
    entry = '[mine]\nplain = "{template}"\n[[mine.local]]\nfiles = ["gsm8k_test.jsonl"]\n'
    options = StatsOptions(n_docs=50)

    def stats(template: str):
        registry_file.write_text(entry.format(template=template))
        return compute_stats(
            "mine", tokenizer, options, data_dir=shared_data,
            registry=Registry.load([registry_file]),
        )  # fmt: skip

    short, full = stats("{question}"), stats("{question}\\n{answer}")
    assert len(tokenisations) == 2 and full.n_tokens > short.n_tokens
    fresh = compute_stats(
        str(shared_data / "gsm8k_test.jsonl") + "?template={question}\\n{answer}",
        tokenizer, options,
    )  # fmt: skip
    np.testing.assert_array_equal(full.counts, fresh.counts)
    assert stats("{question}").metadata["cache_hit"]  # the first version is still cached
