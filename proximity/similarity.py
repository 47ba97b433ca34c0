"""Similarity matrices, proximity advantage and bootstrap intervals over token statistics.

Datasets are tokenised once each (`gather_stats`); every comparison after that works on
count vectors, so an N×N matrix costs N tokenisation passes, and a mixture such as
`c4:0.8+starcoder:0.2` is the exact mixture of its parts' normalised counts.

Proximity advantage (Liu et al. 2025): PA(M, T) = sim(M, T) − sim(pretrain, T). A mix given
as `starcoder:0.2` means the midtraining mixture `pretrain:0.8+starcoder:0.2` (the paper's
mixture-aware variant); a full mixture spec is taken as written.

The bootstrap resamples documents with replacement (multinomial weights over each dataset's
per-document counts), once per dataset per replicate: a dataset that appears on both sides
(c4 in the mix and as the baseline) uses the same replicate on both, so differences such as
PA get the right, correlated uncertainty and sim(x, x) stays exactly 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from proximity.errors import ProximityError
from proximity.metrics import Metric
from proximity.registry import Registry
from proximity.specs import DatasetSpec, MixtureSpec, blend, parse_component, parse_mixture
from proximity.stats import Profile, StatsOptions, TokenStats, compute_stats, mix_profiles

Profiles = dict[str, Profile]  # dataset canonical spec -> its profile
CIMethod = Literal["centered", "percentile"]


def candidate(text: str | MixtureSpec, label: str | None = None) -> MixtureSpec:
    """A dataset or mixture to compare, labelled by `label`, its own `name=`, or what was typed."""
    mixture = parse_mixture(text)
    typed = text if isinstance(text, str) else None
    return mixture.labelled(label or mixture.label or typed or mixture.canonical())


def midtraining_mix(pretrain: MixtureSpec, text: str) -> MixtureSpec:
    """`--mix` value as a mixture: `name:w` means pretrain·(1−w) + name·w, else a full spec."""
    if "+" not in text:
        spec, weight = parse_component(text)
        if weight is not None:
            if not 0 < weight < 1:
                raise ProximityError(
                    f"--mix {text}: the weight must be between 0 and 1 (exclusive), e.g. "
                    f"starcoder:0.2 for {pretrain.name}:0.8+starcoder:0.2"
                )
            return blend(pretrain, parse_mixture(spec), weight).labelled(text)
    mix = candidate(text)
    if not mix.is_mixture:
        raise ProximityError(
            f"--mix {text}: give a weight (e.g. {text}:0.2, mixed with the pretraining data) "
            "or a full mixture such as c4:0.8+starcoder:0.2"
        )
    return mix


def unique_datasets(candidates: Iterable[MixtureSpec]) -> list[DatasetSpec]:
    """The distinct datasets behind `candidates`, in first-seen order."""
    seen: dict[str, DatasetSpec] = {}
    for cand in candidates:
        for spec in cand.datasets:
            seen.setdefault(spec.canonical(), spec)
    return list(seen.values())


def gather_stats(
    candidates: Iterable[MixtureSpec],
    tokenizer: Tokenizer,
    options: StatsOptions,
    *,
    data_dir: str | Path | None = None,
    registry: Registry | None = None,
) -> dict[str, TokenStats]:
    """Statistics of every distinct dataset behind `candidates`, each computed (or read from
    the cache) exactly once: N datasets cost N tokenisation passes, whatever is compared."""
    return {
        spec.canonical(): compute_stats(
            spec, tokenizer, options, data_dir=data_dir, registry=registry
        )
        for spec in unique_datasets(candidates)
    }


def profile_of(cand: MixtureSpec, profiles: Profiles) -> Profile:
    """The candidate's distribution: its dataset's, or the exact mixture of its parts'."""
    if not cand.is_mixture:
        return profiles[cand.components[0][0].canonical()]
    return mix_profiles((profiles[spec.canonical()], w) for spec, w in cand.components)


