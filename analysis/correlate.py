"""`proximity correlate`: join a grid's outcomes with PA and compute every statistic.

Outcome per (model, branch, target, seed) from analysis/results.py, PA per (mixture, target)
from analysis/advantage.py, statistics per (metric, model) from analysis/correlation.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from proximity.analysis.advantage import grid_data_dir, grid_tokenizer, metrics_for, pair_advantages
from proximity.analysis.correlation import DEFAULT_SETTINGS, Settings, relation_statistics
from proximity.analysis.design import design_lines, design_summary
from proximity.analysis.example_bootstrap import example_bootstrap, sampling_error_lines
from proximity.analysis.questions import dose_response, forgetting, pretrain_similarities
from proximity.analysis.results import (
    BRANCH_KEYS,
    Grid,
    average_seeds,
    relative_improvements,
    seed_matrix,
)
from proximity.errors import ProximityError
from proximity.outputs import portable_path, write_csv, write_json
from proximity.provenance import provenance
from proximity.settings import SimilaritySettings
from proximity.stats import PAPER_MAX_TOKENS, PAPER_N_DOCS, StatsOptions

PAPER_R = {"v1": {"70m": 0.869}, "v2": {"70m": 0.52, "160m": 0.59, "410m": 0.47, "1b": 0.62}}
"""Pearson r the paper reports (PAPER.md, "The correlation"), shown beside ours."""
POOLED = "pooled"
"""The `model` of a relation over every model size together."""


@dataclass(frozen=True)
class PAProtocol:
    """What text PA is measured on: the tokenizer, the statistics protocol, and why."""

    tokenizer: str
    """`grid`, `pythia` or a path, as given to `correlate`."""
    options: StatsOptions
    text: str
    """`trained` (the SFT text as the model is trained and scored on it) or `paper`."""
    why: str


def pa_protocol(
    config: dict[str, Any],
    *,
    tokenizer: str | None = None,
    n_docs: int | None = None,
    max_tokens: int | None = None,
) -> PAProtocol:
    """PA's defaults for a grid, each overridden by the option given (`max_tokens` 0: whole
    documents).

    A grid that holds out a fixed SFT validation set (grid.yaml `sft.val_docs`, the study's
    design) is measured on the text its models are trained and scored on: the grid's own
    tokenizer, documents cut to `sft.seq_len` tokens, `sft.n_docs` documents per dataset
    (issue 15). Older grids (figures/micro records `sft.seq_len` but no `val_docs`) keep the
    paper's protocol, Pythia's tokenizer, 1,000 documents of up to 512 tokens, so their
    committed numbers are reproduced unchanged.
    """
    sft = config.get("sft") if isinstance(config.get("sft"), dict) else {}
    trained = sft.get("val_docs") is not None and sft.get("seq_len") is not None
    if trained:
        defaults = {"tokenizer": "grid", "n_docs": sft.get("n_docs"),
                    "max_tokens": int(sft["seq_len"])}  # fmt: skip
        why = (
            f"grid.yaml sft: val_docs {sft['val_docs']}, seq_len {sft['seq_len']}, n_docs "
            f"{sft.get('n_docs')}: PA on the text the models are trained and scored on"
        )
    else:
        defaults = {"tokenizer": "pythia", "n_docs": PAPER_N_DOCS, "max_tokens": PAPER_MAX_TOKENS}
        why = "grid.yaml holds out no fixed SFT validation set (sft.val_docs): the paper's protocol"
    given = {"tokenizer": tokenizer, "n_docs": n_docs, "max_tokens": max_tokens}
    chosen = {k: defaults[k] if v is None else v for k, v in given.items()}
    overridden = [f"--{k.replace('_', '-')} {v}" for k, v in given.items() if v is not None]
    if overridden:
        why += "; given: " + ", ".join(overridden)
    options = StatsOptions(n_docs=chosen["n_docs"], max_tokens=chosen["max_tokens"] or None)
    return PAProtocol(
        tokenizer=chosen["tokenizer"],
        options=options,
        text="trained" if trained else "paper",
        why=why,
    )


@dataclass
class Correlation:
    """What `proximity correlate` computed: the per-seed and averaged tables, the statistics."""

    outcomes: pd.DataFrame
    """One row per (model, seed, branch, target): losses, control, relative improvement."""
    pairs: pd.DataFrame
    """One row per (metric, model, branch, target): seed mean and spread, PA, in_correlation."""
    statistics: dict[str, Any]


def correlate(
    grid: Grid,
    *,
    metric: str = "paper",
    tokenizer: str = "pythia",
    options: StatsOptions | None = None,
    mixture: str = "expected",
    data_dir: str | Path | None = None,
    branches: Sequence[str] = ("midtrain",),
    settings: Settings = DEFAULT_SETTINGS,
    use_cache: bool = True,
    on_target: Callable[[str, str], None] | None = None,
    compare_tokenizer: str | None = None,
    compare_mixture: str | None = None,
    protocol_note: str | None = None,
) -> Correlation:
    """Relative improvement vs PA for every metric asked and every model size in the grid.

    `branches`: which branch kinds enter the correlation (the paper: midtraining mixes,
    control excluded; add `cpt` to put continued pretraining on the same line).
    `compare_tokenizer`: a second tokenizer (`grid`, `pythia`, a path) whose PA gives the
    first metric's statistics again, so the report shows how much the choice matters;
    `protocol_note`: why PA is measured as it is (`PAProtocol.why`), recorded;
    `compare_mixture` (`expected` or `resample`) does the same for the mixture similarity.
    Ablation branches (start step × weight) never enter r; they are in the tables for the
    figures and answer the dose-response question. With several model sizes, each metric also
    gets a `pooled` relation over every size (strata within size).
    """
    metrics = metrics_for(metric)
    options = options or StatsOptions()
    # --mixture checked (by the settings type) before any work; pair_advantages sets the metric
    SimilaritySettings(options=options, mixture=mixture)  # type: ignore[arg-type]
    unknown = sorted(set(branches) - {"midtrain", "cpt"})
    if unknown:
        raise ProximityError(f"--branches: {unknown[0]!r} is not midtrain or cpt")
    pa = PAInputs(
        tokenizer=grid_tokenizer(grid.config, grid.root) if tokenizer == "grid" else tokenizer,
        options=options,
        mixture=mixture,
        data_dir=data_dir or grid_data_dir(grid.config),
        use_cache=use_cache,
    )
    outcomes, summary, sampling = _outcomes(grid, settings)
    pairs = _pairs_with_pa(summary, metrics, branches, pa, on_target)
    used = pairs[pairs["in_correlation"]]
    relations = []
    for name in metrics:
        relations += _relations(used[used["metric"] == name], outcomes, name, settings)
    first = used[used["metric"] == metrics[0]]
    comparisons = {
        "tokenizer_comparison": _pa_comparison(
            first,
            outcomes,
            metrics[0],
            pa,
            _resolved(compare_tokenizer, grid),
            pa.mixture,
            settings,
        ),
        "mixture_comparison": _pa_comparison(
            first, outcomes, metrics[0], pa, pa.tokenizer, compare_mixture, settings
        ),
    }
    questions = _questions(pairs, outcomes, metrics[0], pa, settings)
    statistics = {
        **provenance("correlate"),
        "inputs": _inputs(grid, metrics, pa, protocol_note, branches, settings),
        "paper": PAPER_R,
        "relations": relations,
        "outcome_sampling_error": sampling,
        "design": design_summary(grid),
        **comparisons,
        "questions": questions,
    }
    return Correlation(outcomes=outcomes, pairs=pairs, statistics=statistics)


def _inputs(
    grid: Grid,
    metrics: list[str],
    pa: PAInputs,
    protocol_note: str | None,
    branches: Sequence[str],
    settings: Settings,
) -> dict[str, Any]:
    """What the statistics were computed from and how (statistics.json `inputs`)."""
    return {
        "runs_dir": str(grid.root),
        "results_rows": len(grid.results),
        "metrics": metrics,
        "tokenizer": pa.tokenizer,
        "mixture": pa.mixture,
        "stats_options": asdict(pa.options),
        "pa_protocol": protocol_note,
        "data_dir": portable_path(pa.data_dir) if pa.data_dir else None,
        "branches_in_correlation": list(branches),
        "outcome": "(L_control − L_branch) / L_control on sft_val_loss, same model, seed "
        "and target, each at its selected LR; mean over seeds",
        "settings": asdict(settings),
        "substitutes": grid.substitutes,
    }


@dataclass(frozen=True)
class PAInputs:
    """How correlate measures PA: the tokenizer (resolved), the statistics protocol, the
    mixture similarity, where the data is, and whether the cache is read."""

    tokenizer: str
    options: StatsOptions
    mixture: str
    data_dir: str | Path | None
    use_cache: bool

    def advantages(
        self,
        pairs: pd.DataFrame,
        metrics: Sequence[str],
        on_target: Callable[[str, str], None] | None = None,
    ) -> pd.DataFrame:
        """`pair_advantages` of `pairs` measured this way."""
        return pair_advantages(
            pairs, metrics, tokenizer=self.tokenizer, options=self.options,
            mixture=self.mixture, data_dir=self.data_dir, use_cache=self.use_cache,
            on_target=on_target,
        )  # fmt: skip


def _outcomes(grid: Grid, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Per-seed outcomes, their seed means with the pairs' specs and bootstrap SE over
    validation examples, and that bootstrap's record."""
    outcomes = relative_improvements(grid.results)
    if outcomes.empty:
        raise ProximityError(
            f"{grid.root / 'results.csv'}: no branch has a selected control run with the same "
            "model, seed and target, so no relative improvement can be computed"
        )
    summary = average_seeds(outcomes)
    specs = outcomes[[*BRANCH_KEYS, "pretrain_spec", "target_spec"]].drop_duplicates(BRANCH_KEYS)
    summary = summary.merge(specs, on=BRANCH_KEYS, how="left")
    sampling = example_bootstrap(
        grid.results, outcomes, grid.root, n_bootstrap=settings.n_bootstrap, seed=settings.seed
    )
    return outcomes, _with_example_se(summary, sampling), sampling


