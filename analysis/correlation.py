"""Statistics of one relation x -> y: PA (x) against relative improvement (y).

Pure functions over arrays, as the paper: Pearson r with its p and Fisher-z interval
(`scipy.stats.pearsonr`), the least-squares line (`scipy.stats.linregress`), Spearman rho, a
permutation p (`scipy.stats.permutation_test`), bootstrap intervals over (mixture, target)
pairs and over seeds, the correlation within targets (each target centred, so a few far
targets cannot make r alone) and leave-one-group-out prediction error (how well the fitted
line predicts a target or a mixture it has not seen).

The pairs are not independent: they cross a few targets with a few mixtures, and every pair of
one target (or one mixture) shares its control (or its midtrained model). The tests that
respect that design are the permutations within targets and within mixtures, the two-way
cluster bootstrap over targets and mixtures together, and leave-one-pair-out; `verdict` asks
all of them before it says "holds".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict, cross_validate

from proximity.errors import ProximityError


@dataclass(frozen=True)
class Settings:
    """How the intervals and p-values are drawn; recorded in the statistics JSON."""

    confidence: float = 0.95
    n_permutations: int = 9999
    n_bootstrap: int = 2000
    seed: int = 0


DEFAULT_SETTINGS = Settings()
ALPHA = 0.05
"""Significance level of every verdict."""


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
    # Only the seeds these pairs have: a seed column no pair has (one model size's seed 1,
    # when this relation is the other size's) would make every draw containing it empty,
    # leave the rest identical, and collapse the interval onto r.
    y_by_seed = y_by_seed[:, ~np.isnan(y_by_seed).all(axis=0)]
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

    scikit-learn's `LeaveOneGroupOut` with `LinearRegression` (the line) and `DummyRegressor`
    (the mean of the training outcomes: the no-skill baseline; PA helps only if the line's
    error is below it).
    """
    groups = np.asarray([str(g) for g in groups])
    if len(np.unique(groups)) < 2 or len(x) < 3:
        return {"rmse": None, "mae": None, "baseline_rmse": None, "groups": {}}
    features = np.asarray(x, float).reshape(-1, 1)
    folds = LeaveOneGroupOut()
    fitted = cross_validate(
        LinearRegression(), features, y, groups=groups, cv=folds,
        return_estimator=True, return_indices=True, scoring=None,
    )  # fmt: skip
    predicted = cross_val_predict(LinearRegression(), features, y, groups=groups, cv=folds)
    mean_only = cross_val_predict(DummyRegressor(), features, y, groups=groups, cv=folds)
    errors, baseline = y - predicted, y - mean_only
    held = {}
    for model, test in zip(fitted["estimator"], fitted["indices"]["test"], strict=True):
        held[str(groups[test[0]])] = {
            "rmse": float(np.sqrt(np.mean(errors[test] ** 2))),
            "slope": float(model.coef_[0]),
            "intercept": float(model.intercept_),
            "n": len(test),
        }
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "baseline_rmse": float(np.sqrt(np.mean(baseline**2))),
        "groups": held,
    }


def leave_one_pair_out(x: np.ndarray, y: np.ndarray, labels: Sequence[str]) -> dict:
    """r with each pair left out in turn: its range, the pair whose removal lowers r most
    (with r and p without it) and the pair whose removal moves r most either way.

    One far pair can carry r; this says whether it does. `p_max` (the largest p without one
    pair) and `r_min`/`r_max` are what a verdict must survive.
    """
    n = len(x)
    empty = {"r_min": None, "r_max": None, "abs_r_min": None, "p_max": None,
             "most_influential": None, "most_moving": None}  # fmt: skip
    if n < 4:
        return empty
    full = np.corrcoef(x, y)[0, 1] if np.ptp(x) > 0 and np.ptp(y) > 0 else np.nan
    results = []
    for i in range(n):
        keep = np.arange(n) != i
        if np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
            continue
        fit = stats.pearsonr(x[keep], y[keep])
        results.append((float(fit.statistic), float(fit.pvalue), str(labels[i])))
    if not results:
        return empty
    r_min, p_min, pair = min(results)
    moved = max(results, key=lambda item: abs(item[0] - full) if np.isfinite(full) else 0.0)
    return {
        "r_min": r_min,
        "r_max": max(r for r, _, _ in results),
        "abs_r_min": min(abs(r) for r, _, _ in results),
        "p_max": max(p for _, p, _ in results),
        "n_left_out": len(results),
        "most_influential": {"pair": pair, "r_without": r_min, "p_without": p_min},
        "most_moving": {"pair": moved[2], "r_without": moved[0], "p_without": moved[1]},
    }


