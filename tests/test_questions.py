"""Paired-by-seed findings and the two questions beyond the paper, on hand-built tables whose
answers are worked out here independently."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from proximity.analysis.correlation import Settings
from proximity.analysis.findings import earlier_start, paired_by_seed
from proximity.analysis.questions import dose_response, forgetting


def _t_p(values: list[float]) -> float:
    """Two-sided one-sample t-test p by hand: t = mean / (s / √n), n − 1 df."""
    v = np.asarray(values, float)
    t = v.mean() / (v.std(ddof=1) / np.sqrt(len(v)))
    return float(2 * stats.t.sf(abs(t), len(v) - 1))


def test_paired_by_seed_tests_each_seeds_mean_difference_and_every_leave_one_out():
    # Two comparisons × three seeds; a seed's difference is its mean over the comparisons.
    table = pd.DataFrame(
        {
            "comparison": ["a"] * 3 + ["b"] * 3,
            "model": "m",
            "seed": [0, 1, 2] * 2,
            "difference": [0.30, 0.20, 0.25, 0.10, 0.12, 0.05],
        }
    )
    per_seed = [(0.30 + 0.10) / 2, (0.20 + 0.12) / 2, (0.25 + 0.05) / 2]
    got = paired_by_seed(table)
    assert got["mean_difference"] == pytest.approx(np.mean(per_seed))
    assert got["p"] == pytest.approx(_t_p(per_seed), rel=1e-9)
    assert got["n_seeds"] == 3 and got["n_comparisons"] == 2
    without_a = next(w for w in got["without_one"] if w["comparison"] == "a")
    assert without_a["p"] == pytest.approx(_t_p([0.10, 0.12, 0.05]), rel=1e-9)
    assert got["verdict"] == "holds"  # p ≈ 0.01, and 0.02 / 0.03 without either comparison
    flipped = paired_by_seed(table.assign(difference=-table["difference"]))
    assert flipped["verdict"] == "does not hold"
    one_seed = paired_by_seed(table[table["seed"] == 0])
    assert one_seed["verdict"] == "inconclusive" and one_seed["p"] is None
    # One comparison carries it: significant overall, not without "a".
    carried = table.assign(difference=[0.30, 0.31, 0.29, 0.05, -0.04, 0.01])
    assert paired_by_seed(carried)["verdict"] == "inconclusive"


def _ablation(gain: dict[tuple[int, float], list[float]]) -> pd.DataFrame:
    """Midtraining outcomes of one mixture and target at (start step, weight) cells; the run
    ends at step 300, so a branch from step s sees (300 − s)·100 midtraining tokens."""
    rows = []
    for (step, weight), by_seed in gain.items():
        for seed, improvement in enumerate(by_seed):
            rows.append(
                {
                    "model": "m",
                    "branch_kind": "midtrain",
                    "mixture": "code",
                    "target": "pycode",
                    "start_step": step,
                    "weight": weight,
                    "seed": seed,
                    "improvement": improvement,
                    "tokens_midtrain": (300 - step) * 100,
                    "ablation": True,
                }
            )
    return pd.DataFrame(rows)


def test_earlier_start_compares_at_the_same_weight_and_at_equal_specialised_tokens():
    # Step 100 at 20% sees 200·100·0.2 = 4,000 specialised tokens; step 200 at 40% sees
    # 100·100·0.4 = 4,000: equal. Step 100 vs 200 at 20% (4,000 vs 2,000) is not.
    outcomes = _ablation(
        {
            (100, 0.2): [0.050, 0.052, 0.049],
            (200, 0.2): [0.030, 0.033, 0.031],
            (200, 0.4): [0.060, 0.058, 0.061],  # more weight, later: better than early 20%
        }
    )
    got = earlier_start(outcomes)
    same = got["same_weight"]
    assert same["n_comparisons"] == 1
    assert same["p"] == pytest.approx(_t_p([0.020, 0.019, 0.018]), rel=1e-9)
    assert same["verdict"] == "holds"
    equal = got["equal_tokens"]
    assert [m["tokens_earlier"] for m in equal["matched"]] == [4000.0]
    assert equal["p"] == pytest.approx(_t_p([-0.010, -0.006, -0.012]), rel=1e-9)
    assert equal["verdict"] == "does not hold"
    assert got["verdict"] == "does not hold"  # timing, not tokens, is the claim


def test_dose_response_slopes_are_per_seed_and_compared_with_pas():
    midtrain = pd.DataFrame(
        {
            "model": "m", "mixture": "code", "start_step": 100,
            "target": ["pycode", "pycode", "lima", "lima"],
            "weight": [0.1, 0.5, 0.1, 0.5],
            "advantage": [0.02, 0.06, 0.01, -0.01],  # PA rises for pycode, falls for lima
        }
    )  # fmt: skip
    rows = []
    gains = {"pycode": ([0.010, 0.012, 0.011], [0.050, 0.046, 0.049]),
             "lima": ([0.004, 0.006, 0.005], [0.009, 0.012, 0.010])}  # fmt: skip
    for target, (low, high) in gains.items():
        for weight, values in ((0.1, low), (0.5, high)):
            for seed, value in enumerate(values):
                rows.append({"model": "m", "branch_kind": "midtrain", "mixture": "code",
                             "start_step": 100, "target": target, "weight": weight,
                             "seed": seed, "improvement": value})  # fmt: skip
    got = dose_response(midtrain, pd.DataFrame(rows))
    cells = {c["target"]: c for c in got["cells"]}
    slopes = [(h - lo) / 0.4 for lo, h in zip(*gains["pycode"], strict=True)]
    assert cells["pycode"]["gain_slope"] == pytest.approx(np.mean(slopes))
    assert cells["pycode"]["p"] == pytest.approx(_t_p(slopes), rel=1e-9)
    assert cells["pycode"]["pa_slope"] == pytest.approx(0.1)
    assert cells["pycode"]["agrees"] and not cells["lima"]["agrees"]
    (domain,) = got["domains"]
    assert domain["cells"] == 2 and domain["agree"] == 1 and domain["verdict"] == "inconclusive"
    one_weight = dose_response(midtrain[midtrain["weight"] == 0.1], pd.DataFrame(rows))
    assert one_weight["verdict"] == "not tested"


def test_forgetting_relates_seed_mean_c4_change_to_similarity_with_the_pretraining_data():
    rng = np.random.default_rng(0)
    targets, mixtures = [f"t{i}" for i in range(5)], [f"m{i}" for i in range(6)]
    similarity = dict(zip(mixtures, np.linspace(0.5, 0.9, 6), strict=True))
    rows = []
    for target in targets:
        level = rng.normal(0, 0.01)
        for mixture in mixtures:
            for kind, scale in (("midtrain", 1.0), ("cpt", 2.0)):
                for seed in range(3):
                    rows.append({
                        "model": "m", "branch_kind": kind, "mixture": mixture,
                        "mixture_spec": f"{mixture}-{kind}", "pretrain_spec": "c4", "weight": 0.2,
                        "start_step": 100, "target": target, "seed": seed,
                        "c4_change": level + scale * (1 - similarity[mixture]) * 0.1
                        + rng.normal(0, 0.002),
                    })  # fmt: skip
    outcomes = pd.DataFrame(rows)
    sims = pd.DataFrame(
        {
            "pretrain_spec": "c4",
            "mixture_spec": [f"{m}-{k}" for m in mixtures for k in ("midtrain", "cpt")],
            "similarity": [similarity[m] - (0.3 if k == "cpt" else 0.0)
                           for m in mixtures for k in ("midtrain", "cpt")],
        }
    )  # fmt: skip
    got = forgetting(outcomes, sims, "paper", Settings(n_permutations=499, n_bootstrap=300))
    (relation,) = got["relations"]
    means = outcomes.groupby(["mixture_spec", "target"], as_index=False)["c4_change"].mean()
    means = means.merge(sims, on="mixture_spec")
    r = stats.pearsonr(means["similarity"], means["c4_change"]).statistic
    assert relation["pearson"]["r"] == pytest.approx(r, abs=1e-12)
    assert relation["n_pairs"] == 60
    assert relation["verdict"]["expected_sign"] == -1
    assert relation["verdict"]["verdict"] == "holds"  # closer to C4, less forgetting
    assert relation["bootstrap_seeds"]["n_seeds"] == 3
    assert relation["bootstrap_seeds"]["ci_high"] < 0  # every seed shows the same relation

    # One seed: the same relation, but one training run cannot show it is not noise.
    one = forgetting(outcomes[outcomes["seed"] == 0], sims, "paper",
                     Settings(n_permutations=499, n_bootstrap=300))["relations"][0]  # fmt: skip
    assert one["bootstrap_seeds"]["n_seeds"] == 1 and one["bootstrap_seeds"]["ci_low"] is None
    assert one["verdict"]["failed"] == ["seed_bootstrap"]
    assert one["verdict"]["verdict"] == "inconclusive"
