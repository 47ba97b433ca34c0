"""The statistics of `proximity correlate`, each against an independent computation."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from proximity.analysis.correlation import (
    Settings,
    bootstrap_pairs,
    bootstrap_seeds,
    leave_one_group_out,
    leave_one_pair_out,
    pearson,
    permutation_p,
    spearman,
    within_groups,
)


def _sample(n: int, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    cov = [[1.0, rho], [rho, 1.0]]
    xy = rng.multivariate_normal([0.0, 0.0], cov, size=n)
    return xy[:, 0], xy[:, 1]


def test_pearson_matches_numpy_and_the_fisher_z_interval_by_hand():
    rng = np.random.default_rng(1)
    x, y = _sample(12, 0.6, rng)
    got = pearson(x, y)
    r = np.corrcoef(x, y)[0, 1]
    z, se = np.arctanh(r), 1 / np.sqrt(len(x) - 3)
    half = stats.norm.ppf(0.975) * se
    slope, intercept = np.polyfit(x, y, 1)
    assert got["r"] == pytest.approx(r, abs=1e-12)
    assert got["ci_low"] == pytest.approx(np.tanh(z - half), abs=1e-9)
    assert got["ci_high"] == pytest.approx(np.tanh(z + half), abs=1e-9)
    assert got["slope"] == pytest.approx(slope) and got["intercept"] == pytest.approx(intercept)
    t = r * np.sqrt((len(x) - 2) / (1 - r**2))
    assert got["p"] == pytest.approx(2 * stats.t.sf(abs(t), len(x) - 2), rel=1e-9)


def test_pearson_interval_covers_the_true_rho_at_its_nominal_rate():
    rng = np.random.default_rng(2)
    rho, trials = 0.5, 400
    hits = 0
    for _ in range(trials):
        got = pearson(*_sample(20, rho, rng))
        hits += got["ci_low"] <= rho <= got["ci_high"]
    assert 0.92 <= hits / trials <= 0.98  # 95% nominal; ±3 binomial SE is ±0.033


def test_pearson_of_constant_or_tiny_input_is_none_not_an_error():
    assert pearson(np.ones(5), np.arange(5.0))["r"] is None
    assert pearson(np.arange(2.0), np.arange(2.0))["r"] is None


def test_permutation_p_is_the_exact_share_of_all_pairings_at_least_as_strong():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6), rng.normal(size=6)
    observed = abs(np.corrcoef(x, y)[0, 1])
    rs = [abs(np.corrcoef(x, y[list(p)])[0, 1]) for p in itertools.permutations(range(6))]
    exact = np.mean(np.asarray(rs) >= observed - 1e-12)
    assert permutation_p(x, y) == pytest.approx(exact, abs=1e-12)


def test_permutation_p_agrees_with_a_hand_monte_carlo_on_a_lopsided_sample():
    rng = np.random.default_rng(4)
    x = np.r_[rng.normal(size=9) * 0.01, 0.2]  # one far pair, as a CPT point can be
    y = -3 * x + rng.normal(size=10) * 0.02
    observed = abs(np.corrcoef(x, y)[0, 1])
    shuffled = [abs(np.corrcoef(x, rng.permutation(y))[0, 1]) for _ in range(20000)]
    by_hand = np.mean(np.asarray(shuffled) >= observed)
    assert permutation_p(x, y, Settings(n_permutations=20000)) == pytest.approx(by_hand, abs=0.01)


def test_pair_bootstrap_matches_a_hand_percentile_bootstrap():
    rng = np.random.default_rng(5)
    x, y = _sample(15, 0.7, rng)
    got = bootstrap_pairs(x, y, Settings(n_bootstrap=4000))
    draws = rng.integers(0, 15, size=(4000, 15))
    rs = np.array([np.corrcoef(x[d], y[d])[0, 1] for d in draws])
    low, high = np.nanquantile(rs, [0.025, 0.975])
    assert got["ci_low"] == pytest.approx(low, abs=0.04)
    assert got["ci_high"] == pytest.approx(high, abs=0.04)


def test_seed_bootstrap_collapses_when_seeds_agree_and_widens_with_seed_noise():
    rng = np.random.default_rng(6)
    x = rng.normal(size=8)
    truth = 0.5 * x
    same = np.repeat(truth[:, None], 3, axis=1)
    got = bootstrap_seeds(x, same)
    assert got["ci_low"] == pytest.approx(1.0) and got["ci_high"] == pytest.approx(1.0)
    widths = []
    for noise in (0.1, 1.0):
        noisy = truth[:, None] + noise * rng.normal(size=(8, 3))
        interval = bootstrap_seeds(x, noisy)
        r_of_means = np.corrcoef(x, noisy.mean(axis=1))[0, 1]
        assert interval["ci_low"] <= r_of_means + 0.05 and r_of_means - 0.05 <= interval["ci_high"]
        widths.append(interval["ci_high"] - interval["ci_low"])
    assert widths[0] < widths[1]
    assert bootstrap_seeds(x, truth[:, None])["ci_low"] is None  # one seed: nothing to draw
    # A seed column no pair has (another model size's seed) is not a seed of these pairs:
    # one real seed is still nothing to draw (it once gave a zero-width interval at r).
    absent = np.column_stack([truth + 0.1 * rng.normal(size=8), np.full(8, np.nan)])
    got = bootstrap_seeds(x, absent)
    assert got["ci_low"] is None and got["n_seeds"] == 1


def test_seed_bootstrap_interval_lies_in_the_exact_distribution_of_seed_draws():
    """With 3 seeds there are only 27 equally likely draws of seeds: the interval's ends must
    sit among the extreme r values of that exact distribution (computed here by hand)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=10)
    y_by_seed = 0.4 * x[:, None] + 0.8 * rng.normal(size=(10, 3))
    exact = sorted(
        np.corrcoef(x, y_by_seed[:, list(draw)].mean(axis=1))[0, 1]
        for draw in itertools.product(range(3), repeat=3)
    )
    got = bootstrap_seeds(x, y_by_seed, Settings(n_bootstrap=4000))
    # 2.5% of 27 draws is under one draw: the ends are the smallest/largest r or next to them.
    assert exact[0] - 1e-12 <= got["ci_low"] <= exact[2] + 1e-12
    assert exact[-3] - 1e-12 <= got["ci_high"] <= exact[-1] + 1e-12
    assert got["n_seeds"] == 3