def _vector(profile: Profile, metric: Metric, label: str) -> np.ndarray:
    if metric.uses == "ngram":
        if profile.ngram is None:
            raise ProximityError(
                f"metric {metric.name} needs n-gram counts for {label}: set --ngram-order 2"
            )
        return profile.ngram
    return profile.unigram


def _pair_values(
    pairs: Sequence[tuple[MixtureSpec, MixtureSpec]], profiles: Profiles, metric: Metric
) -> np.ndarray:
    """metric(a, b) for each pair; symmetric metrics are evaluated once per unordered pair."""
    # Keyed by candidate, not label: two candidates may share a label but not their parts.
    by_cand: dict[MixtureSpec, Profile] = {}
    done: dict[tuple[MixtureSpec, MixtureSpec], float] = {}
    values = np.empty(len(pairs))
    for i, (a, b) in enumerate(pairs):
        for cand in (a, b):
            if cand not in by_cand:
                by_cand[cand] = profile_of(cand, profiles)
        if metric.symmetric and (b, a) in done:
            values[i] = done[(b, a)]
            continue
        value = metric.function(
            _vector(by_cand[a], metric, a.name), _vector(by_cand[b], metric, b.name)
        )
        done[(a, b)] = values[i] = value
    return values


def resample_profiles(stats: dict[str, TokenStats], rng: np.random.Generator) -> Profiles:
    """One bootstrap replicate: every dataset's documents resampled with replacement."""
    replicate: Profiles = {}
    for key, st in stats.items():
        if st.doc_counts is None:
            raise ProximityError(
                f"bootstrap needs per-document counts for {key}: recompute with per_document=True"
            )
        n_docs = st.doc_counts.shape[0]
        weights = rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs)).astype(np.float64)
        counts = st.doc_counts.T @ weights
        ngrams = st.doc_ngram_counts.T @ weights if st.doc_ngram_counts is not None else None
        replicate[key] = Profile.from_counts(counts, ngrams, int(counts.sum()), n_docs)
    return replicate


