"""Similarity matrices and proximity advantage over token statistics; the public entry points.

    from proximity.similarity import advantage_table
    table = advantage_table("c4", "pycode", ["starcoder:0.2", "math:0.12", "starcoder"],
                            data_dir="../shared/data")

`advantage_table` and `similarity_table` take spec strings and do everything (tokenizer,
statistics through the cache, mixtures, bootstrap); `proximity advantage` and `proximity
similarity` are thin wrappers around them, so the command line and Python give the same
numbers. Datasets are tokenised once each; every comparison after that works on count
vectors.

Proximity advantage (Liu et al. 2025): PA(M, T) = sim(M, T) − sim(pretrain, T). What a
`--mix` value means is `proximity.candidates`' job; how a mixture is compared (`expected` or
the authors' `resample`) is `proximity.mixtures`'; the document bootstrap is
`proximity.bootstrap`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from tokenizers import Tokenizer

from proximity.bootstrap import Bootstrap, DocumentWeights, document_bootstrap
from proximity.candidates import (
    candidate,
    labelled,
    midtraining_named,
    named,
    specialised_weight,
    unique_datasets,
)
from proximity.errors import ProximityError
from proximity.metrics import Metric
from proximity.mixtures import ResamplePlan, expected_profile, resample_plan
from proximity.registry import Registry
from proximity.settings import PAPER_SETTINGS, MixtureMode, SimilaritySettings
from proximity.specs import DatasetSpec, MixtureSpec
from proximity.stats import Counts, Profile, StatsOptions, TokenStats, compute_stats
from proximity.tokenizer import TokenizerHandle

NO_BOOTSTRAP = Bootstrap()

__all__ = [
    "Bootstrap",
    "advantage_table",
    "gather_stats",
    "proximity_advantage",
    "run_advantage",
    "run_similarity",
    "similarity_matrix",
    "similarity_table",
]


# --- statistics ---------------------------------------------------------------------------


class StatsProgress(Protocol):
    """What `gather_stats` reports while it works (the CLI draws progress bars from it)."""

    def start(self, name: str, total: int | None) -> None: ...
    def advance(self, n_docs: int) -> None: ...
    def finish(self, name: str, stats: TokenStats) -> None: ...


def gather_stats(
    candidates: Sequence[MixtureSpec],
    tokenizer: Tokenizer | TokenizerHandle,
    options: StatsOptions,
    *,
    data_dir: str | Path | None = None,
    registry: Registry | None = None,
    use_cache: bool = True,
    progress: StatsProgress | None = None,
) -> dict[str, TokenStats]:
    """Statistics of every distinct dataset behind `candidates`, each computed (or read from
    the cache) exactly once: N datasets cost N tokenisation passes, whatever is compared."""
    if not isinstance(tokenizer, TokenizerHandle):
        tokenizer = TokenizerHandle(tokenizer)  # fingerprinted once for all datasets
    stats: dict[str, TokenStats] = {}
    for spec in unique_datasets(candidates):
        key = spec.canonical()
        if progress is not None:
            progress.start(key, options.n_docs)
        stats[key] = compute_stats(
            spec,
            tokenizer,
            options,
            data_dir=data_dir,
            registry=registry,
            on_docs=progress.advance if progress is not None else None,
            use_cache=use_cache,
        )
        if progress is not None:
            progress.finish(key, stats[key])
    return stats


# --- profiles of candidates ----------------------------------------------------------------


class Comparison:
    """How each candidate becomes a `Profile`: its dataset's counts, or a mixture of its
    parts' (`expected`) or the authors' resampled documents (`resample`), from the original
    samples or from a bootstrap replicate's document weights."""

    def __init__(
        self,
        candidates: Sequence[MixtureSpec],
        stats: dict[str, TokenStats],
        mixture: MixtureMode = "expected",
        *,
        base: MixtureSpec | None = None,
        seed: int = 0,
    ):
        self.candidates = list(dict.fromkeys(candidates))
        self.stats = stats
        self.mixture = mixture
        self.plans: dict[MixtureSpec, ResamplePlan] = {}
        if mixture == "resample":
            base_parts = frozenset(base.datasets) if base is not None else None
            for cand in self.candidates:
                if cand.is_mixture:
                    parts = base_parts or frozenset(cand.datasets[:1])
                    n_docs = {s: self._doc_counts(s).shape[0] for s in cand.datasets}
                    self.plans[cand] = resample_plan(cand, n_docs, parts, seed)

    def _doc_counts(self, spec: DatasetSpec):
        st = self.stats[spec.canonical()]
        if st.doc_counts is None:
            raise ProximityError(
                f"{spec.canonical()}: this needs per-document counts (a bootstrap or "
                "--mixture resample): compute the statistics with per_document=True"
            )
        return st.doc_counts

    def notes(self, cand: MixtureSpec) -> list[str]:
        """Substitute data, short datasets and resampling caps behind one candidate."""
        notes = []
        for spec in cand.datasets:
            meta = self.stats[spec.canonical()].metadata
            substitute = (meta.get("source") or {}).get("substitute")
            if substitute:
                notes.append(f"{spec.canonical()}: substitute: {substitute}")
            notes += [f"{spec.canonical()}: {note}" for note in meta.get("notes", [])]
        if cand in self.plans:
            notes += [f"resample: {note}" for note in self.plans[cand].notes]
        return notes

    def document_counts(self) -> dict[str, int]:
        """Documents per dataset (what a bootstrap resamples)."""
        return {
            spec.canonical(): self._doc_counts(spec).shape[0]
            for spec in unique_datasets(self.candidates)
        }

    def profiles(self, weights: DocumentWeights | None = None) -> dict[MixtureSpec, Profile]:
        """Every candidate's profile; `weights` (dataset key -> times each document was
        drawn) gives a bootstrap replicate, None the samples as counted."""
        totals: dict[str, Counts] = {}

        def counts_of(spec: DatasetSpec) -> Counts:
            key = spec.canonical()
            if key not in totals:
                st = self.stats[key]
                if weights is None:
                    totals[key] = st.totals()
                else:
                    totals[key] = self._weighted(spec, weights[key])
            return totals[key]

        result: dict[MixtureSpec, Profile] = {}
        for cand in self.candidates:
            if not cand.is_mixture:
                result[cand] = counts_of(cand.single()).profile()
            elif cand in self.plans:
                result[cand] = self._resampled(self.plans[cand], weights).profile()
            else:
                result[cand] = expected_profile([(counts_of(s), w) for s, w in cand.components])
        return result

    def _weighted(self, spec: DatasetSpec, doc_weights: np.ndarray) -> Counts:
        st = self.stats[spec.canonical()]
        unigram = self._doc_counts(spec).T @ doc_weights
        ngram = st.doc_ngram_counts.T @ doc_weights if st.doc_ngram_counts is not None else None
        if st.ngram_counts is not None and ngram is None:
            raise ProximityError(f"{spec.canonical()}: per-document n-gram counts are missing")
        return Counts(unigram, ngram, int(np.count_nonzero(doc_weights)))

    def _resampled(self, plan: ResamplePlan, weights: DocumentWeights | None) -> Counts:
        unigram: np.ndarray | None = None
        ngram: np.ndarray | None = None
        n_docs = 0
        for spec, rows in plan.documents.items():
            st = self.stats[spec.canonical()]
            chosen = np.zeros(self._doc_counts(spec).shape[0])
            np.add.at(chosen, rows, 1.0)
            if weights is not None:
                chosen *= weights[spec.canonical()]
            part = self._weighted(spec, chosen)
            unigram = part.unigram if unigram is None else unigram + part.unigram
            if st.doc_ngram_counts is not None:
                ngram = part.ngram if ngram is None else ngram + part.ngram
            n_docs += int(chosen.sum())
        assert unigram is not None
        return Counts(unigram, ngram, n_docs)