def _pairs_with_pa(
    summary: pd.DataFrame,
    metrics: list[str],
    branches: Sequence[str],
    pa: PAInputs,
    on_target: Callable[[str, str], None] | None,
) -> pd.DataFrame:
    """One row per (metric, pair) with its PA (0 for the control, by definition) and whether
    it enters the correlation (a branch kind asked for, not an ablation)."""
    advantages = pa.advantages(summary[summary["branch_kind"] != "control"], metrics, on_target)
    tables = []
    for name in metrics:
        part = summary.copy()
        part.insert(0, "metric", name)
        these = advantages[advantages["metric"] == name].drop(columns="metric")
        part = part.merge(these, on=["pretrain_spec", "mixture_spec", "target_spec"], how="left")
        control = part["branch_kind"] == "control"
        part.loc[control, ["advantage"]] = 0.0
        tables.append(part)
    pairs = pd.concat(tables, ignore_index=True)
    pairs["in_correlation"] = pairs["branch_kind"].isin(list(branches)) & ~pairs["ablation"]
    return pairs


def _questions(
    pairs: pd.DataFrame, outcomes: pd.DataFrame, metric: str, pa: PAInputs, settings: Settings
) -> dict[str, Any]:
    """Beyond the paper: dose-response of the midtraining pairs, and forgetting against each
    branch's similarity to the pretraining data (the first metric)."""
    mid = pairs[(pairs["metric"] == metric) & (pairs["branch_kind"] == "midtrain")]
    sims = pretrain_similarities(
        outcomes, metric, tokenizer=pa.tokenizer, options=pa.options, mixture=pa.mixture,
        data_dir=pa.data_dir, use_cache=pa.use_cache,
    )  # fmt: skip
    return {
        "dose_response": dose_response(mid, outcomes),
        "forgetting": forgetting(outcomes, sims, metric, settings),
    }


