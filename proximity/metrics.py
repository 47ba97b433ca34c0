"""Similarity metrics between two token-frequency vectors.

Every metric takes two non-negative vectors over the same index space (raw counts or
normalised frequencies: each function normalises on its own, so a mixture of normalised
counts and a raw count vector are treated alike) and returns a similarity where 1 means
"identical distributions".

`paper` is the combined score of Liu, Neubig & Xiong (arXiv 2510.14865), restated from the
authors' released script in ../shared/docs/PAPER.md:

1. each side keeps its `top_k` (50,000) most frequent tokens (ties: lower token id first);
2. on the union U of the two kept vocabularies, p and q are the kept counts renormalised to
   sum to 1 over U (a token one side did not keep is 0 on that side);
3. cosine = p·q / (|p| |q|); Jaccard = |K_a ∩ K_b| / |K_a ∪ K_b|;
   JSD = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = ½(p + q), natural log (the divergence, not
   scipy's square-rooted "distance"); JS similarity = 1 / (1 + JSD);
4. paper = 0.4·cosine + 0.3·Jaccard + 0.3·JS similarity.

`cosine`, `jaccard` and `js` are those components on their own (same top-k step), so
`paper == 0.4*cosine + 0.3*jaccard + 0.3*js` holds exactly. `ngram_kl` compares hashed
n-gram distributions in the spirit of DSIR (Xie et al., 2023), 1/(1 + KL(b ‖ a)) with
smoothing, and is asymmetric: `b` is the reference (the target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import rel_entr

from proximity.errors import ProximityError

PAPER_TOP_K = 50_000
PAPER_WEIGHTS = (0.4, 0.3, 0.3)
NGRAM_SMOOTHING = 0.01


def kept_vocabulary(x: np.ndarray, top_k: int | None = PAPER_TOP_K) -> np.ndarray:
    """Boolean mask of the `top_k` most frequent entries with a positive count.

    Ties at the cut are broken towards the lower index so the result is deterministic.
    """
    positive = x > 0
    if top_k is None or int(positive.sum()) <= top_k:
        return positive
    order = np.argsort(-x, kind="stable")[:top_k]
    mask = np.zeros(x.shape, dtype=bool)
    mask[order] = True
    return mask


@dataclass(frozen=True)
class _Aligned:
    """Both sides restricted to the union of their kept vocabularies, renormalised."""

    p: np.ndarray
    q: np.ndarray
    kept_a: np.ndarray
    kept_b: np.ndarray


def _as_vectors(a: np.ndarray, b: np.ndarray, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as float64 1-D vectors of one length; `fix` says how to make them match."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ProximityError(
            f"vectors must be 1-D and the same length (got {a.shape} and {b.shape}); {fix}"
        )
    return a, b


def _align(a: np.ndarray, b: np.ndarray, top_k: int | None) -> _Aligned:
    a, b = _as_vectors(a, b, "compute both statistics with the same tokenizer")
    kept_a, kept_b = kept_vocabulary(a, top_k), kept_vocabulary(b, top_k)
    if not kept_a.any() or not kept_b.any():
        raise ProximityError("cannot compare an empty token distribution (no tokens counted)")
    union = kept_a | kept_b
    p = np.where(kept_a, a, 0.0)[union]
    q = np.where(kept_b, b, 0.0)[union]
    return _Aligned(p / p.sum(), q / q.sum(), kept_a, kept_b)


def _cosine(al: _Aligned) -> float:
    # Elementwise sums rather than BLAS dot: after tokenising, BLAS threads compete with the
    # tokenizer's thread pool and a 50k-long dot product took ~7 ms instead of ~30 µs.
    dot, norm_p, norm_q = (np.sum(x * y) for x, y in ((al.p, al.q), (al.p, al.p), (al.q, al.q)))
    return float(dot / np.sqrt(norm_p * norm_q))


def _jaccard(al: _Aligned) -> float:
    return float(np.sum(al.kept_a & al.kept_b) / np.sum(al.kept_a | al.kept_b))


def _js(al: _Aligned) -> float:
    m = 0.5 * (al.p + al.q)
    jsd = 0.5 * rel_entr(al.p, m).sum() + 0.5 * rel_entr(al.q, m).sum()
    return float(1.0 / (1.0 + max(jsd, 0.0)))


def cosine_similarity(a: np.ndarray, b: np.ndarray, top_k: int | None = PAPER_TOP_K) -> float:
    """cosine = p·q / (|p| |q|) on the union of the top-k vocabularies."""
    return _cosine(_align(a, b, top_k))


def jaccard_similarity(a: np.ndarray, b: np.ndarray, top_k: int | None = PAPER_TOP_K) -> float:
    """Jaccard = |K_a ∩ K_b| / |K_a ∪ K_b| of the top-k vocabularies.

    Depends on how many tokens were seen: compare datasets on an equal token budget.
    """
    return _jaccard(_align(a, b, top_k))


def js_similarity(a: np.ndarray, b: np.ndarray, top_k: int | None = PAPER_TOP_K) -> float:
    """JS similarity = 1 / (1 + JSD), JSD in nats, on the union of the top-k vocabularies."""
    return _js(_align(a, b, top_k))


def paper_similarity(a: np.ndarray, b: np.ndarray, top_k: int | None = PAPER_TOP_K) -> float:
    """0.4·cosine + 0.3·Jaccard + 0.3/(1 + JSD), as in the authors' script (see module doc)."""
    al = _align(a, b, top_k)
    w_cos, w_jac, w_js = PAPER_WEIGHTS
    return w_cos * _cosine(al) + w_jac * _jaccard(al) + w_js * _js(al)


