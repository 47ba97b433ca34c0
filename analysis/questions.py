"""Two questions beyond the paper that any grid can answer from its own results.

1. Dose-response: does the gain grow with the mixture weight the way PA does? Per mixture
   dataset trained at two or more weights (same start step, target and model size), the slope
   of the gain against the weight, tested paired by seed (each seed's own slope; a seed is a
   whole tree, so its branches share their pretraining and control), beside the slope of PA.
2. Forgetting: does the mixture's similarity to the pretraining data (C4) predict the C4 loss
   after SFT? The relative C4 loss change over the control against sim(mixture, C4), with the
   same design-respecting statistics as PA (analysis/correlation.py); the expected sign is
   negative (closer to C4, less forgetting).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from proximity.analysis.advantage import pair_advantages
from proximity.analysis.correlation import ALPHA, Settings, relation_statistics
from proximity.analysis.results import seed_matrix
from proximity.stats import StatsOptions

CELL = ["model", "mixture", "start_step", "target"]
"""One dose-response line: a mixture dataset at one start step, for one target and size."""


def _slope(x: pd.Series, y: pd.Series) -> float:
    return float(np.polyfit(x.to_numpy(float), y.to_numpy(float), 1)[0])


def dose_response(midtrain: pd.DataFrame, outcomes: pd.DataFrame) -> dict[str, Any]:
    """Gain vs weight and PA vs weight per cell (CELL) with two or more weights.

    `midtrain` holds the first metric's midtraining pairs (main and ablation branches) with
    `advantage`; `outcomes` the per-seed improvements. A cell agrees when the seed-mean gain
    slope has PA's sign; it is significant when the per-seed slopes differ from 0 (one-sample
    t-test over seeds, n_seeds − 1 degrees of freedom). A domain (model, mixture) `holds` when
    every cell agrees significantly, `does not hold` when every cell goes significantly the
    other way, else `inconclusive`.
    """
    keys = [*CELL, "weight"]
    pa = midtrain.groupby(keys, as_index=False)["advantage"].mean()
    seeds = outcomes[outcomes["branch_kind"] == "midtrain"]
    seeds = seeds.groupby([*keys, "seed"], as_index=False)["improvement"].mean()
    rows = []
    for cell, group in pa.groupby(CELL):
        if group["weight"].nunique() < 2:
            continue
        per_seed = []
        these = seeds.merge(pd.DataFrame([dict(zip(CELL, cell, strict=True))]), on=CELL)
        for _, one in these.groupby("seed"):
            if one["weight"].nunique() >= 2:
                per_seed.append(_slope(one["weight"], one["improvement"]))
        if not per_seed:
            continue
        pa_slope = _slope(group["weight"], group["advantage"])
        gain_slope = float(np.mean(per_seed))
        spread = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
        p = float(stats.ttest_1samp(per_seed, 0.0).pvalue) if len(per_seed) > 1 else None
        p = p if p is None or np.isfinite(p) else None
        rows.append(
            {
                **dict(zip(CELL, cell, strict=True)),
                "weights": sorted(float(w) for w in group["weight"].unique()),
                "pa_slope": pa_slope,
                "gain_slope": gain_slope,
                "gain_slope_seed_std": spread,
                "n_seeds": len(per_seed),
                "p": p,
                "agrees": bool(np.sign(gain_slope) == np.sign(pa_slope)),
                "significant": p is not None and p < ALPHA,
            }
        )
    if not rows:
        return {"verdict": "not tested", "why": "no mixture dataset was trained at two or more "
                "weights with the same start step, target and model size", "cells": [],
                "domains": []}  # fmt: skip
    table = pd.DataFrame(rows)
    domains = []
    for (model, mixture), group in table.groupby(["model", "mixture"]):
        agree = group["agrees"] & group["significant"]
        oppose = ~group["agrees"] & group["significant"]
        word = "inconclusive"
        if agree.all():
            word = "holds"
        elif oppose.all():
            word = "does not hold"
        domains.append(
            {
                "model": model,
                "mixture": mixture,
                "cells": len(group),
                "agree": int(group["agrees"].sum()),
                "agree_significant": int(agree.sum()),
                "against_significant": int(oppose.sum()),
                "mean_gain_slope": float(group["gain_slope"].mean()),
                "mean_pa_slope": float(group["pa_slope"].mean()),
                "verdict": word,
            }
        )
    return {"alpha": ALPHA, "cells": rows, "domains": domains}


def pretrain_similarities(
    outcomes: pd.DataFrame,
    metric: str,
    *,
    tokenizer: str,
    options: StatsOptions,
    mixture: str = "expected",
    data_dir: str | Path | None = None,
    use_cache: bool = True,
) -> pd.DataFrame:
    """sim(mixture, pretraining data) of every trained branch: (pretrain_spec, mixture_spec,
    similarity). The pretraining data itself (the control) is 1 by definition."""
    branches = outcomes[["pretrain_spec", "mixture_spec"]].drop_duplicates()
    wanted = branches.assign(target_spec=branches["pretrain_spec"])
    table = pair_advantages(
        wanted, [metric], tokenizer=tokenizer, options=options, mixture=mixture,
        data_dir=data_dir, use_cache=use_cache,
    )  # fmt: skip
    if table.empty:
        return pd.DataFrame(columns=["pretrain_spec", "mixture_spec", "similarity"])
    return table.rename(columns={"sim_mix_target": "similarity"})[
        ["pretrain_spec", "mixture_spec", "similarity"]
    ]


def forgetting(
    outcomes: pd.DataFrame, similarities: pd.DataFrame, metric: str, settings: Settings
) -> dict[str, Any]:
    """Relative C4 loss change after SFT (seed mean, every non-control branch) against the
    branch's similarity to the pretraining data, per model size and pooled.

    The per-seed changes go to the seed bootstrap, so this verdict, like PA's, needs two or
    more seeds to hold: one training run's C4 losses cannot show that the relation is not noise.
    """
    branches = outcomes[outcomes["branch_kind"] != "control"]
    keys = ["model", "branch_kind", "mixture", "mixture_spec", "pretrain_spec", "weight",
            "start_step", "target"]  # fmt: skip
    points = branches.groupby(keys, as_index=False)["c4_change"].mean()
    points = points.merge(similarities, on=["pretrain_spec", "mixture_spec"], how="inner")
    if points.empty or points["similarity"].nunique() < 2:
        return {"metric": metric, "relations": [], "verdict": "not tested",
                "why": "fewer than two distinct similarities to the pretraining data"}  # fmt: skip
    points = points.rename(columns={"similarity": "advantage", "c4_change": "improvement"})
    groups = [(str(m), g) for m, g in points.groupby("model")]
    if len(groups) > 1:
        groups.append(("pooled", points))
    relations = []
    for model, group in groups:
        group = group.reset_index(drop=True)
        by_seed = seed_matrix(branches, group, value="c4_change", keys=keys)
        result = relation_statistics(group, by_seed, settings, expected_sign=-1)
        shown = group.rename(
            columns={"advantage": "similarity_to_pretrain", "improvement": "c4_change"}
        )
        result.update(
            model=model,
            points=shown[["model", "branch_kind", "mixture", "mixture_spec", "target",
                          "similarity_to_pretrain", "c4_change"]].to_dict(orient="records"),
        )  # fmt: skip
        relations.append(result)
    return {
        "metric": metric,
        "x": "similarity of the branch's training mixture to the pretraining data",
        "y": "(L_c4 − L_c4,control) / L_c4,control after SFT; positive: forgot more",
        "expected_sign": -1,
        "relations": relations,
    }
