"""The paper's four findings, checked on a grid's outcomes with the numbers behind each.

1. Midtraining beats CPT in-domain (lower SFT loss, same mixture and target).
2. Midtraining forgets less than CPT (lower C4 loss after SFT).
3. An earlier start helps more (the ablation's earliest vs latest start, same weight).
4. PA predicts the gain (Pearson r > 0 with p < 0.05, per model size).

Each finding says `holds`, `does not hold` or `not tested` (the grid lacks what it needs),
with the counts and means it rests on; nothing is tuned on these.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from proximity.registry import Registry
from proximity.specs import parse_mixture

ALPHA = 0.05


def domain_of(spec: str, registry: Registry) -> str | None:
    """The registry domain of a single-dataset spec (`code` for pycode), else None."""
    mixture = parse_mixture(spec)
    if mixture.is_mixture:
        return None
    name = mixture.single().source
    return registry.get(name).domain if name in registry else None


def _verdict(wins: int, total: int) -> str:
    if total == 0:
        return "not tested"
    return "holds" if wins > total / 2 else "does not hold"


def midtrain_vs_cpt(outcomes: pd.DataFrame, registry: Registry) -> dict[str, dict[str, Any]]:
    """Findings 1 and 2 from the seed means of the main (non-ablation) branches."""
    main = outcomes[~outcomes["ablation"] & outcomes["branch_kind"].isin(["midtrain", "cpt"])]
    means = main.groupby(["model", "mixture", "target", "branch_kind"])[
        ["sft_val_loss", "c4_val_loss", "improvement"]
    ].mean()
    wide = means.unstack("branch_kind").dropna()
    rows = []
    for (model, mixture, target), row in wide.iterrows():
        specs = main[(main["mixture"] == mixture) & (main["target"] == target)]
        cpt_spec = specs[specs["branch_kind"] == "cpt"]["mixture_spec"].iloc[0]
        target_spec = specs["target_spec"].iloc[0]
        mix_domain = domain_of(cpt_spec, registry)
        rows.append(
            {
                "model": model,
                "mixture": mixture,
                "target": target,
                "in_domain": mix_domain is not None
                and mix_domain == domain_of(target_spec, registry),
                "sft_midtrain": row[("sft_val_loss", "midtrain")],
                "sft_cpt": row[("sft_val_loss", "cpt")],
                "c4_midtrain": row[("c4_val_loss", "midtrain")],
                "c4_cpt": row[("c4_val_loss", "cpt")],
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        empty = {
            "verdict": "not tested",
            "why": "no mixture has both a midtraining and a CPT branch with results",
        }
        return {"midtrain_beats_cpt_in_domain": empty, "less_forgetting_than_cpt": empty}
    in_domain = table[table["in_domain"]]
    scope = "in-domain pairs (mixture and target share a registry domain)"
    if in_domain.empty:
        in_domain, scope = table, "all pairs (no pair shares a registry domain)"
    sft_wins = int((in_domain["sft_midtrain"] < in_domain["sft_cpt"]).sum())
    c4_wins = int((table["c4_midtrain"] < table["c4_cpt"]).sum())
    return {
        "midtrain_beats_cpt_in_domain": {
            "verdict": _verdict(sft_wins, len(in_domain)),
            "wins": sft_wins,
            "pairs": len(in_domain),
            "scope": scope,
            "mean_sft_loss_midtrain": float(in_domain["sft_midtrain"].mean()),
            "mean_sft_loss_cpt": float(in_domain["sft_cpt"].mean()),
            "rows": in_domain.to_dict(orient="records"),
        },
        "less_forgetting_than_cpt": {
            "verdict": _verdict(c4_wins, len(table)),
            "wins": c4_wins,
            "pairs": len(table),
            "scope": "all (mixture, target) pairs",
            "mean_c4_loss_midtrain": float(table["c4_midtrain"].mean()),
            "mean_c4_loss_cpt": float(table["c4_cpt"].mean()),
        },
    }


def earlier_start(outcomes: pd.DataFrame) -> dict[str, Any]:
    """Finding 3: improvement at the earliest vs the latest start step, same weight."""
    mid = outcomes[outcomes["branch_kind"] == "midtrain"]
    means = mid.groupby(["model", "mixture", "weight", "target", "start_step"])[
        "improvement"
    ].mean()
    rows = []
    for key, series in means.groupby(level=[0, 1, 2, 3]):
        steps = series.index.get_level_values("start_step")
        if steps.nunique() < 2:
            continue
        early, late = series.iloc[steps.argmin()], series.iloc[steps.argmax()]
        rows.append(
            {
                "model": key[0],
                "mixture": key[1],
                "weight": key[2],
                "target": key[3],
                "earliest_step": int(steps.min()),
                "latest_step": int(steps.max()),
                "improvement_earliest": float(early),
                "improvement_latest": float(late),
            }
        )
    if not rows:
        return {
            "verdict": "not tested",
            "why": "no mixture at one weight was started from two or more steps",
        }
    table = pd.DataFrame(rows)
    wins = int((table["improvement_earliest"] > table["improvement_latest"]).sum())
    return {
        "verdict": _verdict(wins, len(table)),
        "wins": wins,
        "pairs": len(table),
        "mean_improvement_earliest": float(table["improvement_earliest"].mean()),
        "mean_improvement_latest": float(table["improvement_latest"].mean()),
        "rows": rows,
    }


def pa_predicts(statistics: dict[str, Any]) -> dict[str, Any]:
    """Finding 4, per model size, for the first metric asked (the paper's by default)."""
    metric = statistics["inputs"]["metrics"][0]
    per_model = {}
    for relation in statistics["relations"]:
        if relation["metric"] != metric:
            continue
        p = relation["pearson"]
        if p["r"] is None:
            per_model[relation["model"]] = {"verdict": "not tested", "n": relation["n_pairs"]}
            continue
        holds = p["r"] > 0 and p["p"] < ALPHA
        per_model[relation["model"]] = {
            "verdict": "holds" if holds else "does not hold",
            "r": p["r"],
            "ci_low": p["ci_low"],
            "ci_high": p["ci_high"],
            "p": p["p"],
            "permutation_p": relation["permutation_p"],
            "n": relation["n_pairs"],
            "within_target_r": relation["within_target"]["r"],
            # One far pair can carry r: r and p without the pair whose removal lowers r most.
            "without_most_influential": (relation.get("leave_one_pair_out") or {}).get(
                "most_influential"
            ),
        }
    return {"metric": metric, "alpha": ALPHA, "models": per_model}


def paper_findings(outcomes: pd.DataFrame, statistics: dict[str, Any]) -> dict[str, Any]:
    registry = Registry.load()
    return {
        **midtrain_vs_cpt(outcomes, registry),
        "earlier_start_helps_more": earlier_start(outcomes),
        "pa_predicts_gains": pa_predicts(statistics),
    }