def _with_example_se(summary: pd.DataFrame, sampling: dict[str, Any]) -> pd.DataFrame:
    """Each pair's bootstrap SE over validation examples beside its seed spread (NaN where
    the grid did not record per-example losses)."""
    if not sampling.get("pairs"):
        return summary.assign(improvement_se_examples=float("nan"))
    found = pd.DataFrame(sampling["pairs"])[[*BRANCH_KEYS, "improvement_se_examples"]]
    found = found.astype({k: summary[k].dtype for k in BRANCH_KEYS})
    return summary.merge(found, on=BRANCH_KEYS, how="left")


def _resolved(tokenizer: str | None, grid: Grid) -> str | None:
    if tokenizer == "grid":
        return grid_tokenizer(grid.config, grid.root)
    return tokenizer


def _relations(
    used: pd.DataFrame, outcomes: pd.DataFrame, metric: str, settings: Settings
) -> list[dict[str, Any]]:
    """Statistics per model size, then pooled over every size when there are several."""
    groups = [(str(m), g) for m, g in used.groupby("model")]
    if len(groups) > 1:
        groups.append((POOLED, used))
    relations = []
    for model, group in groups:
        group = group.reset_index(drop=True)
        stats = relation_statistics(group, seed_matrix(outcomes, group), settings)
        stats.update(metric=metric, model=model, points=_points(group))
        relations.append(stats)
    return relations