def stratified_permutation(
    x: np.ndarray, y: np.ndarray, strata: Sequence[str], settings: Settings = DEFAULT_SETTINGS
) -> dict:
    """P(|r_w| ≥ |r_w observed|) when y is shuffled only within strata (targets or mixtures).

    r_w is r after centring x and y within each stratum (the slope inside strata; for these
    shuffles it orders them as the overall r does, since the stratum means do not move).
    Shuffling within targets keeps each target's level (a far target that is easy to help
    stays easy), so a relation made by a few targets' levels is not counted as evidence; the
    same within mixtures. Valid when, under no relation, the outcomes of one stratum are
    exchangeable, i.e. the other factor has no effect on x or on y (the two-way bootstrap
    covers both factors at once). Not applicable when x does not vary within any stratum.
    """
    frame = pd.DataFrame({"x": x, "y": y, "g": [str(s) for s in strata]})
    xc = (frame["x"] - frame.groupby("g")["x"].transform("mean")).to_numpy()
    yc = (frame["y"] - frame.groupby("g")["y"].transform("mean")).to_numpy()
    n_strata = int(frame["g"].nunique())
    if len(frame) < 4 or np.ptp(xc) < 1e-15 or np.ptp(yc) < 1e-15:
        return {"p": None, "r_within": None, "n_strata": n_strata, "n_permutations": 0,
                "applicable": False, "why": "x or y does not vary within the strata"}  # fmt: skip
    observed = float(_r(xc, yc))
    rng = np.random.default_rng(settings.seed)
    shuffled = np.empty((settings.n_permutations, len(yc)))
    for _, index in frame.groupby("g").indices.items():
        block = np.broadcast_to(yc[index], (settings.n_permutations, len(index)))
        shuffled[:, index] = rng.permuted(block, axis=1)
    null = np.abs(_r(np.broadcast_to(xc, shuffled.shape), shuffled))
    # The observed arrangement counts as one of the arrangements (a p-value is never 0).
    extreme = np.count_nonzero(null >= abs(observed) * (1 - 1e-12))
    p = (1 + extreme) / (1 + settings.n_permutations)
    return {"p": float(p), "r_within": observed, "n_strata": n_strata,
            "n_permutations": settings.n_permutations, "applicable": True}  # fmt: skip


