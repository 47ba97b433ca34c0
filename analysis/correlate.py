"""`proximity correlate`: join a grid's outcomes with PA and compute every statistic.

Outcome per (model, branch, target, seed) from analysis/results.py, PA per (mixture, target)
from analysis/advantage.py, statistics per (metric, model) from analysis/correlation.py.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.advantage import grid_data_dir, grid_tokenizer, metrics_for, pair_advantages
from analysis.correlation import DEFAULT_SETTINGS, Settings, relation_statistics
from analysis.results import BRANCH_KEYS, Grid, average_seeds, relative_improvements, seed_matrix
from proximity import __version__
from proximity.errors import ProximityError
from proximity.outputs import write_csv, write_json
from proximity.stats import StatsOptions

PAPER_R = {"v1": {"70m": 0.869}, "v2": {"70m": 0.52, "160m": 0.59, "410m": 0.47, "1b": 0.62}}
"""Pearson r the paper reports (PAPER.md, "The correlation"), shown beside ours."""


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
) -> Correlation:
    """Relative improvement vs PA for every metric asked and every model size in the grid.

    `branches`: which branch kinds enter the correlation (the paper: midtraining mixes,
    control excluded; add `cpt` to put continued pretraining on the same line).
    `compare_tokenizer`: a second tokenizer (`grid`, `pythia`, a path) whose PA gives the
    first metric's statistics again, so the report shows how much the choice matters. Ablation
    branches (start step × weight) never enter it; they are in the tables for the figures.
    """
    metrics = metrics_for(metric)
    options = options or StatsOptions()
    unknown = sorted(set(branches) - {"midtrain", "cpt"})
    if unknown:
        raise ProximityError(f"--branches: {unknown[0]!r} is not midtrain or cpt")
    tok = grid_tokenizer(grid.config, grid.root) if tokenizer == "grid" else tokenizer
    folder = data_dir or grid_data_dir(grid.config)
    outcomes = relative_improvements(grid.results)
    if outcomes.empty:
        raise ProximityError(
            f"{grid.root / 'results.csv'}: no branch has a selected control run with the same "
            "model, seed and target, so no relative improvement can be computed"
        )
    summary = average_seeds(outcomes)
    specs = outcomes[[*BRANCH_KEYS, "pretrain_spec", "target_spec"]].drop_duplicates(BRANCH_KEYS)
    summary = summary.merge(specs, on=BRANCH_KEYS, how="left")
    wanted = summary[summary["branch_kind"] != "control"]
    pa = pair_advantages(
        wanted,
        metrics,
        tokenizer=tok,
        options=options,
        mixture=mixture,
        data_dir=folder,
        use_cache=use_cache,
        on_target=on_target,
    )
    tables = []
    for name in metrics:
        part = summary.copy()
        part.insert(0, "metric", name)
        these = pa[pa["metric"] == name].drop(columns="metric") if len(pa) else pa
        part = part.merge(these, on=["pretrain_spec", "mixture_spec", "target_spec"], how="left")
        control = part["branch_kind"] == "control"
        part.loc[control, ["advantage"]] = 0.0
        tables.append(part)
    pairs = pd.concat(tables, ignore_index=True)
    pairs["in_correlation"] = pairs["branch_kind"].isin(list(branches)) & ~pairs["ablation"]

    relations = []
    for (name, model), group in pairs[pairs["in_correlation"]].groupby(["metric", "model"]):
        group = group.reset_index(drop=True)
        by_seed = seed_matrix(outcomes, group)
        stats = relation_statistics(group, by_seed, settings)
        stats.update(metric=name, model=model, points=_points(group))
        relations.append(stats)
    comparison = None
    if compare_tokenizer:
        other = (
            grid_tokenizer(grid.config, grid.root)
            if compare_tokenizer == "grid"
            else compare_tokenizer
        )
        if other != tok:
            comparison = _tokenizer_comparison(
                pairs[(pairs["metric"] == metrics[0]) & pairs["in_correlation"]],
                outcomes,
                other,
                metrics[0],
                options,
                mixture,
                folder,
                settings,
                use_cache,
            )
    statistics = {
        "command": "correlate",
        "argv": sys.argv,
        "proximity_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "inputs": {
            "runs_dir": str(grid.root),
            "results_rows": len(grid.results),
            "metrics": metrics,
            "tokenizer": tok,
            "mixture": mixture,
            "stats_options": asdict(options),
            "data_dir": str(folder) if folder else None,
            "branches_in_correlation": list(branches),
            "outcome": "(L_control − L_branch) / L_control on sft_val_loss, same model, seed "
            "and target, each at its selected LR; mean over seeds",
            "settings": asdict(settings),
            "substitutes": grid.substitutes,
        },
        "paper": PAPER_R,
        "relations": relations,
        "tokenizer_comparison": comparison,
    }
    return Correlation(outcomes=outcomes, pairs=pairs, statistics=statistics)


def _tokenizer_comparison(
    used: pd.DataFrame,
    outcomes: pd.DataFrame,
    tokenizer: str,
    metric: str,
    options: StatsOptions,
    mixture: str,
    data_dir: Any,
    settings: Settings,
    use_cache: bool,
) -> dict[str, Any]:
    """The first metric's statistics with PA from another tokenizer, same pairs and outcomes."""
    pa = pair_advantages(
        used,
        [metric],
        tokenizer=tokenizer,
        options=options,
        mixture=mixture,
        data_dir=data_dir,
        use_cache=use_cache,
    )[["pretrain_spec", "mixture_spec", "target_spec", "advantage"]]
    swapped = used.drop(columns="advantage").merge(
        pa, on=["pretrain_spec", "mixture_spec", "target_spec"], how="left"
    )
    relations = []
    for model, group in swapped.groupby("model"):
        group = group.reset_index(drop=True)
        stats = relation_statistics(group, seed_matrix(outcomes, group), settings)
        stats.update(metric=metric, model=model, points=_points(group))
        relations.append(stats)
    return {"tokenizer": tokenizer, "metric": metric, "relations": relations}


def _points(group: pd.DataFrame) -> list[dict[str, Any]]:
    columns = [
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
    """One line per relation for the terminal and the report."""
    p = relation["pearson"]
    if p["r"] is None:
        return f"{relation['metric']} / {relation['model']}: too few pairs ({relation['n_pairs']})"
    ci = f" [{p['ci_low']:.2f}, {p['ci_high']:.2f}]" if p["ci_low"] is not None else ""
    perm = relation["permutation_p"]
    return (
        f"{relation['metric']} / {relation['model']}: r = {p['r']:.3f}{ci}, p = {p['p']:.2g}"
        f" (permutation p = {perm:.2g}), n = {relation['n_pairs']} pairs"
    )
