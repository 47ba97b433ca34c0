"""Counting tokens: truncation, budgets, n-grams, per-document counts, sampling, shortfalls."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from proximity.errors import ProximityError
from proximity.registry import Registry
from proximity.stats import StatsOptions, compute_stats, count_texts


@pytest.fixture(scope="module")
def tokenizer(pythia_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(pythia_tokenizer_path))


@pytest.fixture(scope="module")
def code_texts(shared_data: Path) -> list[str]:
    with (shared_data / "python_stdlib_code.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["content"][:4000] for line in islice(handle, 60)]


@pytest.fixture(scope="module")
def web_texts(shared_data: Path) -> list[str]:
    with (shared_data / "c4_extra.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in islice(handle, 80)]


def _ids(texts: list[str], tokenizer: Tokenizer, max_tokens: int | None) -> list[list[int]]:
    return [tokenizer.encode(t, add_special_tokens=False).ids[:max_tokens] for t in texts]


def test_counts_equal_a_counter_over_each_documents_truncated_ids(
    web_texts: list[str], tokenizer: Tokenizer
) -> None:
    stats = count_texts(web_texts, tokenizer, StatsOptions(max_tokens=64, batch_size=16))
    expected = Counter(i for doc in _ids(web_texts, tokenizer, 64) for i in doc)
    assert stats.counts.dtype == np.int64
    assert stats.counts.size == tokenizer.get_vocab_size()
    assert dict(Counter({i: int(c) for i, c in enumerate(stats.counts) if c})) == expected
    assert stats.n_tokens == sum(expected.values()) and stats.n_docs == len(web_texts)


def test_batching_does_not_change_the_counts(code_texts: list[str], tokenizer: Tokenizer) -> None:
    options = StatsOptions(ngram_order=2, per_document=True)
    small = StatsOptions(ngram_order=2, per_document=True, batch_size=7, batch_chars=9_000)
    one, two = (
        count_texts(code_texts, tokenizer, small),
        count_texts(code_texts, tokenizer, options),
    )
    np.testing.assert_array_equal(one.counts, two.counts)
    np.testing.assert_array_equal(one.ngram_counts, two.ngram_counts)
    assert (one.doc_counts != two.doc_counts).nnz == 0


def test_token_budget_stops_at_exactly_the_budget_cutting_the_last_document(
    web_texts: list[str], tokenizer: Tokenizer
) -> None:
    budget = 5_003
    stats = count_texts(web_texts, tokenizer, StatsOptions(token_budget=budget, batch_size=8))
    stream = [i for doc in _ids(web_texts, tokenizer, 512) for i in doc][:budget]
    assert stats.n_tokens == budget
    np.testing.assert_array_equal(stats.counts, np.bincount(stream, minlength=stats.counts.size))


def test_token_budget_beyond_the_data_is_a_user_error(
    code_texts: list[str], tokenizer: Tokenizer
) -> None:
    with pytest.raises(ProximityError, match="lower --equal-tokens"):
        count_texts(code_texts[:3], tokenizer, StatsOptions(token_budget=10**7))


def test_ngrams_never_cross_document_boundaries(
    code_texts: list[str], tokenizer: Tokenizer
) -> None:
    stats = count_texts(code_texts, tokenizer, StatsOptions(ngram_order=2, ngram_buckets=2**12))
    lengths = [len(doc) for doc in _ids(code_texts, tokenizer, 512)]
    assert stats.ngram_counts.sum() == sum(max(n - 1, 0) for n in lengths)
    assert stats.ngram_counts.size == 2**12


def test_per_document_counts_add_up_to_the_totals(
    web_texts: list[str], tokenizer: Tokenizer
) -> None:
    stats = count_texts(web_texts, tokenizer, StatsOptions(per_document=True, ngram_order=2))
    assert stats.doc_counts.shape == (len(web_texts), stats.counts.size)
    np.testing.assert_array_equal(np.asarray(stats.doc_counts.sum(axis=0)).ravel(), stats.counts)
    np.testing.assert_array_equal(
        np.asarray(stats.doc_ngram_counts.sum(axis=0)).ravel(), stats.ngram_counts
    )


def test_two_seeds_under_an_equal_token_budget_give_different_samples(
    shared_data: Path, tokenizer: Tokenizer
) -> None:
    spec = "gsm8k"

    def stats(sample: str, seed: int):
        options = StatsOptions(n_docs=300, sample=sample, seed=seed, token_budget=20_000)
        return compute_stats(spec, tokenizer, options, data_dir=shared_data)

    one, two = stats("random", 1), stats("random", 2)
    assert one.n_tokens == two.n_tokens == 20_000
    assert not np.array_equal(one.counts, two.counts)
    assert "uniform random sample of 300 records (seed 1)" in one.metadata["read"]["sampling"]
    assert one.metadata["read"]["records_seen"] == 7473  # the whole file was sampled from
    first = stats("first", 1)
    assert first.metadata["read"]["sampling"] == "first 300 documents"
    np.testing.assert_array_equal(first.counts, stats("first", 2).counts)


def test_fewer_documents_than_asked_is_said(tmp_path: Path, tokenizer: Tokenizer) -> None:
    path = tmp_path / "one.jsonl"
    path.write_text('{"text": "a single document"}\n')
    stats = compute_stats(str(path), tokenizer, StatsOptions(n_docs=1000))
    assert stats.n_docs == 1
    assert stats.metadata["notes"] == [
        "1 document read, 1,000 asked for: the dataset has no more non-empty documents"
    ]


class _CountingRegistry(Registry):
    """Counts name lookups: resolving a dataset looks its name up exactly once."""

    lookups = 0

    def __contains__(self, name: str) -> bool:
        self.lookups += 1
        return super().__contains__(name)


def test_a_dataset_is_resolved_once_whether_its_counts_are_cached_or_read(
    shared_data: Path, tokenizer: Tokenizer
) -> None:
    options = StatsOptions(n_docs=20)
    for expected_hit in (False, True):
        registry = _CountingRegistry(Registry.load().entries)
        stats = compute_stats("gsm8k", tokenizer, options, data_dir=shared_data, registry=registry)
        assert stats.metadata["cache_hit"] is expected_hit
        assert registry.lookups == 1


def test_bad_options_name_the_flag_to_change() -> None:
    with pytest.raises(ProximityError, match="--ngram-buckets"):
        StatsOptions(ngram_buckets=1000)
    with pytest.raises(ProximityError, match="--n-docs"):
        StatsOptions(n_docs=0)
    with pytest.raises(ProximityError, match="--sample"):
        StatsOptions(sample="all")  # type: ignore[arg-type]
    with pytest.raises(ProximityError, match="--sample random needs --n-docs"):
        StatsOptions(sample="random", n_docs=None, token_budget=1000)
