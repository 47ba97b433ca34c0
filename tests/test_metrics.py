"""The similarity metrics, checked against an independent dict-and-Counter implementation."""

from __future__ import annotations

import json
import math
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from reference_similarity import paper_protocol_counter, reference_paper
from tokenizers import Tokenizer

from proximity.errors import ProximityError
from proximity.metrics import (
    METRICS,
    cosine_similarity,
    get_metric,
    jaccard_similarity,
    js_similarity,
    kept_vocabulary,
    ngram_kl_similarity,
    paper_similarity,
)
from proximity.stats import StatsOptions, count_texts


@pytest.fixture(scope="module")
def tokenizer(pythia_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(pythia_tokenizer_path))


def _texts(path: Path, fields: tuple[str, ...], n: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        records = [json.loads(line) for line in islice(handle, n)]
    return ["\n\n".join(str(r[f]) for f in fields) for r in records]


@pytest.mark.parametrize("top_k", [50_000, 300])
def test_paper_metric_equals_independent_implementation_on_real_files(
    shared_data: Path, tokenizer: Tokenizer, top_k: int
) -> None:
    c4 = _texts(shared_data / "c4_en_sample.jsonl", ("text",), 120)
    gsm = _texts(shared_data / "gsm8k_train.jsonl", ("question", "answer"), 120)
    expected = reference_paper(
        paper_protocol_counter(c4, tokenizer), paper_protocol_counter(gsm, tokenizer), top_k
    )
    options = StatsOptions(n_docs=None, max_chars=None, max_tokens=512, batch_size=32)
    ours_a = count_texts([t[:10_000] for t in c4], tokenizer, options)
    ours_b = count_texts([t[:10_000] for t in gsm], tokenizer, options)
    got = paper_similarity(ours_a.counts, ours_b.counts, top_k=top_k)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert 0.3 < got < 0.9  # real, different domains: neither identical nor unrelated


def test_paper_is_the_weighted_sum_of_its_components() -> None:
    rng = np.random.default_rng(1)
    a = rng.poisson(3.0, 1000) * (rng.random(1000) < 0.6)
    b = rng.poisson(3.0, 1000) * (rng.random(1000) < 0.6)
    combined = 0.4 * cosine_similarity(a, b) + 0.3 * jaccard_similarity(a, b)
    combined += 0.3 * js_similarity(a, b)
    assert paper_similarity(a, b) == pytest.approx(combined, rel=1e-14)


def test_every_metric_is_one_on_identical_inputs_and_symmetric_where_declared() -> None:
    rng = np.random.default_rng(2)
    a = rng.poisson(2.0, 4096).astype(float)
    b = rng.poisson(2.0, 4096).astype(float)
    for metric in METRICS.values():
        assert metric.function(a, a) == pytest.approx(1.0, abs=1e-12), metric.name
        assert metric.function(a, b) < 1.0, metric.name
        if metric.symmetric:
            assert metric.function(a, b) == pytest.approx(metric.function(b, a), rel=1e-12)


def test_metrics_accept_counts_or_frequencies_alike() -> None:
    counts = np.array([5, 0, 3, 2, 0, 7], dtype=np.int64)
    other = np.array([1, 4, 0, 2, 2, 1], dtype=np.int64)
    for metric in METRICS.values():
        assert metric.function(counts, other) == pytest.approx(
            metric.function(counts / counts.sum(), other / other.sum() * 3.5), rel=1e-12
        )


def test_ngram_kl_depends_on_which_side_is_the_target() -> None:
    a = np.array([10, 10, 10, 10, 0, 0, 0, 0], dtype=float)
    b = np.array([10, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    # b's single n-gram is well covered by a, not the other way round.
    assert ngram_kl_similarity(a, b) > ngram_kl_similarity(b, a)


def test_ngram_kl_is_the_skew_divergence_worked_by_hand() -> None:
    # P = (1, 0), Q = (½, ½): M = 0.99·P + 0.01·Q = (0.995, 0.005);
    # KL(Q ‖ M) = ½·ln(0.5/0.995) + ½·ln(0.5/0.005).
    kl = 0.5 * math.log(0.5 / 0.995) + 0.5 * math.log(0.5 / 0.005)
    got = ngram_kl_similarity(np.array([3.0, 0.0]), np.array([2.0, 2.0]))
    assert got == pytest.approx(1 / (1 + kl), rel=1e-12)
    # Disjoint supports: the largest divergence the skew allows, log(1/0.01).
    disjoint = ngram_kl_similarity(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert disjoint == pytest.approx(1 / (1 + math.log(100)), rel=1e-12)


def test_kept_vocabulary_keeps_the_most_frequent_and_breaks_ties_by_lower_id() -> None:
    x = np.array([0, 5, 3, 5, 3, 1])
    assert kept_vocabulary(x, 3).tolist() == [False, True, True, True, False, False]
    assert kept_vocabulary(x, None).tolist() == [False, True, True, True, True, True]


def test_jaccard_grows_with_the_tokens_seen_which_is_why_budgets_matter() -> None:
    rng = np.random.default_rng(3)
    zipf = 1.0 / np.arange(1, 5001)
    zipf /= zipf.sum()
    small = [rng.multinomial(2_000, zipf) for _ in range(2)]
    large = [rng.multinomial(200_000, zipf) for _ in range(2)]
    assert jaccard_similarity(*large) > jaccard_similarity(*small) + 0.2


def test_bad_metric_inputs_are_user_errors() -> None:
    with pytest.raises(ProximityError, match=r"unknown metric 'cosin'.*paper"):
        get_metric("cosin")
    with pytest.raises(ProximityError, match="same length"):
        paper_similarity(np.ones(3), np.ones(4))
    with pytest.raises(ProximityError, match="empty"):
        cosine_similarity(np.zeros(3), np.ones(3))