def compare(metric: Metric, a: Profile, b: Profile, names: tuple[str, str]) -> float:
    """metric(a, b); a unigram metric also reads each side's vocabulary presence (an
    expected mixture's Jaccard with itself is then 1, as a dataset's: see proximity.metrics)."""
    if metric.uses == "ngram":
        if a.ngram is None or b.ngram is None:
            missing = names[0] if a.ngram is None else names[1]
            raise ProximityError(
                f"metric {metric.name} needs n-gram counts for {missing}: set --ngram-order 2"
            )
        return metric.function(a.ngram, b.ngram)
    return metric.function(a.unigram, b.unigram, presence_a=a.presence, presence_b=b.presence)


def _pair_values(
    pairs: Sequence[tuple[MixtureSpec, MixtureSpec]],
    profiles: dict[MixtureSpec, Profile],
    metric: Metric,
) -> np.ndarray:
    """metric(a, b) for each pair; symmetric metrics are evaluated once per unordered pair."""
    done: dict[tuple[MixtureSpec, MixtureSpec], float] = {}
    values = np.empty(len(pairs))
    for i, (a, b) in enumerate(pairs):
        if metric.symmetric and (b, a) in done:
            values[i] = done[(b, a)]
            continue
        values[i] = done[(a, b)] = compare(metric, profiles[a], profiles[b], (a.name, b.name))
    return values


def _intervals(
    comparison: Comparison,
    statistic,
    point: np.ndarray,
    bootstrap: Bootstrap,
) -> tuple[np.ndarray, np.ndarray]:
    if not bootstrap.n_resamples:
        nan = np.full(point.shape, np.nan)
        return nan, nan
    return document_bootstrap(
        lambda weights: statistic(comparison.profiles(weights)),
        comparison.document_counts(),
        bootstrap,
    )


