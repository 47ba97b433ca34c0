"""Statistics that respect the crossed targets × mixtures design, each against an independent
computation: an exact enumeration, a replicated sample, or a simulation with a known answer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from proximity.analysis.correlation import (
    Settings,
    _weighted_r,
    bootstrap_pairs,
    bootstrap_two_way,
    effective_dof,
    held_out_target_coverage,
    leave_one_pair_out,
    new_target_interval,
    relation_statistics,
    stratified_permutation,
    verdict,
)
from proximity.analysis.recommend import prediction_interval


def _crossed(n_targets: int, n_mixtures: int) -> tuple[np.ndarray, np.ndarray]:
    return np.repeat(np.arange(n_targets), n_mixtures), np.tile(np.arange(n_mixtures), n_targets)


def test_stratified_permutation_p_is_the_exact_share_of_within_stratum_shuffles():
    """Two strata of three: all 6 × 6 = 36 within-stratum shuffles enumerated by hand."""
    rng = np.random.default_rng(0)
    strata = np.array(["a", "a", "a", "b", "b", "b"])
    x = rng.normal(size=6) + np.r_[0, 0, 0, 2, 2, 2]
    y = 0.5 * x + rng.normal(size=6)

    def r_within(values: np.ndarray) -> float:
        xc = x - pd.Series(x).groupby(strata).transform("mean").to_numpy()
        yc = values - pd.Series(values).groupby(strata).transform("mean").to_numpy()
        return np.corrcoef(xc, yc)[0, 1]

    observed = abs(r_within(y))
    shuffles = [
        np.r_[y[:3][list(p)], y[3:][list(q)]]
        for p in itertools.permutations(range(3))
        for q in itertools.permutations(range(3))
    ]
    exact = np.mean([abs(r_within(v)) >= observed - 1e-12 for v in shuffles])
    got = stratified_permutation(x, y, strata, Settings(n_permutations=20000))
    assert got["r_within"] == pytest.approx(r_within(y), abs=1e-12)
    assert got["p"] == pytest.approx(exact, abs=0.01)
    flat = stratified_permutation(np.r_[0, 0, 0, 1, 1, 1.0], y, strata)
    assert not flat["applicable"] and flat["p"] is None  # x constant within each stratum


@pytest.mark.parametrize("stratify_by", ["target", "mixture"])
def test_stratified_permutation_is_uniform_under_no_slope_while_the_naive_test_over_rejects(
    stratify_by: str,
):
    """No true slope, strong target and mixture effects on the outcome, and PA made by the
    stratifying factor (plus pair noise): the naive test treats 30 pairs as independent and
    rejects far more often than 5%; the stratified permutation rejects at 5% within sampling
    error (200 datasets: ±3 binomial SE is ±0.046)."""
    rng = np.random.default_rng(1)
    target, mixture = _crossed(5, 6)
    strata = target if stratify_by == "target" else mixture
    n_data, naive, stratified, ps = 200, 0, 0, []
    for _ in range(n_data):
        x = 3 * rng.normal(size=strata.max() + 1)[strata] + rng.normal(size=30)
        y = 3 * rng.normal(size=5)[target] + 3 * rng.normal(size=6)[mixture] + rng.normal(size=30)
        naive += stats.pearsonr(x, y).pvalue < 0.05
        p = stratified_permutation(x, y, strata, Settings(n_permutations=199, seed=_))["p"]
        ps.append(p)
        stratified += p < 0.05
    assert abs(stratified / n_data - 0.05) <= 0.046
    assert naive / n_data > 0.15  # three times the nominal rate and more
    assert stats.kstest(ps, "uniform").pvalue > 0.01  # the whole p distribution, not one cut


def test_weighted_r_is_r_of_the_replicated_sample():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=7), rng.normal(size=7)
    counts = np.array([[0, 2, 1, 3, 0, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    for row, got in zip(counts, _weighted_r(x, y, counts.astype(float)), strict=True):
        assert got == pytest.approx(np.corrcoef(np.repeat(x, row), np.repeat(y, row))[0, 1])


def test_two_way_bootstrap_matches_a_hand_pigeonhole_bootstrap():
    """Draw targets and mixtures by hand, build every drawn (target, mixture) pair, take r."""
    rng = np.random.default_rng(3)
    target, mixture = _crossed(4, 5)
    x = rng.normal(size=4)[target] + rng.normal(size=5)[mixture] + rng.normal(size=20)
    y = 0.6 * x + rng.normal(size=20)
    got = bootstrap_two_way(x, y, target, mixture, Settings(n_bootstrap=4000))
    index = {(t, m): i for i, (t, m) in enumerate(zip(target, mixture, strict=True))}
    rs = []
    for _ in range(4000):
        ts, ms = rng.integers(0, 4, 4), rng.integers(0, 5, 5)
        chosen = [index[(t, m)] for t in ts for m in ms]
        if np.ptp(x[chosen]) > 0:
            rs.append(np.corrcoef(x[chosen], y[chosen])[0, 1])
    low, high = np.quantile(rs, [0.025, 0.975])
    assert got["ci_low"] == pytest.approx(low, abs=0.05)
    assert got["ci_high"] == pytest.approx(high, abs=0.05)


def test_two_way_bootstrap_covers_a_known_correlation_where_the_pair_bootstrap_does_not():
    """Target, mixture and pair components each correlated 0.5 with equal variances: the
    population r is 0.5. Over 100 simulated 6 × 8 designs the two-way interval covers it at
    about its nominal 95%; the pair bootstrap, which treats the pairs as independent, falls
    well short."""
    rng = np.random.default_rng(4)
    target, mixture = _crossed(6, 8)
    cov = [[1.0, 0.5], [0.5, 1.0]]
    two_way = pairs = 0
    trials = 100
    for k in range(trials):
        xy = (
            rng.multivariate_normal([0, 0], cov, 6)[target]
            + rng.multivariate_normal([0, 0], cov, 8)[mixture]
            + rng.multivariate_normal([0, 0], cov, 48)
        )
        settings = Settings(n_bootstrap=400, seed=k)
        b = bootstrap_two_way(xy[:, 0], xy[:, 1], target, mixture, settings)
        two_way += b["ci_low"] <= 0.5 <= b["ci_high"]
        b = bootstrap_pairs(xy[:, 0], xy[:, 1], settings)
        pairs += b["ci_low"] <= 0.5 <= b["ci_high"]
    assert two_way / trials >= 0.88
    assert pairs / trials < two_way / trials - 0.08


def test_leave_one_pair_out_reports_the_largest_p_and_the_pair_that_moves_r_most():
    rng = np.random.default_rng(5)
    x = np.append(rng.normal(0.0, 1.0, size=9), -4.0)
    y = np.append(x[:9] + rng.normal(0.0, 0.5, size=9), 4.0)  # one pair against the rest
    got = leave_one_pair_out(x, y, [f"p{i}" for i in range(10)])
    fits = [stats.pearsonr(np.delete(x, i), np.delete(y, i)) for i in range(10)]
    full = np.corrcoef(x, y)[0, 1]
    moves = [abs(f.statistic - full) for f in fits]
    assert got["most_moving"]["pair"] == "p9"
    assert got["most_moving"]["pair"] == f"p{int(np.argmax(moves))}"
    assert got["p_max"] == pytest.approx(max(f.pvalue for f in fits), rel=1e-9)
    assert got["abs_r_min"] == pytest.approx(min(abs(f.statistic) for f in fits), rel=1e-9)
    assert got["most_influential"]["pair"] != "p9"  # removing p9 raises r, it lowers none


def _design(slope: float, rng: np.random.Generator, n_t: int = 6, n_m: int = 12) -> pd.DataFrame:
    target, mixture = _crossed(n_t, n_m)
    x = rng.normal(0, 0.03, n_t)[target] + rng.normal(0, 0.03, n_m)[mixture]
    x = x + rng.normal(0, 0.02, n_t * n_m)
    y = slope * x + rng.normal(0, 0.002, n_t * n_m)
    return pd.DataFrame(
        {
            "advantage": x,
            "improvement": y,
            "target": [f"t{t}" for t in target],
            "mixture": [f"m{m}" for m in mixture],
        }
    )


def test_verdict_holds_fails_or_is_inconclusive_as_the_evidence_says():
    rng = np.random.default_rng(6)
    settings = Settings(n_permutations=999, n_bootstrap=500)
    strong = relation_statistics(_design(0.5, rng), settings=settings)
    assert strong["verdict"]["verdict"] == "holds" and not strong["verdict"]["failed"]
    against = relation_statistics(_design(-0.5, rng), settings=settings)
    assert against["verdict"]["verdict"] == "does not hold"
    # The micro grid's shape: no slope among 19 pairs, one far pair makes r.
    one_far = _design(0.0, rng, n_t=4, n_m=5)
    one_far.loc[0, ["advantage", "improvement"]] = [0.3, 0.2]
    result = relation_statistics(one_far, settings=settings)
    assert result["pearson"]["r"] > 0.8 and result["pearson"]["p"] < 0.05
    assert result["verdict"]["verdict"] == "inconclusive"
    assert "leave_one_pair_out" in result["verdict"]["failed"]


def test_a_test_that_cannot_vary_x_within_its_strata_is_skipped_not_failed():
    relation = {
        "pearson": {"r": -0.9, "p": 0.001},
        "bootstrap_two_way": {"ci_low": -0.99, "ci_high": -0.5},
        "leave_one_pair_out": {"r_min": -0.95, "r_max": -0.8, "p_max": 0.01},
        "permutation_within_targets": {"applicable": True, "p": 0.01, "r_within": -0.7},
        "permutation_within_mixtures": {"applicable": False, "p": None, "r_within": None},
    }
    got = verdict(relation, expected_sign=-1)
    assert got["verdict"] == "holds" and "permutation_within_mixtures" not in got["tests"]
    assert verdict(relation, expected_sign=1)["verdict"] == "does not hold"


def test_pairs_of_one_dataset_at_two_weights_are_named_with_their_weight():
    rng = np.random.default_rng(3)
    points = _design(0.5, rng, n_t=4, n_m=6)
    points["weight"] = np.where(points["mixture"].isin(["m0", "m1", "m2"]), 0.1, 0.4)
    points["mixture"] = points["mixture"].replace({"m3": "m0", "m4": "m1", "m5": "m2"})
    points.loc[0, ["advantage", "improvement"]] = [0.5, 0.4]  # m0 at 10% -> t0 moves r most
    result = relation_statistics(points, settings=Settings(n_permutations=99, n_bootstrap=50))
    assert result["leave_one_pair_out"]["most_moving"]["pair"] == "m0 10% → t0"
    single = _design(0.5, rng, n_t=3, n_m=3).assign(weight=0.2)  # one weight each: no suffix
    lopo = relation_statistics(single, settings=Settings(n_permutations=99, n_bootstrap=50))
    assert " → " in lopo["leave_one_pair_out"]["most_moving"]["pair"]
    assert "%" not in lopo["leave_one_pair_out"]["most_moving"]["pair"]


def test_one_seed_is_never_enough_to_say_holds():
    """Every pair-level test passes, but a single seed cannot show that r is not one training
    run's noise: the seed bootstrap has no interval, so the verdict is inconclusive; with two
    seeds whose interval excludes 0 the same relation holds."""
    relation = {
        "pearson": {"r": 0.7, "p": 1e-6},
        "bootstrap_two_way": {"ci_low": 0.2, "ci_high": 0.9},
        "leave_one_pair_out": {"r_min": 0.6, "r_max": 0.75, "p_max": 1e-5},
        "permutation_within_targets": {"applicable": True, "p": 0.001, "r_within": 0.6},
        "permutation_within_mixtures": {"applicable": True, "p": 0.001, "r_within": 0.6},
        "bootstrap_seeds": {"ci_low": None, "ci_high": None, "n_resamples": 0, "n_seeds": 1},
    }
    got = verdict(relation)
    assert got["verdict"] == "inconclusive" and got["failed"] == ["seed_bootstrap"]
    relation["bootstrap_seeds"] = {"ci_low": 0.5, "ci_high": 0.8, "n_resamples": 500, "n_seeds": 2}
    assert verdict(relation)["verdict"] == "holds"


def test_effective_dof_counts_pairs_without_a_target_effect_and_targets_with_only_one():
    groups = np.repeat(["a", "b", "c", "d"], 6)
    rng = np.random.default_rng(7)
    assert effective_dof(rng.normal(size=24) * 1e-9 + np.repeat([1.0, -1, 2, -2], 6), groups) == (
        pytest.approx(3.0)  # every residual is its target's level: only 4 targets count
    )
    balanced = np.tile([1.0, -1.0, 0.5, -0.5, 0.2, -0.2], 4)  # every target mean is 0
    assert effective_dof(balanced, groups) == pytest.approx(22.0)  # n − 2


def _simulated_targets(rng: np.random.Generator, n_t: int = 6, n_m: int = 12):
    target, mixture = _crossed(n_t, n_m)
    x = rng.normal(0, 0.02, n_t)[target] + rng.normal(0, 0.02, n_m)[mixture]
    x = x + rng.normal(0, 0.01, n_t * n_m)
    level = rng.normal(0, 0.01, n_t)  # between-target variation the line cannot see
    y = 0.3 * x + level[target] + rng.normal(0, 0.005, n_t * n_m)
    return x, y, target


def test_new_target_interval_covers_a_new_targets_pairs_where_the_ols_interval_does_not():
    """Between-target variance twice the pair noise: the interval from leave-one-target-out
    residuals covers an unseen target's pairs at about 95%; the OLS interval, which treats
    pairs as independent, misses them more than twice as often."""
    rng = np.random.default_rng(8)
    ours, ols = [], []
    for _ in range(100):
        x, y, target = _simulated_targets(rng)
        x_new = rng.normal(0, 0.02, 12) + rng.normal(0, 0.02)
        y_new = 0.3 * x_new + rng.normal(0, 0.01) + rng.normal(0, 0.005, 12)
        got = new_target_interval(x, y, target, x_new)
        ours.extend((got["low"] <= y_new) & (y_new <= got["high"]))
        _, low, high = prediction_interval(x, y, x_new)
        ols.extend((low <= y_new) & (y_new <= high))
    assert 0.92 <= np.mean(ours) <= 0.99
    assert 1 - np.mean(ols) > 2 * (1 - np.mean(ours))


def test_held_out_target_coverage_leaves_each_target_out_and_compares_with_the_mean():
    rng = np.random.default_rng(9)
    x, y, target = _simulated_targets(rng, n_t=8)
    got = held_out_target_coverage(x, y, target)
    assert got["n_pairs"] == len(x) and got["n_targets"] == 8
    inside, errors, baseline = [], [], []
    for t in range(8):  # the same thing by hand, from new_target_interval's definition
        test = target == t
        interval = new_target_interval(x[~test], y[~test], target[~test], x[test])
        inside.extend((interval["low"] <= y[test]) & (y[test] <= interval["high"]))
        slope, intercept = np.polyfit(x[~test], y[~test], 1)
        errors.extend(y[test] - (intercept + slope * x[test]))
        baseline.extend(y[test] - y[~test].mean())
    assert got["coverage"] == pytest.approx(np.mean(inside))
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(np.square(errors))))
    assert got["rmse_ratio"] == pytest.approx(
        np.sqrt(np.mean(np.square(errors))) / np.sqrt(np.mean(np.square(baseline)))
    )
    assert held_out_target_coverage(x[:36], y[:36], target[:36])["coverage"] is None  # 3 targets
