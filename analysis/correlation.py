"""Statistics of one relation x -> y: PA (x) against relative improvement (y).

Pure functions over arrays, as the paper: Pearson r with its p and Fisher-z interval
(`scipy.stats.pearsonr`), the least-squares line (`scipy.stats.linregress`), Spearman rho, a
permutation p (`scipy.stats.permutation_test`), bootstrap intervals over (mixture, target)
pairs and over seeds, the correlation within targets (each target centred, so a few far
targets cannot make r alone) and leave-one-group-out prediction error (how well the fitted
line predicts a target or a mixture it has not seen).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class Settings:
    """How the intervals and p-values are drawn; recorded in the statistics JSON."""

    confidence: float = 0.95
    n_permutations: int = 9999
    n_bootstrap: int = 2000
    seed: int = 0


DEFAULT_SETTINGS = Settings()


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def pearson(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> dict:
    """Pearson r, its two-sided p and Fisher-z interval, and the fitted line (as the paper)."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": None, "p": None, "ci_low": None, "ci_high": None, "slope": None,
                "intercept": None, "n": len(x)}  # fmt: skip
    result = stats.pearsonr(x, y)
    line = stats.linregress(x, y)
    if len(x) > 3:
        interval = result.confidence_interval(confidence_level=confidence)
        low, high = interval.low, interval.high
    else:
        low = high = np.nan  # Fisher z needs n > 3
    return {
        "r": float(result.statistic),
        "p": float(result.pvalue),
        "ci_low": _finite(low),
        "ci_high": _finite(high),
        "slope": float(line.slope),
        "intercept": float(line.intercept),
        "slope_stderr": _finite(line.stderr),
        "n": len(x),
    }


def spearman(x: np.ndarray, y: np.ndarray) -> dict:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"rho": None, "p": None}
    result = stats.spearmanr(x, y)
    return {"rho": float(result.statistic), "p": float(result.pvalue)}