# --- tables -------------------------------------------------------------------------------


def similarity_matrix(
    candidates: Sequence[MixtureSpec],
    stats: dict[str, TokenStats],
    metric: Metric,
    bootstrap: Bootstrap = NO_BOOTSTRAP,
    *,
    mixture: MixtureMode = "expected",
    seed: int = 0,
) -> pd.DataFrame:
    """Tidy table, one row per ordered pair: a, b, metric, value, ci_low, ci_high, n_tokens,
    specs and notes. In `resample` mode a mixture's first part is its pretraining data."""
    labels = [c.name for c in candidates]
    if len(set(labels)) != len(labels):
        raise ProximityError(f"datasets to compare must have distinct labels, got {labels}")
    comparison = Comparison(candidates, stats, mixture, seed=seed)
    pairs = [(a, b) for a in candidates for b in candidates]
    profiles = comparison.profiles()
    values = _pair_values(pairs, profiles, metric)
    low, high = _intervals(comparison, lambda p: _pair_values(pairs, p, metric), values, bootstrap)
    notes = {c: "; ".join(comparison.notes(c)) for c in candidates}
    return pd.DataFrame(
        {
            "a": [a.name for a, _ in pairs],
            "b": [b.name for _, b in pairs],
            "metric": metric.name,
            "mixture": mixture,
            "value": values,
            "ci_low": low,
            "ci_high": high,
            "n_tokens_a": [profiles[a].n_tokens for a, _ in pairs],
            "n_tokens_b": [profiles[b].n_tokens for _, b in pairs],
            "spec_a": [a.canonical() for a, _ in pairs],
            "spec_b": [b.canonical() for _, b in pairs],
            "notes_a": [notes[a] for a, _ in pairs],
            "notes_b": [notes[b] for _, b in pairs],
        }
    )


def proximity_advantage(
    pretrain: MixtureSpec,
    target: MixtureSpec,
    mixes: Sequence[MixtureSpec],
    stats: dict[str, TokenStats],
    metric: Metric,
    bootstrap: Bootstrap = NO_BOOTSTRAP,
    *,
    mixture: MixtureMode = "expected",
    seed: int = 0,
) -> pd.DataFrame:
    """PA(mix, target) = sim(mix, target) − sim(pretrain, target), ranked best first."""
    if not mixes:
        raise ProximityError("give at least one --mix to rank (e.g. --mix starcoder:0.2)")
    labels = [m.name for m in mixes]
    if len(set(labels)) != len(labels):
        raise ProximityError(f"--mix values must be distinct, got {labels}")
    comparison = Comparison([pretrain, target, *mixes], stats, mixture, base=pretrain, seed=seed)
    pairs = [(m, target) for m in (pretrain, *mixes)]

    def advantages(profiles: dict[MixtureSpec, Profile]) -> np.ndarray:
        sims = _pair_values(pairs, profiles, metric)
        return np.concatenate([sims[1:] - sims[0], sims])

    profiles = comparison.profiles()
    point = advantages(profiles)
    low, high = _intervals(comparison, advantages, point, bootstrap)
    k = len(mixes)
    table = pd.DataFrame(
        {
            "mix": labels,
            "mix_spec": [m.canonical() for m in mixes],
            "weight": [specialised_weight(m, pretrain) for m in mixes],
            "target": target.name,
            "target_spec": target.canonical(),
            "pretrain": pretrain.name,
            "pretrain_spec": pretrain.canonical(),
            "metric": metric.name,
            "mixture": mixture,
            "advantage": point[:k],
            "ci_low": low[:k],
            "ci_high": high[:k],
            "sim_mix_target": point[k + 1 :],
            "sim_pretrain_target": point[k],
            "n_tokens_mix": [profiles[m].n_tokens for m in mixes],
            "n_tokens_target": profiles[target].n_tokens,
            "notes": ["; ".join(comparison.notes(m)) for m in mixes],
        }
    )
    table = table.sort_values("advantage", ascending=False, kind="stable")
    table.insert(0, "rank", np.arange(1, k + 1))
    return table.reset_index(drop=True)


# --- public entry points ------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished comparison: the table and what stands behind it (for the JSON record)."""

    table: pd.DataFrame
    stats: dict[str, TokenStats]
    tokenizer_fingerprint: str
    compared: dict[str, str]
    """Label -> canonical spec of everything compared."""
    settings: SimilaritySettings

    @property
    def options(self) -> StatsOptions:
        """How every dataset was sampled and counted."""
        return self.settings.counting


def _reading(
    tokenizer: str | Tokenizer,
    data_dir: str | Path | None,
    registry: Registry | Sequence[str | Path] | None,
) -> tuple[TokenizerHandle, Registry]:
    """The tokenizer (fingerprinted once for every dataset) and the registry to read with."""
    reg = registry if isinstance(registry, Registry) else Registry.load(list(registry or []))
    return TokenizerHandle(tokenizer, data_dir), reg