def _pa_comparison(
    used: pd.DataFrame,
    outcomes: pd.DataFrame,
    metric: str,
    pa: PAInputs,
    tokenizer: str | None,
    mixture: str | None,
    settings: Settings,
) -> dict[str, Any] | None:
    """`metric`'s statistics (`used`: its pairs) with PA from another tokenizer or mixture
    similarity, same pairs and outcomes; None when either is unset or nothing differs."""
    if tokenizer is None or mixture is None:
        return None
    other = replace(pa, tokenizer=tokenizer, mixture=mixture)
    if other == pa:
        return None
    advantages = other.advantages(used, [metric])
    advantages = advantages[["pretrain_spec", "mixture_spec", "target_spec", "advantage"]]
    swapped = used.drop(columns="advantage").merge(
        advantages, on=["pretrain_spec", "mixture_spec", "target_spec"], how="left"
    )
    relations = _relations(swapped, outcomes, metric, settings)
    return {"tokenizer": tokenizer, "mixture": mixture, "metric": metric, "relations": relations}


def _points(group: pd.DataFrame) -> list[dict[str, Any]]:
    columns = [
        "model",
        "branch_kind",
        "mixture",
        "mixture_spec",
        "target",
        "advantage",
        "improvement",
        "improvement_std",
        "n_seeds",
    ]
    return group[columns].to_dict(orient="records")


def write_correlation(result: Correlation, out: str | Path) -> list[Path]:
    """outcomes.csv (per seed), correlation.csv (tidy joined table), statistics.json."""
    out = Path(out)
    return [
        write_csv(result.outcomes, out / "outcomes.csv"),
        write_csv(result.pairs, out / "correlation.csv"),
        write_json(result.statistics, out / "statistics.json"),
    ]