def _r(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson r along an axis (vectorised for permutation and bootstrap resamples)."""
    xc = x - x.mean(axis=axis, keepdims=True)
    yc = y - y.mean(axis=axis, keepdims=True)
    num = (xc * yc).sum(axis=axis)
    den = np.sqrt((xc**2).sum(axis=axis) * (yc**2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def permutation_p(
    x: np.ndarray, y: np.ndarray, settings: Settings = DEFAULT_SETTINGS
) -> float | None:
    """P(|r| ≥ |r observed|) under random pairings of x with y (exact when n! is small).

    The statistic is |r| with a one-sided test, not scipy's two-sided default (twice the
    smaller tail): with one far pair the null of r is lopsided and doubling a tail
    misstates the chance of so strong a relation of either sign.
    """
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    # Only y is shuffled (x stays in place), so scipy counts n! pairings and enumerates
    # them all when n! <= n_permutations (n <= 7 at the default): exact for small grids.
    result = stats.permutation_test(
        (y,),
        lambda b, axis=-1: np.abs(_r(np.broadcast_to(x, b.shape), b, axis)),
        permutation_type="pairings",
        n_resamples=settings.n_permutations,
        alternative="greater",
        vectorized=True,
        random_state=settings.seed,
    )
    return float(result.pvalue)


def bootstrap_pairs(x: np.ndarray, y: np.ndarray, settings: Settings = DEFAULT_SETTINGS) -> dict:
    """Percentile interval of r over (mixture, target) pairs drawn with replacement."""
    if len(x) < 4 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"ci_low": None, "ci_high": None, "n_resamples": 0}
    with warnings.catch_warnings():
        # Few pairs: some resamples repeat one x and have no r; scipy warns and the interval
        # comes back NaN, which is reported as None (no interval), not as a number.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = _bootstrap_r(x, y, settings)
    interval = result.confidence_interval
    return {"ci_low": _finite(interval.low), "ci_high": _finite(interval.high),
            "n_resamples": settings.n_bootstrap}  # fmt: skip


def _bootstrap_r(x: np.ndarray, y: np.ndarray, settings: Settings):
    return stats.bootstrap(
        (x, y),
        _r,
        paired=True,
        vectorized=True,
        n_resamples=settings.n_bootstrap,
        confidence_level=settings.confidence,
        method="percentile",
        random_state=settings.seed,
    )


def bootstrap_seeds(
    x: np.ndarray, y_by_seed: np.ndarray, settings: Settings = DEFAULT_SETTINGS
) -> dict:
    """Percentile interval of r when the seeds are drawn with replacement.

    `y_by_seed` is pairs × seeds (NaN where a pair lacks a seed). A seed is a whole tree
    (pretraining, branches, SFT), so one draw of seeds is shared by every pair; each pair's
    outcome is the mean over the drawn seeds it has. This is the spread that training noise
    alone puts on r, with the pairs held fixed.
    """
    n_seeds = y_by_seed.shape[1]
    if n_seeds < 2 or len(x) < 3 or np.ptp(x) == 0:
        return {"ci_low": None, "ci_high": None, "n_resamples": 0, "n_seeds": n_seeds}
    rng = np.random.default_rng(settings.seed)
    draws = rng.integers(0, n_seeds, size=(settings.n_bootstrap, n_seeds))
    picked = y_by_seed[:, draws]  # pairs × resamples × seeds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a pair with none of the drawn seeds
        means = np.nanmean(picked, axis=2).T  # resamples × pairs
    keep = ~np.isnan(means).any(axis=1)
    rs = _r(np.broadcast_to(x, means[keep].shape), means[keep])
    rs = rs[np.isfinite(rs)]
    if len(rs) < 10:
        return {"ci_low": None, "ci_high": None, "n_resamples": len(rs), "n_seeds": n_seeds}
    alpha = (1 - settings.confidence) / 2
    low, high = np.quantile(rs, [alpha, 1 - alpha])
    return {"ci_low": float(low), "ci_high": float(high), "n_resamples": len(rs),
            "n_seeds": n_seeds}  # fmt: skip


def within_groups(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> dict:
    """r after centring x and y within each group (target): the slope inside targets.

    Equals the partial correlation of x and y given group indicators; its p uses
    n − groups − 1 degrees of freedom (one mean per group is spent).
    """
    frame = pd.DataFrame({"x": x, "y": y, "g": list(groups)})
    sizes = frame.groupby("g")["x"].transform("size")
    frame = frame[sizes >= 2]
    n, k = len(frame), frame["g"].nunique()
    xc = frame["x"] - frame.groupby("g")["x"].transform("mean")
    yc = frame["y"] - frame.groupby("g")["y"].transform("mean")
    dof = n - k - 1
    if dof < 1 or np.ptp(xc) == 0 or np.ptp(yc) == 0:
        return {"r": None, "p": None, "n": n, "groups": k}
    r = float(_r(xc.to_numpy(), yc.to_numpy()))
    r = max(-1.0, min(1.0, r))
    t = r * np.sqrt(dof / max(1e-300, 1 - r**2))
    p = float(2 * stats.t.sf(abs(t), dof))
    return {"r": r, "p": p, "n": n, "groups": k, "dof": dof}


def leave_one_group_out(x: np.ndarray, y: np.ndarray, groups: Sequence[str]) -> dict:
    """Fit y = a + b·x without one group, predict that group; error of the line and of the mean.

    The mean of the training outcomes is the no-skill baseline: PA helps only if the line's
    error is below it.
    """
    groups = np.asarray(groups)
    errors, baseline, held = [], [], {}
    for group in pd.unique(groups):
        test = groups == group
        train = ~test
        if train.sum() < 2 or np.ptp(x[train]) == 0:
            continue
        line = stats.linregress(x[train], y[train])
        predicted = line.intercept + line.slope * x[test]
        err = y[test] - predicted
        base = y[test] - y[train].mean()
        errors.extend(err)
        baseline.extend(base)
        held[str(group)] = {
            "rmse": float(np.sqrt(np.mean(err**2))),
            "slope": float(line.slope),
            "intercept": float(line.intercept),
            "n": int(test.sum()),
        }
    if not errors:
        return {"rmse": None, "mae": None, "baseline_rmse": None, "groups": held}
    errors, baseline = np.asarray(errors), np.asarray(baseline)
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "baseline_rmse": float(np.sqrt(np.mean(baseline**2))),
        "groups": held,
    }


def leave_one_pair_out(x: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> dict:
    """r with each pair left out in turn: its range, and the pair whose removal lowers r most
    (with r and p without it). One far pair can carry r; this says whether it does."""
    n = len(x)
    if n < 4:
        return {"r_min": None, "r_max": None, "most_influential": None}
    results = []
    for i in range(n):
        keep = np.arange(n) != i
        if np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            continue
        fit = stats.pearsonr(x[keep], y[keep])
        results.append((float(fit.statistic), float(fit.pvalue), str(labels[i])))
    if not results:
        return {"r_min": None, "r_max": None, "most_influential": None}
    r_min, p_min, pair = min(results)
    return {
        "r_min": r_min,
        "r_max": max(r for r, _, _ in results),
        "most_influential": {"pair": pair, "r_without": r_min, "p_without": p_min},
    }


def relation_statistics(
    points: pd.DataFrame, y_by_seed: np.ndarray | None = None, settings: Settings = DEFAULT_SETTINGS
) -> dict:
    """Every statistic of one (metric, model) relation.

    `points` has one row per (mixture, target) pair with columns `advantage` (x),
    `improvement` (y, the seed mean), `mixture` and `target`.
    """
    x = points["advantage"].to_numpy(float)
    y = points["improvement"].to_numpy(float)
    result = {
        "n_pairs": len(points),
        "n_targets": int(points["target"].nunique()),
        "n_mixtures": int(points["mixture"].nunique()),
        "pearson": pearson(x, y, settings.confidence),
        "spearman": spearman(x, y),
        "permutation_p": permutation_p(x, y, settings),
        "bootstrap_pairs": bootstrap_pairs(x, y, settings),
        "within_target": within_groups(x, y, points["target"]),
        "leave_one_target_out": leave_one_group_out(x, y, points["target"]),
        "leave_one_mixture_out": leave_one_group_out(x, y, points["mixture"]),
        "leave_one_pair_out": leave_one_pair_out(
            x, y, (points["mixture"] + " → " + points["target"]).tolist()
        ),
    }
    if y_by_seed is not None:
        result["bootstrap_seeds"] = bootstrap_seeds(x, y_by_seed, settings)
    return result