def _weighted_r(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Pearson r of each row of `weights` (how often each pair was drawn): r of the replicated
    sample without building it."""
    total = weights.sum(axis=1, keepdims=True)
    mx = (weights * x).sum(axis=1, keepdims=True) / total
    my = (weights * y).sum(axis=1, keepdims=True) / total
    dx, dy = x - mx, y - my
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights * dx * dy).sum(axis=1) / np.sqrt(
            (weights * dx**2).sum(axis=1) * (weights * dy**2).sum(axis=1)
        )


def bootstrap_two_way(
    x: np.ndarray,
    y: np.ndarray,
    rows: Sequence[str],
    columns: Sequence[str],
    settings: Settings = DEFAULT_SETTINGS,
) -> dict:
    """Percentile interval of r when targets and mixtures are both drawn with replacement.

    The pigeonhole (two-way cluster) bootstrap: draw the targets and, independently, the
    mixtures; the resample is every pair of a drawn target with a drawn mixture, as often as
    both were drawn. Pairs of one target (or one mixture) move together, so a relation made by
    one target or one mixture shows up as a wide interval. Draws with a single distinct PA or
    outcome have no r and are dropped (counted in `n_degenerate`).
    """
    row_codes, row_names = pd.factorize(pd.Series([str(v) for v in rows]))
    col_codes, col_names = pd.factorize(pd.Series([str(v) for v in columns]))
    n_rows, n_cols = len(row_names), len(col_names)
    if len(x) < 4 or n_rows < 2 or n_cols < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"ci_low": None, "ci_high": None, "n_resamples": 0, "n_degenerate": 0,
                "n_targets": n_rows, "n_mixtures": n_cols}  # fmt: skip
    rng = np.random.default_rng(settings.seed)
    row_counts = _draw_counts(rng, n_rows, settings.n_bootstrap)
    col_counts = _draw_counts(rng, n_cols, settings.n_bootstrap)
    weights = row_counts[:, row_codes] * col_counts[:, col_codes]
    rs = _weighted_r(np.asarray(x, float), np.asarray(y, float), weights.astype(float))
    finite = rs[np.isfinite(rs)]
    result = {"n_resamples": len(finite), "n_degenerate": int(len(rs) - len(finite)),
              "n_targets": n_rows, "n_mixtures": n_cols}  # fmt: skip
    if len(finite) < 10:
        return {"ci_low": None, "ci_high": None, **result}
    alpha = (1 - settings.confidence) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return {"ci_low": float(low), "ci_high": float(high), **result}


def _draw_counts(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """draws × n: how often each of n clusters is picked in n draws with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws)


def _loto_residuals(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """y minus the line fitted without the pair's target (scikit-learn, one fold per target)."""
    features = np.asarray(x, float).reshape(-1, 1)
    predicted = cross_val_predict(
        LinearRegression(), features, y, groups=groups, cv=LeaveOneGroupOut()
    )
    return y - predicted


def effective_dof(residuals: np.ndarray, groups: np.ndarray) -> float:
    """Degrees of freedom of residuals that share their target: Kish's effective sample size
    n / (1 + (m − 1)·ICC) minus the line's 2, kept between targets − 1 and n − 2.

    ICC is the share of the residual variance between targets (one-way ANOVA, method of
    moments, m = mean pairs per target). With no target effect the pairs count as n; when the
    targets' levels dominate, only the targets count.
    """
    frame = pd.DataFrame({"e": residuals, "g": groups})
    n, k = len(frame), int(frame["g"].nunique())
    m = n / k
    within = float(frame.groupby("g")["e"].var(ddof=1).fillna(0.0).mean())
    between = float(m * frame.groupby("g")["e"].mean().var(ddof=1))
    sigma_b = max(0.0, (between - within) / m)
    icc = sigma_b / (sigma_b + within) if sigma_b + within > 0 else 0.0
    n_eff = n / (1 + (m - 1) * icc)
    return float(np.clip(n_eff - 2, max(1, k - 1), max(1, n - 2)))


def new_target_interval(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    x_new: np.ndarray,
    level: float = 0.95,
) -> dict:
    """Prediction of y at x_new for a target the line has never seen, with an interval that
    includes how much a new target's level differs from the line.

    Centre: the least-squares line on every pair. Half-width: t(dof)·s, where s is the RMS of
    the leave-one-target-out residuals (each pair predicted by the line fitted without its
    target, so s carries the between-target spread and the line's own uncertainty) and dof
    the effective degrees of freedom of residuals clustered by target (`effective_dof`).
    Needs at least 3 targets.
    """
    groups = np.asarray([str(g) for g in groups])
    n_groups = len(np.unique(groups))
    if n_groups < 3 or np.ptp(x) == 0:
        raise ProximityError(
            f"a prediction for a new target needs pairs from at least 3 targets with distinct "
            f"PA; the relation has {n_groups} target(s)"
        )
    line = LinearRegression().fit(np.asarray(x, float).reshape(-1, 1), y)
    residuals = _loto_residuals(x, y, groups)
    spread = float(np.sqrt(np.mean(residuals**2)))
    dof = effective_dof(residuals, groups)
    half = float(stats.t.ppf(0.5 + level / 2, dof)) * spread
    centre = line.predict(np.asarray(x_new, float).reshape(-1, 1))
    return {"centre": centre, "low": centre - half, "high": centre + half,
            "loto_rms": spread, "dof": dof, "slope": float(line.coef_[0]),
            "intercept": float(line.intercept_)}  # fmt: skip


def held_out_target_coverage(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], level: float = 0.95
) -> dict:
    """How `new_target_interval` does on targets it has not seen: each target of the study is
    left out in turn, the interval built from the others alone, and its pairs checked.

    Coverage: the share of held-out pairs inside their interval (goal ≥ 0.90 at 0.95). RMSE of
    the held-out prediction beside the RMSE of predicting the mean of the other targets
    (`rmse_ratio` < 1: the line helps). Width: the mean interval width beside the range of
    the outcomes.
    """
    groups = np.asarray([str(g) for g in groups])
    names = pd.unique(groups)
    empty = {"coverage": None, "nominal": level, "n_pairs": 0, "n_targets": len(names),
             "rmse": None, "baseline_rmse": None, "rmse_ratio": None, "mean_width": None,
             "outcome_range": _finite(np.ptp(y)) if len(y) else None}  # fmt: skip
    if len(names) < 4:
        return {**empty, "why": "needs at least 4 targets (3 to build each interval)"}
    inside, errors, baseline, widths, per_target = [], [], [], [], {}
    for name in names:
        test = groups == name
        train = ~test
        if np.ptp(x[train]) == 0:
            continue
        interval = new_target_interval(x[train], y[train], groups[train], x[test], level)
        hit = (interval["low"] <= y[test]) & (y[test] <= interval["high"])
        inside.extend(hit)
        errors.extend(y[test] - interval["centre"])
        baseline.extend(y[test] - y[train].mean())
        widths.extend(interval["high"] - interval["low"])
        per_target[str(name)] = {"covered": int(hit.sum()), "n": int(test.sum())}
    if not inside:
        return {**empty, "why": "no target left a line with distinct PA"}
    rmse = float(np.sqrt(np.mean(np.square(errors))))
    base = float(np.sqrt(np.mean(np.square(baseline))))
    return {
        **empty,
        "coverage": float(np.mean(inside)),
        "n_pairs": len(inside),
        "rmse": rmse,
        "baseline_rmse": base,
        "rmse_ratio": rmse / base if base > 0 else None,
        "mean_width": float(np.mean(widths)),
        "per_target": per_target,
    }