def headline(relation: dict[str, Any]) -> str:
    """One line per relation for the terminal and the report: r with its Fisher interval, the
    tests that respect the crossed design, r without its most influential pair, the verdict."""
    p = relation["pearson"]
    if p["r"] is None:
        return f"{relation['metric']} / {relation['model']}: too few pairs ({relation['n_pairs']})"
    ci = f" [{p['ci_low']:.2f}, {p['ci_high']:.2f}]" if p["ci_low"] is not None else ""
    parts = [
        f"{relation['metric']} / {relation['model']}: r = {p['r']:.3f}{ci} (Fisher), "
        f"p = {p['p']:.2g}, n = {relation['n_pairs']} pairs"
    ]
    perms = []
    for key, name in (("permutation_within_targets", "targets"),
                      ("permutation_within_mixtures", "mixtures")):  # fmt: skip
        perm = relation.get(key) or {}
        perms.append(f"{name} p = {perm['p']:.2g}" if perm.get("p") is not None else f"{name} –")
    parts.append("permutation within " + ", within ".join(perms))
    boot = relation.get("bootstrap_two_way") or {}
    if boot.get("ci_low") is not None:
        parts.append(f"two-way bootstrap CI [{boot['ci_low']:.2f}, {boot['ci_high']:.2f}]")
    pair = (relation.get("leave_one_pair_out") or {}).get("most_influential")
    if pair:
        parts.append(
            f"without {pair['pair']} r = {pair['r_without']:.3f} (p = {pair['p_without']:.2g})"
        )
    word = relation.get("verdict")
    if word:
        failed = f" (not passed: {', '.join(word['failed'])})" if word["failed"] else ""
        parts.append(f"verdict: {word['verdict']}{failed}")
    return "; ".join(parts)


def summary_lines(statistics: dict[str, Any]) -> list[str]:
    """What `proximity correlate` prints: every relation's headline (per model size, then
    pooled), the same with the other tokenizer and mixture similarity, the two questions
    beyond the paper, and how `recommend` did on held-out targets."""
    lines = [headline(r) for r in statistics["relations"]]
    lines += sampling_error_lines(statistics)
    lines += design_lines(statistics.get("design"))
    for key, what in (("tokenizer_comparison", "tokenizer"), ("mixture_comparison", "mixture")):
        comparison = statistics.get(key) or {}
        for relation in comparison.get("relations", []):
            lines.append(f"with the {comparison[what]} {what}: {headline(relation)}")
    first = statistics["inputs"]["metrics"][0]
    for relation in statistics["relations"]:
        held = relation.get("new_target_prediction") or {}
        if relation["metric"] != first or held.get("coverage") is None:
            continue
        ratio = held["rmse_ratio"]
        lines.append(
            f"recommend on held-out targets ({first} / {relation['model']}): 95% interval "
            f"covered {held['coverage']:.0%} of {held['n_pairs']} pairs (goal ≥ 90%), mean "
            f"width {held['mean_width']:.4f} (outcomes span {held['outcome_range']:.4f}); RMSE "
            f"{held['rmse']:.4f} vs {held['baseline_rmse']:.4f} predicting the mean"
            + (f" (ratio {ratio:.2f})" if ratio is not None else "")
        )
    questions = statistics.get("questions") or {}
    dose = questions.get("dose_response") or {}
    for domain in dose.get("domains", []):
        lines.append(
            f"dose-response {domain['model']} / {domain['mixture']}: gain grows with weight as "
            f"PA does in {domain['agree']}/{domain['cells']} cells "
            f"({domain['agree_significant']} significant, paired by seed): {domain['verdict']}"
        )
    if dose.get("why"):
        lines.append(f"dose-response: not tested ({dose['why']})")
    forget = questions.get("forgetting") or {}
    for relation in forget.get("relations", []):
        p = relation["pearson"]
        boot = relation["bootstrap_two_way"]
        if p["r"] is None:
            continue
        interval = (
            f", two-way bootstrap CI [{boot['ci_low']:.2f}, {boot['ci_high']:.2f}]"
            if boot["ci_low"] is not None
            else ""
        )
        lines.append(
            f"forgetting {relation['model']}: r(similarity to the pretraining data, C4 loss "
            f"change) = {p['r']:.3f}, p = {p['p']:.2g}{interval}, n = {relation['n_pairs']}: "
            f"{relation['verdict']['verdict']} (expected negative)"
        )
    if forget.get("why"):
        lines.append(f"forgetting: not tested ({forget['why']})")
    return lines
