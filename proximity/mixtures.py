"""How a mixture of datasets is compared: `expected` (default) or `resample` (the authors').

Both start from each part's own sample (its `Counts`); docs/SIMILARITY.md explains the
choice with measurements.

expected
    Frequencies are the exact mixture Σ wᵢ·Pᵢ of the parts' normalised counts (what a long
    stream drawn by the weights converges to), which the cosine, JS and n-gram metrics read.
    The vocabulary (the Jaccard term) depends on how many tokens are seen, so the mixture is
    judged at a sample size like the datasets it is compared with: N = Σ wᵢ·Nᵢ tokens, of
    which nᵢ = min(wᵢ·N, Nᵢ) are drawn without replacement from part i's Nᵢ sample tokens.
    A token with cᵢ copies in part i is missed by that draw with the hypergeometric
    probability C(Nᵢ − cᵢ, nᵢ) / C(Nᵢ, nᵢ) (log-gamma, so nᵢ may be fractional); its
    `presence` is 1 − Πᵢ (miss probability), and the Jaccard term uses the expected sizes
    E|A ∩ B| / E|A ∪ B| (metrics.py). Everything is continuous in the weights, and at
    w = 0 or 1 every presence is 0 or 1: the part's own sample, to the last digit.

resample
    The authors' script (nightingal3/midtraining, util_scripts/dataset_similarity_syntactic.py,
    `create_mixed_dataset`): every document of the specialised sample, plus
    int(n_spec · w_base / w_spec) documents drawn with Python's `random.sample` from the
    pretraining sample (capped at its size), counted as one dataset. With equal samples
    (1,000 documents each) the cap binds for any weight below 50%, so every such mix is
    about half pretraining data by documents; `resample_plan` says so in its notes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from proximity.errors import ProximityError
from proximity.specs import DatasetSpec, MixtureSpec
from proximity.stats import Counts, Profile, normalise


def expected_profile(parts: Sequence[tuple[Counts, float]]) -> Profile:
    """A mixture's profile: exact frequencies, vocabulary expected at N = Σ wᵢ·Nᵢ tokens."""
    if not parts:
        raise ProximityError("a mixture needs at least one component")
    weights = np.array([weight for _, weight in parts], dtype=np.float64)
    if (weights <= 0).any():
        raise ProximityError(f"mixture weights must be positive, got {weights.tolist()}")
    weights /= weights.sum()
    if len(parts) == 1:
        return parts[0][0].profile()
    sizes = np.array([counts.n_tokens for counts, _ in parts])
    budget = float(weights @ sizes)
    draws = np.minimum(weights * budget, sizes)
    missed = np.ones(parts[0][0].unigram.shape, dtype=np.float64)
    for (counts, _), size, draw in zip(parts, sizes, draws, strict=True):
        missed *= miss_probability(counts.unigram, size, draw)
    unigram = sum(w * normalise(c.unigram) for (c, _), w in zip(parts, weights, strict=True))
    has_ngrams = all(counts.ngram is not None for counts, _ in parts)
    ngram = (
        sum(w * normalise(c.ngram) for (c, _), w in zip(parts, weights, strict=True))
        if has_ngrams
        else None
    )
    return Profile(
        unigram=unigram,
        ngram=ngram,
        presence=1.0 - missed,
        n_tokens=float(draws.sum()),
        n_docs=sum(counts.n_docs for counts, _ in parts),
    )


def miss_probability(counts: np.ndarray, total: float, drawn: float) -> np.ndarray:
    """P(a draw of `drawn` of `total` tokens, without replacement, misses every copy of a
    token with `counts` copies) = C(total − c, drawn) / C(total, drawn), elementwise.

    Written with log-gamma so `drawn` (and a replicate's weighted counts) may be fractional:
    log-gamma(x) → ∞ as x → 0⁺, so the probability falls continuously to 0 where
    total − c − drawn + 1 reaches 0 (the draw can no longer avoid the token).
    """
    # scipy.special is imported here, not at the top: only mixtures need it, and importing
    # it costs ~0.1 s on every cached command otherwise.
    from scipy.special import gammaln

    counts = np.asarray(counts, dtype=np.float64)
    result = np.ones(counts.shape, dtype=np.float64)
    if drawn <= 0:
        return result
    seen = counts > 0
    c = counts[seen]
    room = total - c - drawn + 1.0  # Γ's argument for the arrangements that avoid the token
    log_miss = np.full(c.shape, -np.inf)
    ok = room > 0
    log_miss[ok] = (
        gammaln(total - c[ok] + 1.0)
        + gammaln(total - drawn + 1.0)
        - gammaln(total + 1.0)
        - gammaln(room[ok])
    )
    result[seen] = np.exp(np.minimum(log_miss, 0.0))
    return result


@dataclass(frozen=True)
class ResamplePlan:
    """Which documents of each part's sample make up one resampled mixture."""

    documents: dict[DatasetSpec, np.ndarray]
    """Part -> indices (rows of its per-document counts) of the documents drawn."""
    notes: tuple[str, ...] = ()
    """Where the document counts differ from the weights (the authors' cap)."""

    def share(self) -> dict[DatasetSpec, float]:
        """Each part's share of the documents drawn."""
        total = sum(len(idx) for idx in self.documents.values())
        return {spec: len(idx) / total for spec, idx in self.documents.items()}


def resample_plan(
    mixture: MixtureSpec,
    n_docs: dict[DatasetSpec, int],
    base: frozenset[DatasetSpec],
    seed: int,
) -> ResamplePlan:
    """The authors' document mixing, generalised to any number of parts.

    Specialised parts are those not in `base` (the pretraining data; in `proximity
    similarity`, a mixture's first part). The specialised part that runs out first at the
    given weights contributes all its documents; every other part j contributes
    int(n_ref · w_j / w_ref) documents drawn with `random.Random(seed).sample`, capped at its
    sample's size. For `c4:(1−w) + X:w` that is exactly the authors' `create_mixed_dataset`:
    all of X, plus int(n_X · (1 − w) / w) C4 documents, at most all of them.
    """
    if not mixture.is_mixture:
        spec = mixture.single()
        return ResamplePlan({spec: np.arange(n_docs[spec])})
    parts = list(mixture.components)
    special = [(spec, w) for spec, w in parts if spec not in base] or parts
    ref_spec, ref_weight = min(special, key=lambda part: n_docs[part[0]] / part[1])
    n_ref = n_docs[ref_spec]
    rng = random.Random(seed)
    documents: dict[DatasetSpec, np.ndarray] = {}
    notes: list[str] = []
    for spec, weight in parts:
        available = n_docs[spec]
        if spec == ref_spec:
            documents[spec] = np.arange(available)
            continue
        wanted = int(n_ref * weight / ref_weight)  # the authors' expression, same rounding
        take = min(wanted, available)
        if take < wanted:
            notes.append(
                f"{spec.canonical()}: {wanted:,} documents needed for weight {weight:g}, its "
                f"sample has {available:,}"
            )
        documents[spec] = np.sort(np.array(rng.sample(range(available), take), dtype=np.int64))
    plan = ResamplePlan(documents, ())
    if notes:
        shares = ", ".join(f"{s.canonical()} {100 * v:.0f}%" for s, v in plan.share().items())
        notes.append(f"by documents the resampled mix is {shares}")
    return ResamplePlan(documents, tuple(notes))
