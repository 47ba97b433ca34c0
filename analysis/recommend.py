"""`proximity recommend`: rank candidate midtraining mixtures for a new target.

By PA alone (no grid needed), and, when a grid has been correlated, by the relative
improvement the fitted line predicts, with a prediction interval for a pair of a new target
(built from leave-one-target-out residuals, so it includes the between-target spread), its
coverage measured by leaving out each target of the grid in turn, and the line's
leave-one-target-out error beside predicting the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from proximity.analysis.advantage import pair_advantages
from proximity.analysis.correlate import POOLED
from proximity.analysis.correlation import new_target_interval
from proximity.candidates import midtraining_mix
from proximity.errors import ProximityError
from proximity.specs import parse_mixture
from proximity.stats import StatsOptions


@dataclass(frozen=True)
class FittedRelation:
    """The line improvement = intercept + slope·PA from one (metric, model) of a grid."""

    metric: str
    model: str
    x: np.ndarray
    y: np.ndarray
    loto_rmse: float | None
    loto_baseline_rmse: float | None
    r: float | None
    targets: tuple[str, ...]
    point_targets: tuple[str, ...] = ()
    """The target of each point (the clusters of the new-target interval)."""
    branch_kinds: tuple[str, ...] = ()
    """midtrain or cpt, per point (midtrain where correlate did not record it)."""
    held_out: dict[str, Any] | None = None
    """correlate's `new_target_prediction`: coverage and RMSE on held-out targets."""

    @classmethod
    def from_statistics(
        cls, statistics: dict[str, Any], model: str | None, metric: str | None = None
    ) -> FittedRelation:
        """The relation of `metric` (default: the first correlate computed) and `model`
        (default: the last model size in sort order; `pooled` only when asked for)."""
        computed = statistics["inputs"]["metrics"]
        metric = metric or computed[0]
        if metric not in computed:
            raise ProximityError(
                f"--metric {metric}: the grid was correlated with {', '.join(computed)}; run "
                f"`proximity correlate RUNS --metric {metric}` (or --metric all) first"
            )
        relations = [r for r in statistics["relations"] if r["metric"] == metric]
        if model is not None:
            relations = [r for r in relations if r["model"] == model]
        else:
            relations = [r for r in relations if r["model"] != POOLED]
        if not relations:
            models = sorted({r["model"] for r in statistics["relations"]})
            raise ProximityError(
                f"--model {model}: the grid's statistics have models {', '.join(models)}"
            )
        relation = relations[-1]  # the last model in sort order when none is named
        points = pd.DataFrame(relation["points"])
        loto = relation["leave_one_target_out"]
        kinds = points["branch_kind"] if "branch_kind" in points else ["midtrain"] * len(points)
        return cls(
            metric=metric,
            model=relation["model"],
            x=points["advantage"].to_numpy(float),
            y=points["improvement"].to_numpy(float),
            loto_rmse=loto["rmse"],
            loto_baseline_rmse=loto["baseline_rmse"],
            r=relation["pearson"]["r"],
            targets=tuple(sorted(points["target"].unique())),
            point_targets=tuple(str(t) for t in points["target"]),
            branch_kinds=tuple(str(k) for k in kinds),
            held_out=relation.get("new_target_prediction"),
        )

    def part(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, y and targets of the points of one branch kind (midtrain or cpt)."""
        kinds = np.asarray(self.branch_kinds or ["midtrain"] * len(self.x))
        targets = np.asarray(self.point_targets or ["?"] * len(self.x))
        keep = kinds == kind
        return self.x[keep], self.y[keep], targets[keep]


def prediction_interval(
    x: np.ndarray, y: np.ndarray, x_new: np.ndarray, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares prediction for new x with the interval for a new observation:
    ŷ ± t(n−2) · s · sqrt(1 + 1/n + (x₀ − x̄)² / Sxx)."""
    n = len(x)
    if n < 3 or np.ptp(x) == 0:
        raise ProximityError(
            f"the grid's relation has {n} pairs with distinct PA; a line needs at least 3"
        )
    line = stats.linregress(x, y)
    residual = y - (line.intercept + line.slope * x)
    s = np.sqrt(residual @ residual / (n - 2))
    sxx = np.sum((x - x.mean()) ** 2)
    x_new = np.asarray(x_new, float)
    centre = line.intercept + line.slope * x_new
    half = (
        stats.t.ppf(0.5 + level / 2, n - 2) * s * np.sqrt(1 + 1 / n + (x_new - x.mean()) ** 2 / sxx)
    )
    return centre, centre - half, centre + half


def is_cpt(spec: str, pretrain: str) -> bool:
    """A candidate with none of the pretraining data in it: continued pretraining."""
    base = {d.canonical() for d in parse_mixture(pretrain).datasets}
    return not base & {d.canonical() for d in parse_mixture(spec).datasets}


def _predict(table: pd.DataFrame, relation: FittedRelation, cpt: np.ndarray) -> pd.DataFrame:
    """Predicted improvement with the new-target interval, from the line of the candidate's
    branch kind; a kind the grid has no line for is refused (with the reason in `note`)."""
    table = table.assign(
        predicted_improvement=np.nan, prediction_low=np.nan, prediction_high=np.nan,
        pa_outside_grid=False, fitted_on="", note="",
    )  # fmt: skip
    for kind, rows in (("midtrain", ~cpt), ("cpt", cpt)):
        if not rows.any():
            continue
        x, y, targets = relation.part(kind)
        if len(np.unique(targets)) < 3 or len(x) < 3 or np.ptp(x) == 0:
            why = (
                "refused: a CPT candidate (100% specialised data) and the grid's line has "
                f"{len(x)} CPT pair(s) from {len(np.unique(targets))} target(s); run `proximity "
                "correlate RUNS --branches midtrain,cpt` on a grid with CPT for 3+ targets"
                if kind == "cpt"
                else f"refused: the grid's line has {len(x)} midtraining pair(s) from "
                f"{len(np.unique(targets))} target(s); a new-target interval needs 3 targets"
            )
            table.loc[rows, "note"] = why
            continue
        got = new_target_interval(x, y, targets, table.loc[rows, "advantage"].to_numpy(float))
        table.loc[rows, "predicted_improvement"] = got["centre"]
        table.loc[rows, "prediction_low"] = got["low"]
        table.loc[rows, "prediction_high"] = got["high"]
        table.loc[rows, "fitted_on"] = (
            f"{relation.model} ({len(x)} {kind} pairs, {len(np.unique(targets))} targets, "
            f"{relation.metric})"
        )
        advantage = table.loc[rows, "advantage"]
        table.loc[rows, "pa_outside_grid"] = (advantage < x.min()) | (advantage > x.max())
    return table


def recommend(
    target: str,
    candidates: Sequence[str],
    *,
    pretrain: str = "c4",
    metric: str = "paper",
    tokenizer: str = "pythia",
    options: StatsOptions | None = None,
    mixture: str = "expected",
    data_dir: Any = None,
    relation: FittedRelation | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """One row per candidate, best first: PA and, with a fitted relation, the prediction.

    Candidates are `--mix` values (`starcoder:0.2` = pretrain·0.8 + starcoder·0.2, `starcoder`
    = CPT, or a full mixture). With a relation, candidates are ranked by predicted
    improvement (the same order as PA when the slope is positive; the reverse when not), each
    with a 95% interval for a pair of a target the grid has not seen (`new_target_interval`:
    it includes how far a new target's level falls from the line). Midtraining candidates are
    predicted from the grid's midtraining pairs, CPT candidates from its CPT pairs or refused
    (`note`); PA outside the fitted range is flagged. Refused candidates rank last.
    """
    if relation is not None:
        metric = relation.metric
    base = parse_mixture(pretrain)
    wanted = pd.DataFrame(
        {
            "pretrain_spec": pretrain,
            "mixture_spec": [midtraining_mix(base, text).canonical() for text in candidates],
            "target_spec": target,
        }
    )
    pa = pair_advantages(
        wanted,
        [metric],
        tokenizer=tokenizer,
        options=options or StatsOptions(),
        mixture=mixture,
        data_dir=data_dir,
        use_cache=use_cache,
    )
    table = wanted.merge(pa, on=["pretrain_spec", "mixture_spec", "target_spec"], how="left")
    table.insert(0, "candidate", list(candidates))
    sort_by = "advantage"
    if relation is not None:
        cpt = np.array([is_cpt(spec, pretrain) for spec in table["mixture_spec"]])
        table = _predict(table, relation, cpt)
        table["loto_rmse"] = relation.loto_rmse
        sort_by = "predicted_improvement"
    table = table.sort_values(sort_by, ascending=False, na_position="last").reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table