def ngram_kl_similarity(a: np.ndarray, b: np.ndarray, smoothing: float = NGRAM_SMOOTHING) -> float:
    """1 / (1 + KL(Q̃_b ‖ P̃_a)) over hashed n-gram buckets; `b` is the reference (target).

    P̃ = (1 − λ)·P + λ/B mixes each normalised bucket distribution with the uniform one
    (λ = `smoothing`, B = number of buckets), so the KL is finite, both sides are treated
    alike (the diagonal is exactly 1) and mixtures of normalised counts, which have no
    integer counts to add pseudo-counts to, work too. KL(target ‖ a) is the DSIR view: how
    many extra nats per n-gram the target costs under a's n-gram model than under its own.
    It is turned into a similarity with the same 1/(1 + divergence) map as the paper's JS
    term (exp(−KL) would do too, but squeezes typical values of 5–10 nats to ~0).
    """
    a, b = _as_vectors(a, b, "compute both with the same --ngram-buckets")
    if a.sum() <= 0 or b.sum() <= 0:
        raise ProximityError("cannot compare an empty n-gram distribution (no n-grams counted)")
    if not 0 < smoothing < 1:
        raise ProximityError(f"n-gram smoothing must be in (0, 1), got {smoothing}")
    uniform = smoothing / a.size
    p = (1 - smoothing) * a / a.sum() + uniform
    q = (1 - smoothing) * b / b.sum() + uniform
    return float(1.0 / (1.0 + max(rel_entr(q, p).sum(), 0.0)))


@dataclass(frozen=True)
class Metric:
    """A named metric, the vector it reads, and its formula for `--help` and reports."""

    name: str
    function: Callable[[np.ndarray, np.ndarray], float]
    uses: Literal["unigram", "ngram"]
    symmetric: bool
    formula: str


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric(
            "paper",
            paper_similarity,
            "unigram",
            True,
            "0.4·cosine + 0.3·Jaccard + 0.3/(1+JSD) on the union of each side's top-50k "
            "token vocabulary (Liu et al. 2025)",
        ),
        Metric("cosine", cosine_similarity, "unigram", True, "p·q/(|p||q|) of unigram frequencies"),
        Metric(
            "jaccard",
            jaccard_similarity,
            "unigram",
            True,
            "|K_a∩K_b|/|K_a∪K_b| of the top-50k vocabularies (grows with tokens seen)",
        ),
        Metric(
            "js", js_similarity, "unigram", True, "1/(1+JSD), Jensen-Shannon divergence in nats"
        ),
        Metric(
            "ngram_kl",
            ngram_kl_similarity,
            "ngram",
            False,
            "1/(1+KL(target‖a)) of hashed bigram distributions, each smoothed as "
            "0.99·P + 0.01·uniform (DSIR-style; asymmetric, b is the target)",
        ),
    )
}


def get_metric(name: str) -> Metric:
    """Look a metric up by name; an unknown name is a user error that lists the choices."""
    try:
        return METRICS[name]
    except KeyError:
        raise ProximityError(
            f"unknown metric {name!r}; choose one of: {', '.join(METRICS)} (--metric)"
        ) from None


def metrics_help() -> str:
    """One line per metric with its formula, for the CLI's `--metric` help."""
    return "; ".join(f"{m.name}: {m.formula}" for m in METRICS.values())