def _strata(points: pd.DataFrame, column: str) -> pd.Series:
    """Targets (or mixtures), within model size when the points pool several sizes: each size
    has its own control, so its outcome levels are its own."""
    if "model" in points and points["model"].nunique() > 1:
        return points["model"].astype(str) + "/" + points[column].astype(str)
    return points[column].astype(str)


def _mixture_labels(points: pd.DataFrame) -> pd.Series:
    """The mixture's name, with its weight when the grid trains it at several (code 10% and
    code 40% are different pairs: a label must say which one moved r)."""
    names = points["mixture"].astype(str)
    if "weight" not in points or points.groupby("mixture")["weight"].nunique().max() <= 1:
        return names
    return names + " " + points["weight"].map(lambda w: f"{float(w):.0%}")


def relation_statistics(
    points: pd.DataFrame,
    y_by_seed: np.ndarray | None = None,
    settings: Settings = DEFAULT_SETTINGS,
    expected_sign: int = 1,
) -> dict:
    """Every statistic of one (metric, model) relation, and its verdict.

    `points` has one row per (mixture, target) pair with columns `advantage` (x),
    `improvement` (y, the seed mean), `mixture` and `target` (and `model` when it pools
    several sizes: then the strata are (model, target) and (model, mixture), and the two-way
    bootstrap draws targets and mixtures across every size at once).
    """
    x = points["advantage"].to_numpy(float)
    y = points["improvement"].to_numpy(float)
    labels = (_mixture_labels(points) + " → " + points["target"]).tolist()
    if "model" in points and points["model"].nunique() > 1:
        labels = (points["model"] + ": " + pd.Series(labels, index=points.index)).tolist()
    targets = _strata(points, "target")
    result = {
        "n_pairs": len(points),
        "n_targets": int(points["target"].nunique()),
        "n_mixtures": int(points["mixture"].nunique()),
        "pa_std": _finite(np.std(x, ddof=1)) if len(x) > 1 else None,
        "pearson": pearson(x, y, settings.confidence),
        "spearman": spearman(x, y),
        "permutation_p": permutation_p(x, y, settings),
        "permutation_within_targets": stratified_permutation(x, y, targets, settings),
        "permutation_within_mixtures": stratified_permutation(
            x, y, _strata(points, "mixture"), settings
        ),
        "bootstrap_pairs": bootstrap_pairs(x, y, settings),
        "bootstrap_two_way": bootstrap_two_way(x, y, points["target"], points["mixture"], settings),
        "within_target": within_groups(x, y, targets),
        "leave_one_target_out": leave_one_group_out(x, y, targets),
        "leave_one_mixture_out": leave_one_group_out(x, y, _strata(points, "mixture")),
        "leave_one_pair_out": leave_one_pair_out(x, y, labels),
        "new_target_prediction": held_out_target_coverage(x, y, targets, settings.confidence),
    }
    if y_by_seed is not None:
        result["bootstrap_seeds"] = bootstrap_seeds(x, y_by_seed, settings)
    result["verdict"] = verdict(result, expected_sign=expected_sign)
    return result