def test_spearman_is_pearson_of_the_ranks_with_the_t_test_p():
    rng = np.random.default_rng(12)
    x = rng.normal(size=15)
    y = np.exp(x) + 0.5 * rng.normal(size=15)  # monotone, not linear
    y[3] = y[4]  # a tie: average ranks
    ranks = [pd.Series(v).rank(method="average").to_numpy() for v in (x, y)]
    rho = np.corrcoef(*ranks)[0, 1]
    t = rho * np.sqrt((15 - 2) / (1 - rho**2))
    got = spearman(x, y)
    assert got["rho"] == pytest.approx(rho, rel=1e-12)
    assert got["p"] == pytest.approx(2 * stats.t.sf(abs(t), 13), rel=1e-9)
    assert spearman(x, np.ones(15)) == {"rho": None, "p": None}


def test_within_target_r_is_the_partial_correlation_given_target_indicators():
    rng = np.random.default_rng(7)
    groups = np.repeat(["a", "b", "c", "d"], 5)
    offsets = {"a": 0.0, "b": 1.0, "c": 2.0, "d": 3.0}
    x = np.array([offsets[g] for g in groups]) + rng.normal(size=20)
    y = 2 * np.array([offsets[g] for g in groups]) + 0.3 * x + rng.normal(size=20)
    got = within_groups(x, y, groups)
    dummies = (groups[:, None] == np.array(list(offsets))[None, :]).astype(float)
    design = np.column_stack([x, dummies])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ beta
    dof = 20 - 4 - 1
    se = np.sqrt(resid @ resid / dof * np.linalg.inv(design.T @ design)[0, 0])
    t = beta[0] / se
    res_x = x - dummies @ np.linalg.lstsq(dummies, x, rcond=None)[0]
    res_y = y - dummies @ np.linalg.lstsq(dummies, y, rcond=None)[0]
    assert got["r"] == pytest.approx(np.corrcoef(res_x, res_y)[0, 1], abs=1e-12)
    assert got["p"] == pytest.approx(2 * stats.t.sf(abs(t), dof), rel=1e-9)


