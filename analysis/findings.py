"""The paper's four findings, checked on a grid's outcomes with the numbers behind each.

1. Midtraining beats CPT in-domain (lower SFT loss, same mixture and target).
2. Midtraining forgets less than CPT (lower C4 loss after SFT).
3. An earlier start helps more (the ablation's earliest vs latest start, same weight; and at
   equal specialised tokens, since an earlier start at one weight also sees more of them).
4. PA predicts the gain (per model size and pooled; analysis/correlation.py's `verdict`).

Findings 1-3 compare paired runs: the two branches of one comparison share their seed's
pretraining and control, so they are tested paired by seed. The unit is a (model, seed): the
seed's mean difference over the comparisons, one-sample t-test over seeds (n − 1 degrees of
freedom). A finding `holds` when that test is significant in its favour and stays so without
any single comparison; `does not hold` when it is significant against it; `inconclusive`
otherwise (one seed is always inconclusive: no paired test); `not tested` when the grid lacks
what it needs. Nothing is tuned on these.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from proximity.analysis.correlation import ALPHA
from proximity.registry import Registry
from proximity.specs import parse_mixture

EQUAL_TOKENS_TOLERANCE = 0.25
"""Two cells count as "equal specialised tokens" when their counts differ by at most this
share of the larger (weight × midtraining tokens)."""


def domain_of(spec: str, registry: Registry) -> str | None:
    """The registry domain of a single-dataset spec (`code` for pycode), else None."""
    mixture = parse_mixture(spec)
    if mixture.is_mixture:
        return None
    name = mixture.single().source
    return registry.get(name).domain if name in registry else None


def _seed_test(differences: pd.Series) -> tuple[float | None, float | None, int]:
    """Mean of per-seed differences, its one-sample t-test p, and the number of seeds."""
    values = differences.to_numpy(float)
    if len(values) < 2:
        return (float(values.mean()) if len(values) else None), None, len(values)
    if np.ptp(values) == 0:  # identical seeds: no spread, the sign is certain or it is 0
        return float(values[0]), (0.0 if values[0] != 0 else 1.0), len(values)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # near-identical seeds
        p = float(stats.ttest_1samp(values, 0.0).pvalue)
    return float(values.mean()), p, len(values)


def paired_by_seed(table: pd.DataFrame) -> dict[str, Any]:
    """The paired-by-seed test of a finding. `table`: one row per (comparison, model, seed)
    with `difference` > 0 where the seed's run favours the finding.

    Returns the verdict with the mean difference, p, seeds, and the test without each single
    comparison (the verdict must survive removing any one)."""
    unit = ["model", "seed"]
    mean, p, n_seeds = _seed_test(table.groupby(unit)["difference"].mean())
    without = []
    comparisons = list(pd.unique(table["comparison"]))
    if len(comparisons) > 1:
        for name in comparisons:
            rest = table[table["comparison"] != name]
            m, q, _ = _seed_test(rest.groupby(unit)["difference"].mean())
            without.append({"comparison": name, "mean_difference": m, "p": q})
    result = {"mean_difference": mean, "p": p, "n_seeds": n_seeds,
              "n_comparisons": len(comparisons), "without_one": without}  # fmt: skip
    if len(comparisons) == 1:
        result["note"] = "one comparison: nothing to leave out"
    if p is None:
        return {**result, "verdict": "inconclusive", "why": "one seed: no paired test"}
    survives = all(w["p"] is not None and w["p"] < ALPHA and w["mean_difference"] > 0
                   for w in without)  # fmt: skip
    if mean > 0 and p < ALPHA and survives:
        word = "holds"
    elif mean < 0 and p < ALPHA:
        word = "does not hold"
    else:
        word = "inconclusive"
    return {**result, "verdict": word}


def _label(row: Any, *columns: str) -> str:
    return " ".join(str(getattr(row, c)) for c in columns)


def midtrain_vs_cpt(outcomes: pd.DataFrame, registry: Registry) -> dict[str, dict[str, Any]]:
    """Findings 1 and 2, paired by seed: midtraining vs CPT of the same mixture and target."""
    main = outcomes[~outcomes["ablation"] & outcomes["branch_kind"].isin(["midtrain", "cpt"])]
    keys = ["model", "mixture", "target", "seed"]
    wide = main.pivot_table(
        index=keys, columns="branch_kind", values=["sft_val_loss", "c4_val_loss"], aggfunc="mean"
    ).dropna()
    empty = {
        "verdict": "not tested",
        "why": "no mixture has both a midtraining and a CPT branch with results",
    }
    if wide.empty or ("sft_val_loss", "cpt") not in wide.columns:
        return {"midtrain_beats_cpt_in_domain": empty, "less_forgetting_than_cpt": empty}
    runs = pd.DataFrame(
        {
            "sft_midtrain": wide[("sft_val_loss", "midtrain")],
            "sft_cpt": wide[("sft_val_loss", "cpt")],
            "c4_midtrain": wide[("c4_val_loss", "midtrain")],
            "c4_cpt": wide[("c4_val_loss", "cpt")],
        }
    ).reset_index()
    domains = {}
    for row in main.drop_duplicates(["mixture", "target"]).itertuples():
        cpt = main[(main["mixture"] == row.mixture) & (main["branch_kind"] == "cpt")]
        spec = cpt["mixture_spec"].iloc[0] if len(cpt) else None
        mix_domain = domain_of(spec, registry) if spec else None
        domains[(row.mixture, row.target)] = mix_domain is not None and mix_domain == domain_of(
            row.target_spec, registry
        )
    runs["in_domain"] = [
        domains.get((m, t), False) for m, t in zip(runs["mixture"], runs["target"], strict=True)
    ]
    runs["comparison"] = [_label(r, "model", "mixture", "target") for r in runs.itertuples()]
    means = (
        runs.drop(columns="seed")
        .groupby(["model", "mixture", "target"], as_index=False)
        .mean(numeric_only=True)
    )
    means["in_domain"] = means["in_domain"].astype(bool)
    in_domain, scope = (
        runs[runs["in_domain"]],
        "in-domain pairs (mixture and target share a registry domain)",
    )
    if in_domain.empty:
        in_domain, scope = runs, "all pairs (no pair shares a registry domain)"
    pairs_in = means[means["in_domain"]] if means["in_domain"].any() else means
    sft = paired_by_seed(
        in_domain.assign(difference=in_domain["sft_cpt"] - in_domain["sft_midtrain"])
    )
    c4 = paired_by_seed(runs.assign(difference=runs["c4_cpt"] - runs["c4_midtrain"]))
    return {
        "midtrain_beats_cpt_in_domain": {
            **sft,
            "wins": int((pairs_in["sft_midtrain"] < pairs_in["sft_cpt"]).sum()),
            "pairs": len(pairs_in),
            "scope": scope,
            "mean_sft_loss_midtrain": float(pairs_in["sft_midtrain"].mean()),
            "mean_sft_loss_cpt": float(pairs_in["sft_cpt"].mean()),
            "rows": pairs_in.to_dict(orient="records"),
        },
        "less_forgetting_than_cpt": {
            **c4,
            "wins": int((means["c4_midtrain"] < means["c4_cpt"]).sum()),
            "pairs": len(means),
            "scope": "all (mixture, target) pairs",
            "mean_c4_loss_midtrain": float(means["c4_midtrain"].mean()),
            "mean_c4_loss_cpt": float(means["c4_cpt"].mean()),
        },
    }


def _cells(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Midtraining improvement per (model, mixture, target, start step, weight, seed), with
    the specialised tokens the branch saw (weight × its midtraining tokens)."""
    mid = outcomes[outcomes["branch_kind"] == "midtrain"].copy()
    if "tokens_midtrain" in mid:
        mid["specialised_tokens"] = mid["weight"] * mid["tokens_midtrain"]
    else:
        mid["specialised_tokens"] = np.nan
    keys = ["model", "mixture", "target", "start_step", "weight", "seed"]
    return mid.groupby(keys, as_index=False)[["improvement", "specialised_tokens"]].mean()