def verdict(relation: dict, alpha: float = ALPHA, expected_sign: int = 1) -> dict:
    """`holds` only when every test agrees; `does not hold` only when the evidence points the
    other way; otherwise `inconclusive`. Each test's outcome is kept beside the word.

    Tests (expected_sign = +1: a positive relation; −1 for forgetting, where more similarity
    to C4 should mean a smaller C4 loss change): the parametric Pearson test, the permutations
    within targets and within mixtures (a stratified permutation that cannot vary x, e.g. a
    mixture property within mixtures, is not applicable and skipped), the two-way bootstrap
    interval excluding 0, leave-one-pair-out (r keeps its sign and p < alpha without any
    single pair), and the seeds: r's interval from resampling seeds excludes 0, which needs at
    least two seeds (one seed cannot show that the relation is not one training run's noise, so
    a one-seed grid is at best inconclusive). Against: the parametric test and the two-way
    interval both significant in the other direction.
    """
    s = expected_sign
    pearson_ = relation["pearson"]
    r, p = pearson_["r"], pearson_["p"]
    boot = relation["bootstrap_two_way"]
    lopo = relation["leave_one_pair_out"]
    tests: dict[str, bool | None] = {
        "parametric": None if r is None else bool(r * s > 0 and p < alpha),
        "two_way_bootstrap": None
        if boot["ci_low"] is None
        else bool(boot["ci_low"] > 0 if s > 0 else boot["ci_high"] < 0),
        "leave_one_pair_out": None
        if lopo["r_min"] is None
        else bool((lopo["r_min"] > 0 if s > 0 else lopo["r_max"] < 0) and lopo["p_max"] < alpha),
    }
    seeds = relation.get("bootstrap_seeds")  # absent: the caller had no per-seed outcomes
    if seeds is not None:
        tests["seed_bootstrap"] = (
            None
            if seeds["ci_low"] is None
            else bool(seeds["ci_low"] > 0 if s > 0 else seeds["ci_high"] < 0)
        )
    for key in ("permutation_within_targets", "permutation_within_mixtures"):
        perm = relation[key]
        if not perm["applicable"]:
            continue  # not applicable: x does not vary within these strata
        tests[key] = bool(perm["p"] < alpha and perm["r_within"] * s > 0)
    failed = [k for k, v in tests.items() if v is not True]
    against = (
        r is not None
        and r * s < 0
        and p < alpha
        and boot["ci_low"] is not None
        and (boot["ci_high"] < 0 if s > 0 else boot["ci_low"] > 0)
    )
    if not failed:
        word = "holds"
    elif against:
        word = "does not hold"
    else:
        word = "inconclusive"
    return {"verdict": word, "tests": tests, "failed": failed, "alpha": alpha,
            "expected_sign": s}  # fmt: skip