def test_within_target_r_sees_through_a_relation_made_only_by_far_targets():
    rng = np.random.default_rng(8)
    groups = np.repeat(["near", "far"], 6)
    x = np.r_[rng.normal(size=6) * 0.01, 1 + rng.normal(size=6) * 0.01]
    y = np.r_[rng.normal(size=6) * 0.01, 1 + rng.normal(size=6) * 0.01]  # no slope inside
    assert pearson(x, y)["r"] > 0.99
    assert abs(within_groups(x, y, groups)["r"]) < 0.8
    assert within_groups(x, y, groups)["p"] > 0.01


def test_leave_one_group_out_matches_refitting_by_hand_and_is_zero_on_an_exact_line():
    rng = np.random.default_rng(9)
    groups = np.repeat(["t1", "t2", "t3"], 4)
    x = rng.normal(size=12)
    exact = leave_one_group_out(x, 0.5 + 2 * x, groups)
    assert exact["rmse"] == pytest.approx(0.0, abs=1e-12)
    y = 2 * x + rng.normal(size=12)
    got = leave_one_group_out(x, y, groups)
    errors, base = [], []
    for g in ("t1", "t2", "t3"):
        held = groups == g
        slope, intercept = np.polyfit(x[~held], y[~held], 1)
        errors.extend(y[held] - (intercept + slope * x[held]))
        base.extend(y[held] - y[~held].mean())
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(np.square(errors))))
    assert got["baseline_rmse"] == pytest.approx(np.sqrt(np.mean(np.square(base))))
    assert set(got["groups"]) == {"t1", "t2", "t3"}
    assert got["rmse"] < got["baseline_rmse"]  # a real slope beats the mean


def test_within_groups_ignores_singleton_groups():
    x = np.array([0.0, 1.0, 2.0, 5.0])
    y = np.array([0.0, 1.0, 2.5, 9.0])
    got = within_groups(x, y, pd.Series(["a", "a", "a", "b"]))
    assert got["n"] == 3 and got["groups"] == 1


def test_leave_one_pair_out_finds_the_pair_that_carries_r():
    """Nine pairs with no relation and one far pair: r is high with it, ~0 without it."""
    rng = np.random.default_rng(13)
    x = np.append(rng.normal(0.0, 0.01, size=9), 0.1)
    y = np.append(rng.normal(0.0, 0.01, size=9), 0.08)
    labels = [f"m{i} → t" for i in range(10)]
    got = leave_one_pair_out(x, y, labels)
    by_hand = [np.corrcoef(np.delete(x, i), np.delete(y, i))[0, 1] for i in range(10)]
    assert got["r_min"] == pytest.approx(min(by_hand), rel=1e-12)
    assert got["r_max"] == pytest.approx(max(by_hand), rel=1e-12)
    assert got["most_influential"]["pair"] == "m9 → t"
    assert np.corrcoef(x, y)[0, 1] > 0.8 > got["r_min"]
    p = stats.pearsonr(x[:9], y[:9]).pvalue
    assert got["most_influential"]["p_without"] == pytest.approx(p, rel=1e-9)
    assert leave_one_pair_out(x[:3], y[:3], labels[:3])["r_min"] is None