def _same_weight(cells: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for key, group in cells.groupby(["model", "mixture", "weight", "target"]):
        steps = group["start_step"]
        if steps.nunique() < 2:
            continue
        early = group[steps == steps.min()].set_index("seed")["improvement"]
        late = group[steps == steps.max()].set_index("seed")["improvement"]
        both = early.index.intersection(late.index)
        label = f"{key[0]} {key[1]} {key[2]:.0%} → {key[3]}: step {steps.min()} vs {steps.max()}"
        for seed in both:
            rows.append({"comparison": label, "model": key[0], "seed": seed,
                         "difference": early[seed] - late[seed]})  # fmt: skip
    return pd.DataFrame(rows, columns=["comparison", "model", "seed", "difference"])


def _equal_tokens(cells: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Earlier vs later start at (about) the same specialised tokens: other weights."""
    rows, matched = [], []
    per_cell = cells.groupby(["model", "mixture", "target", "start_step", "weight"], as_index=False)
    tokens = per_cell["specialised_tokens"].mean()
    for (model, mixture, target), group in tokens.groupby(["model", "mixture", "target"]):
        for a in group.itertuples():
            for b in group.itertuples():
                if not a.start_step < b.start_step:
                    continue
                larger = max(a.specialised_tokens, b.specialised_tokens)
                if not larger > 0 or abs(a.specialised_tokens - b.specialised_tokens) > (
                    EQUAL_TOKENS_TOLERANCE * larger
                ):
                    continue
                label = (f"{model} {mixture} → {target}: step {a.start_step} at {a.weight:.0%} vs "
                         f"step {b.start_step} at {b.weight:.0%}")  # fmt: skip
                matched.append({"comparison": label, "tokens_earlier": float(a.specialised_tokens),
                                "tokens_later": float(b.specialised_tokens)})  # fmt: skip
                mine = cells[(cells["model"] == model) & (cells["mixture"] == mixture)
                             & (cells["target"] == target)]  # fmt: skip
                early = mine[(mine["start_step"] == a.start_step) & (mine["weight"] == a.weight)]
                late = mine[(mine["start_step"] == b.start_step) & (mine["weight"] == b.weight)]
                paired = early.merge(late, on="seed", suffixes=("_early", "_late"))
                gains = paired["improvement_early"] - paired["improvement_late"]
                for seed, difference in zip(paired["seed"], gains, strict=True):
                    rows.append({"comparison": label, "model": model, "seed": seed,
                                 "difference": difference})  # fmt: skip
    return pd.DataFrame(rows, columns=["comparison", "model", "seed", "difference"]), matched


def earlier_start(outcomes: pd.DataFrame) -> dict[str, Any]:
    """Finding 3: improvement at the earliest vs the latest start step, paired by seed, at the
    same weight and at equal specialised tokens. It holds only when both tests hold (at the
    same weight an earlier start also sees more specialised tokens), does not hold when the
    equal-token test goes against it, and is inconclusive otherwise."""
    cells = _cells(outcomes)
    same = _same_weight(cells)
    if same.empty:
        return {
            "verdict": "not tested",
            "why": "no mixture at one weight was started from two or more steps",
        }
    by_comparison = same.groupby("comparison")["difference"].mean()
    same_weight = {**paired_by_seed(same), "wins": int((by_comparison > 0).sum()),
                   "pairs": len(by_comparison)}  # fmt: skip
    equal, matched = _equal_tokens(cells)
    if equal.empty:
        at_equal = {"verdict": "not tested", "why": "no earlier and later start with specialised "
                    f"tokens within {EQUAL_TOKENS_TOLERANCE:.0%} of each other"}  # fmt: skip
    else:
        at_equal = {**paired_by_seed(equal), "matched": matched}
    words = (same_weight["verdict"], at_equal["verdict"])
    if words == ("holds", "holds"):
        word = "holds"
    elif at_equal["verdict"] == "does not hold" or words == ("does not hold", "not tested"):
        word = "does not hold"
    else:
        word = "inconclusive"
    return {
        "verdict": word,
        "same_weight": same_weight,
        "equal_tokens": at_equal,
        "wins": same_weight["wins"],
        "pairs": same_weight["pairs"],
        "mean_improvement_earliest": _mean_at(cells, "min"),
        "mean_improvement_latest": _mean_at(cells, "max"),
    }


def _mean_at(cells: pd.DataFrame, which: str) -> float:
    """Mean improvement at each (model, mixture, weight, target)'s earliest or latest start."""
    keys = ["model", "mixture", "weight", "target"]
    steps = cells.groupby(keys)["start_step"].transform(which)
    several = cells.groupby(keys)["start_step"].transform("nunique") > 1
    return float(cells[(cells["start_step"] == steps) & several]["improvement"].mean())


def pa_predicts(statistics: dict[str, Any]) -> dict[str, Any]:
    """Finding 4, per model size and pooled, for the first metric asked (the paper's by
    default): the verdict of analysis/correlation.py, with the numbers it rests on."""
    metric = statistics["inputs"]["metrics"][0]
    per_model = {}
    for relation in statistics["relations"]:
        if relation["metric"] != metric:
            continue
        p = relation["pearson"]
        if p["r"] is None:
            per_model[relation["model"]] = {"verdict": "not tested", "n": relation["n_pairs"]}
            continue
        word = relation.get("verdict") or {"verdict": "inconclusive", "failed": ["(old file)"]}
        boot = relation.get("bootstrap_two_way") or {}
        per_model[relation["model"]] = {
            "verdict": word["verdict"],
            "failed": word.get("failed", []),
            "r": p["r"],
            "ci_low": p["ci_low"],
            "ci_high": p["ci_high"],
            "p": p["p"],
            "permutation_p": relation["permutation_p"],
            "permutation_within_targets_p": (relation.get("permutation_within_targets") or {}).get(
                "p"
            ),
            "permutation_within_mixtures_p": (
                relation.get("permutation_within_mixtures") or {}
            ).get("p"),
            "two_way_ci_low": boot.get("ci_low"),
            "two_way_ci_high": boot.get("ci_high"),
            "n": relation["n_pairs"],
            "pa_std": relation.get("pa_std"),
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