def run_advantage(
    pretrain: str,
    target: str,
    mixes: Sequence[str],
    settings: SimilaritySettings = PAPER_SETTINGS,
    *,
    tokenizer: str | Tokenizer = "pythia",
    data_dir: str | Path | None = None,
    registry: Registry | Sequence[str | Path] | None = None,
    use_cache: bool = True,
    progress: StatsProgress | None = None,
) -> Run:
    """`advantage_table` with the statistics and provenance behind it (the CLI's JSON)."""
    tok, reg = _reading(tokenizer, data_dir, registry)
    base = candidate(pretrain)
    goal = candidate(target)
    mix_specs = labelled([midtraining_named(base, text) for text in mixes])
    if not mix_specs:
        raise ProximityError("give at least one --mix to rank (e.g. --mix starcoder:0.2)")
    stats = gather_stats(
        [base, goal, *mix_specs],
        tok,
        settings.counting,
        data_dir=data_dir,
        registry=reg,
        use_cache=use_cache,
        progress=progress,
    )
    table = proximity_advantage(
        base, goal, mix_specs, stats, settings.metric, settings.bootstrap,
        mixture=settings.mixture, seed=settings.options.seed,
    )  # fmt: skip
    compared = {m.name: m.canonical() for m in (base, goal, *mix_specs)}
    return Run(table, stats, tok.fingerprint, compared, settings)


def advantage_table(
    pretrain: str,
    target: str,
    mixes: Sequence[str],
    settings: SimilaritySettings = PAPER_SETTINGS,
    *,
    tokenizer: str | Tokenizer = "pythia",
    data_dir: str | Path | None = None,
    registry: Registry | Sequence[str | Path] | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """Proximity advantage of each mix for `target` over `pretrain`, ranked best first.

    `mixes` are `--mix` values: `starcoder:0.2` (pretrain·0.8 + starcoder·0.2), `starcoder`
    or `starcoder:1` (continued pretraining), or a full mixture (`c4:0.8+starcoder:0.2`),
    optionally labelled (`code20=starcoder:0.2`). `settings`: the metric, how each dataset is
    sampled and counted, how a mixture is compared and the bootstrap (the paper's protocol,
    no intervals, by default; see `proximity.settings`).

    Columns: rank, mix (label), mix_spec (canonical mixture), weight (share of specialised
    data), target, target_spec, pretrain, pretrain_spec, metric, mixture, advantage,
    ci_low, ci_high, sim_mix_target, sim_pretrain_target, n_tokens_mix, n_tokens_target,
    notes (substitute data, short datasets, resampling caps).
    """
    return run_advantage(
        pretrain, target, mixes, settings, tokenizer=tokenizer, data_dir=data_dir,
        registry=registry, use_cache=use_cache,
    ).table  # fmt: skip


def run_similarity(
    datasets: Sequence[str],
    settings: SimilaritySettings = PAPER_SETTINGS,
    *,
    tokenizer: str | Tokenizer = "pythia",
    data_dir: str | Path | None = None,
    registry: Registry | Sequence[str | Path] | None = None,
    use_cache: bool = True,
    progress: StatsProgress | None = None,
) -> Run:
    """`similarity_table` with the statistics and provenance behind it (the CLI's JSON)."""
    tok, reg = _reading(tokenizer, data_dir, registry)
    candidates = labelled([named(text) for text in datasets])
    stats = gather_stats(
        candidates,
        tok,
        settings.counting,
        data_dir=data_dir,
        registry=reg,
        use_cache=use_cache,
        progress=progress,
    )
    table = similarity_matrix(
        candidates, stats, settings.metric, settings.bootstrap, mixture=settings.mixture,
        seed=settings.options.seed,
    )  # fmt: skip
    compared = {c.name: c.canonical() for c in candidates}
    return Run(table, stats, tok.fingerprint, compared, settings)


def similarity_table(
    datasets: Sequence[str],
    settings: SimilaritySettings = PAPER_SETTINGS,
    *,
    tokenizer: str | Tokenizer = "pythia",
    data_dir: str | Path | None = None,
    registry: Registry | Sequence[str | Path] | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """Similarity of every ordered pair of `datasets` (specs or mixtures), one row each.

    Same arguments as `advantage_table`. Columns: a, b (labels), metric, mixture, value,
    ci_low, ci_high, n_tokens_a, n_tokens_b, spec_a, spec_b, notes_a, notes_b.
    """
    return run_similarity(
        datasets, settings, tokenizer=tokenizer, data_dir=data_dir, registry=registry,
        use_cache=use_cache,
    ).table  # fmt: skip
