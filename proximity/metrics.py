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
n-gram distributions in the spirit of DSIR (Xie et al., 2023): 1/(1 + skew divergence of
the target b from a), asymmetric (`b` is the reference, the target).

A side whose vocabulary is not one fixed set (a mixture judged by its expected sample, see
`proximity.mixtures`) passes `presence`: each token's probability of being in its
vocabulary. The Jaccard term is then the ratio of expected sizes
E|K_a ∩ K_b| / E|K_a ∪ K_b| = Σ min(πa, πb) / Σ max(πa, πb), which is exactly
|K_a ∩ K_b| / |K_a ∪ K_b| when every π is 0 or 1. Where one side is a fixed set (a dataset:
every PA, and every matrix cell but mixture-vs-mixture) this equals the independent-sides
Σ πa·πb / Σ (πa + πb − πa·πb). Two mixtures are read as draws from the SAME part samples
in one shared random order (a smaller draw of a part lies inside a larger one), since their
parts are the same documents: then P(in both) is min(πa, πb) for a token of one part, and at
most that for a token of several; so a mixture is 1 with itself and continuous in the weights
against another (independent draws would give two nearly equal mixtures ~0.75). The top-k
cut still applies: a token outside a side's top-k by frequency has presence 0 there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from proximity.errors import ProximityError

PAPER_TOP_K = 50_000
PAPER_WEIGHTS = (0.4, 0.3, 0.3)
NGRAM_SKEW = 0.01


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
    """Both sides restricted to the union of their kept vocabularies, renormalised, and
    each token's probability of being in each side's kept vocabulary."""

    p: np.ndarray
    q: np.ndarray
    presence_a: np.ndarray
    presence_b: np.ndarray


def _as_vectors(a: np.ndarray, b: np.ndarray, fix: str) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as float64 1-D vectors of one length; `fix` says how to make them match."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ProximityError(
            f"vectors must be 1-D and the same length (got {a.shape} and {b.shape}); {fix}"
        )
    return a, b


def _align(
    a: np.ndarray,
    b: np.ndarray,
    top_k: int | None,
    presence_a: np.ndarray | None,
    presence_b: np.ndarray | None,
) -> _Aligned:
    a, b = _as_vectors(a, b, "compute both statistics with the same tokenizer")
    kept_a, kept_b = kept_vocabulary(a, top_k), kept_vocabulary(b, top_k)
    if not kept_a.any() or not kept_b.any():
        raise ProximityError("cannot compare an empty token distribution (no tokens counted)")
    union = kept_a | kept_b
    p = np.where(kept_a, a, 0.0)[union]
    q = np.where(kept_b, b, 0.0)[union]
    return _Aligned(
        p / p.sum(),
        q / q.sum(),
        _presence(kept_a, presence_a)[union],
        _presence(kept_b, presence_b)[union],
    )


def _presence(kept: np.ndarray, presence: np.ndarray | None) -> np.ndarray:
    if presence is None:
        return kept.astype(np.float64)
    presence = np.asarray(presence, dtype=np.float64)
    if presence.shape != kept.shape:
        raise ProximityError(f"presence has shape {presence.shape}, counts {kept.shape}")
    return np.where(kept, presence, 0.0)


def _cosine(al: _Aligned) -> float:
    # Elementwise sums rather than BLAS dot: after tokenising, BLAS threads compete with the
    # tokenizer's thread pool and a 50k-long dot product took ~7 ms instead of ~30 µs.
    dot, norm_p, norm_q = (np.sum(x * y) for x, y in ((al.p, al.q), (al.p, al.p), (al.q, al.q)))
    return float(dot / np.sqrt(norm_p * norm_q))


def _jaccard(al: _Aligned) -> float:
    both = np.sum(np.minimum(al.presence_a, al.presence_b))
    either = np.sum(np.maximum(al.presence_a, al.presence_b))
    return float(both / either)


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    """Σ p·log(p/m) over p > 0 (0·log 0 = 0); numpy, so scipy stays off the cached path."""
    positive = p > 0
    return float(np.sum(p[positive] * np.log(p[positive] / m[positive])))