def bootstrap_interval(
    statistic: Callable[[Profiles], np.ndarray],
    stats: dict[str, TokenStats],
    n_resamples: int,
    *,
    seed: int = 0,
    level: float = 0.95,
    method: CIMethod = "centered",
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap interval of a vector-valued `statistic` over document resamples.

    `percentile`: the plain percentile interval of the replicates. `centered` (default): the
    same interval shifted by the bootstrap bias (mean of replicates − point estimate).
    Resampling with replacement duplicates documents, so a replicate sees fewer distinct
    tokens than the sample it came from, and the vocabulary-size-dependent terms (Jaccard,
    JSD, hence `paper`) drop systematically: their plain percentile interval often lies
    entirely below the estimate. The centered interval keeps the replicates' spread (the
    estimate's sampling variability at this sample size) around the estimate itself.
    """
    if n_resamples < 2:
        raise ProximityError(f"--bootstrap needs at least 2 resamples, got {n_resamples}")
    if not 0 < level < 1:
        raise ProximityError(f"confidence level must be in (0, 1), got {level}")
    if method not in ("centered", "percentile"):
        raise ProximityError(f"--ci-method must be 'centered' or 'percentile', got {method!r}")
    rng = np.random.default_rng(seed)
    point = statistic({key: st.profile() for key, st in stats.items()})
    draws = np.stack([statistic(resample_profiles(stats, rng)) for _ in range(n_resamples)])
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(draws, [tail, 100 - tail], axis=0)
    if method == "centered":
        bias = draws.mean(axis=0) - point
        low, high = low - bias, high - bias
    return low, high


@dataclass(frozen=True)
class Bootstrap:
    """Bootstrap settings; `n_resamples` 0 means no intervals."""

    n_resamples: int = 0
    seed: int = 0
    level: float = 0.95
    method: CIMethod = "centered"

    def __post_init__(self) -> None:
        # Checked here too, so a bad flag fails even when no resampling is asked for.
        if self.n_resamples < 0 or self.n_resamples == 1:
            raise ProximityError(f"--bootstrap must be 0 or >= 2, got {self.n_resamples}")
        if not 0 < self.level < 1:
            raise ProximityError(f"--ci-level must be in (0, 1), got {self.level}")
        if self.method not in ("centered", "percentile"):
            raise ProximityError(
                f"--ci-method must be 'centered' or 'percentile', got {self.method!r}"
            )


def similarity_matrix(
    candidates: Sequence[MixtureSpec],
    stats: dict[str, TokenStats],
    metric: Metric,
    bootstrap: Bootstrap = Bootstrap(),
) -> pd.DataFrame:
    """Tidy table, one row per ordered pair: a, b, metric, value, ci_low, ci_high, n_tokens."""
    labels = [c.name for c in candidates]
    if len(set(labels)) != len(labels):
        raise ProximityError(f"datasets to compare must be distinct, got {labels}")
    pairs = [(a, b) for a in candidates for b in candidates]
    profiles = {key: st.profile() for key, st in stats.items()}
    values = _pair_values(pairs, profiles, metric)
    low, high = _intervals(lambda p: _pair_values(pairs, p, metric), stats, values, bootstrap)
    return pd.DataFrame(
        {
            "a": [a.name for a, _ in pairs],
            "b": [b.name for _, b in pairs],
            "metric": metric.name,
            "value": values,
            "ci_low": low,
            "ci_high": high,
            "n_tokens_a": [profile_of(a, profiles).n_tokens for a, _ in pairs],
            "n_tokens_b": [profile_of(b, profiles).n_tokens for _, b in pairs],
            "spec_a": [a.canonical() for a, _ in pairs],
            "spec_b": [b.canonical() for _, b in pairs],
        }
    )


def proximity_advantage(
    pretrain: MixtureSpec,
    target: MixtureSpec,
    mixes: Sequence[MixtureSpec],
    stats: dict[str, TokenStats],
    metric: Metric,
    bootstrap: Bootstrap = Bootstrap(),
) -> pd.DataFrame:
    """PA(mix, target) = sim(mix, target) − sim(pretrain, target), ranked best first."""
    if not mixes:
        raise ProximityError("give at least one --mix to rank (e.g. --mix starcoder:0.2)")

    def advantages(profiles: Profiles) -> np.ndarray:
        sims = _pair_values([(m, target) for m in (pretrain, *mixes)], profiles, metric)
        return np.concatenate([sims[1:] - sims[0], sims])

    profiles = {key: st.profile() for key, st in stats.items()}
    point = advantages(profiles)
    low, high = _intervals(advantages, stats, point, bootstrap)
    k = len(mixes)
    table = pd.DataFrame(
        {
            "mix": [m.name for m in mixes],
            "mix_spec": [m.canonical() for m in mixes],
            "target": target.name,
            "pretrain": pretrain.name,
            "metric": metric.name,
            "advantage": point[:k],
            "ci_low": low[:k],
            "ci_high": high[:k],
            "sim_mix_target": point[k + 1 :],
            "sim_pretrain_target": point[k],
            "n_tokens_mix": [profile_of(m, profiles).n_tokens for m in mixes],
            "n_tokens_target": profile_of(target, profiles).n_tokens,
        }
    )
    table = table.sort_values("advantage", ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, k + 1))
    return table.reset_index(drop=True)


def _intervals(
    statistic: Callable[[Profiles], np.ndarray],
    stats: dict[str, TokenStats],
    point: np.ndarray,
    bootstrap: Bootstrap,
) -> tuple[np.ndarray, np.ndarray]:
    if not bootstrap.n_resamples:
        nan = np.full(point.shape, np.nan)
        return nan, nan
    return bootstrap_interval(
        statistic,
        stats,
        bootstrap.n_resamples,
        seed=bootstrap.seed,
        level=bootstrap.level,
        method=bootstrap.method,
    )
