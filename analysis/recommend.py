"""`proximity recommend`: rank candidate midtraining mixtures for a new target.

By PA alone (no grid needed), and, when a grid has been correlated, by the relative
improvement the fitted line predicts, with a prediction interval for a new pair and the
line's leave-one-target-out error beside it (how wrong it was on targets it had not seen).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.advantage import pair_advantages
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

    @classmethod
    def from_statistics(
        cls, statistics: dict[str, Any], model: str | None, metric: str | None = None
    ) -> FittedRelation:
        """The relation of `metric` (default: the first correlate computed) and `model`."""
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
        if not relations:
            models = sorted({r["model"] for r in statistics["relations"]})
            raise ProximityError(
                f"--model {model}: the grid's statistics have models {', '.join(models)}"
            )
        relation = relations[-1]  # the last model in sort order when none is named
        points = pd.DataFrame(relation["points"])
        loto = relation["leave_one_target_out"]
        return cls(
            metric=metric,
            model=relation["model"],
            x=points["advantage"].to_numpy(float),
            y=points["improvement"].to_numpy(float),
            loto_rmse=loto["rmse"],
            loto_baseline_rmse=loto["baseline_rmse"],
            r=relation["pearson"]["r"],
            targets=tuple(sorted(points["target"].unique())),
        )


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


def recommend(
    target: str,
    candidates: Sequence[str],
    *,
    pretrain: str = "c4",
    metric: str = "paper",
    tokenizer: str = "pythia",
    options: StatsOptions | None = None,
    data_dir: Any = None,
    relation: FittedRelation | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """One row per candidate, best first: PA and, with a fitted relation, the prediction.

    Candidates are `--mix` values (`starcoder:0.2` = pretrain·0.8 + starcoder·0.2, `starcoder`
    = CPT, or a full mixture). With a relation, candidates are ranked by predicted
    improvement (the same order as PA when the slope is positive; the reverse when not).
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
        data_dir=data_dir,
        use_cache=use_cache,
    )
    table = wanted.merge(pa, on=["pretrain_spec", "mixture_spec", "target_spec"], how="left")
    table.insert(0, "candidate", list(candidates))
    sort_by = "advantage"
    if relation is not None:
        centre, low, high = prediction_interval(relation.x, relation.y, table["advantage"])
        table["predicted_improvement"] = centre
        table["prediction_low"] = low
        table["prediction_high"] = high
        table["loto_rmse"] = relation.loto_rmse
        table["fitted_on"] = f"{relation.model} ({len(relation.x)} pairs, {relation.metric})"
        table["pa_outside_grid"] = (table["advantage"] < relation.x.min()) | (
            table["advantage"] > relation.x.max()
        )
        sort_by = "predicted_improvement"
    table = table.sort_values(sort_by, ascending=False).reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table