def _js(al: _Aligned) -> float:
    m = 0.5 * (al.p + al.q)
    jsd = 0.5 * _kl(al.p, m) + 0.5 * _kl(al.q, m)
    return float(1.0 / (1.0 + max(jsd, 0.0)))


Presence = np.ndarray | None


def cosine_similarity(
    a: np.ndarray,
    b: np.ndarray,
    top_k: int | None = PAPER_TOP_K,
    *,
    presence_a: Presence = None,
    presence_b: Presence = None,
) -> float:
    """cosine = p·q / (|p| |q|) on the union of the top-k vocabularies (presence unused)."""
    return _cosine(_align(a, b, top_k, None, None))


def jaccard_similarity(
    a: np.ndarray,
    b: np.ndarray,
    top_k: int | None = PAPER_TOP_K,
    *,
    presence_a: Presence = None,
    presence_b: Presence = None,
) -> float:
    """Jaccard = |K_a ∩ K_b| / |K_a ∪ K_b| of the top-k vocabularies (expected sizes when a
    side gives `presence`, see the module doc).

    Depends on how many tokens were seen: compare datasets on an equal token budget.
    """
    return _jaccard(_align(a, b, top_k, presence_a, presence_b))


def js_similarity(
    a: np.ndarray,
    b: np.ndarray,
    top_k: int | None = PAPER_TOP_K,
    *,
    presence_a: Presence = None,
    presence_b: Presence = None,
) -> float:
    """JS similarity = 1 / (1 + JSD), JSD in nats, on the union of the top-k vocabularies."""
    return _js(_align(a, b, top_k, None, None))


def paper_similarity(
    a: np.ndarray,
    b: np.ndarray,
    top_k: int | None = PAPER_TOP_K,
    *,
    presence_a: Presence = None,
    presence_b: Presence = None,
) -> float:
    """0.4·cosine + 0.3·Jaccard + 0.3/(1 + JSD), as in the authors' script (see module doc)."""
    al = _align(a, b, top_k, presence_a, presence_b)
    w_cos, w_jac, w_js = PAPER_WEIGHTS
    return w_cos * _cosine(al) + w_jac * _jaccard(al) + w_js * _js(al)


def ngram_kl_similarity(a: np.ndarray, b: np.ndarray, skew: float = NGRAM_SKEW) -> float:
    """1 / (1 + KL(Q ‖ (1 − s)·P + s·Q)) over hashed n-gram buckets; `b` (Q) is the target.

    The skew divergence (Lee, 1999; s = 0.01): a's distribution P is mixed with a little of
    the target's own, so the divergence is finite (at most log(1/s) = 4.6 nats), 0 only for
    equal distributions, and a bucket a never saw is charged by how much the target uses
    it. Smoothing towards the uniform distribution instead (a floor of s/2^20 per bucket)
    made the score jump when 0.01% of a dataset was mixed in: measured on pycode, PA of
    c4:0.9999+starcoder:0.0001 was 0.007 with that floor and 0.0001 with the skew. Read as
    in DSIR: the extra nats per target n-gram under a's n-gram model than under its own.
    """
    a, b = _as_vectors(a, b, "compute both with the same --ngram-buckets")
    if a.sum() <= 0 or b.sum() <= 0:
        raise ProximityError("cannot compare an empty n-gram distribution (no n-grams counted)")
    if not 0 < skew < 1:
        raise ProximityError(f"n-gram skew must be in (0, 1), got {skew}")
    p = a / a.sum()
    q = b / b.sum()
    return float(1.0 / (1.0 + max(_kl(q, (1 - skew) * p + skew * q), 0.0)))


@dataclass(frozen=True)
class Metric:
    """A named metric, the vector it reads, and its formula for `--help` and reports.

    Unigram metrics accept `presence_a` / `presence_b` keywords (the vocabulary of a side
    that is not one fixed sample); n-gram metrics take the two vectors only.
    """

    name: str
    function: Callable[..., float]
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
            "1/(1+KL(T‖0.99·A+0.01·T)) of hashed bigram distributions, the skew divergence "
            "of the target T from A (asymmetric: b is the target)",
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
