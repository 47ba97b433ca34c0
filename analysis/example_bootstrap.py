"""The outcome's own sampling error: a bootstrap over validation examples.

Every seed and branch of a target is scored on the same validation examples, so the spread
over seeds is training noise only; the outcome also varies with which examples were drawn
for validation. The grid keeps, per selected SFT run, each validation example's summed loss
and loss-token count (`val_examples.npz`: merged at the grid folder's top as
`<node_id>/loss_sum` and `<node_id>/tokens`, or per node under `nodes/<id>/`). A resample of
the examples gives every run's token-weighted mean loss `sum(loss_sum) / sum(tokens)` again;
the control and every branch of one (model, target) are resampled with the SAME example
indices (they are scored on the same examples, so their errors are correlated and largely
cancel in the relative improvement), and the improvement is averaged over seeds per
replicate exactly as the analysis averages it. The standard error of a pair is the std of
those replicates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from proximity.analysis.results import BRANCH_KEYS, selected_runs
from proximity.errors import ProximityError

MERGED = "val_examples.npz"
LOSS_TOLERANCE = 1e-6
"""Largest relative difference allowed between results.csv's sft_val_loss and the mean over
the scored examples. Not 1e-9: the grid scores the examples one at a time while the
validation loss comes from batches of 16 with padding, so float32 kernels round differently;
on /work/runs/study the two differ by up to 6e-8 relative (2.8e-7 nats), 4 orders of
magnitude below a 0.1% improvement. A larger gap means the examples are not the ones scored."""


def load_example_losses(root: Path, node_ids: list[str]) -> dict[str, tuple[np.ndarray, ...]]:
    """(loss_sum, tokens) per node id found, from the merged file or each node's own."""
    found: dict[str, tuple[np.ndarray, ...]] = {}
    merged = root / MERGED
    if merged.exists():
        with np.load(merged) as scored:
            keys = set(scored.files)
            for node in node_ids:
                if f"{node}/loss_sum" in keys and f"{node}/tokens" in keys:
                    found[node] = (scored[f"{node}/loss_sum"], scored[f"{node}/tokens"])
    for node in node_ids:
        path = root / "nodes" / node / MERGED
        if node not in found and path.exists():
            with np.load(path) as scored:
                found[node] = (scored["loss_sum"], scored["tokens"])
    return {
        node: (np.asarray(s, dtype=np.float64), np.asarray(t, dtype=np.float64))
        for node, (s, t) in found.items()
    }


def check_means(
    runs: pd.DataFrame, scored: dict[str, tuple[np.ndarray, ...]], where: Path
) -> float:
    """The largest relative gap between sft_val_loss and the scored examples' mean; refuses
    one above LOSS_TOLERANCE, naming the node."""
    worst = 0.0
    for row in runs.itertuples():
        if row.node_id not in scored:
            continue
        loss_sum, tokens = scored[row.node_id]
        mean = loss_sum.sum() / tokens.sum()
        gap = abs(mean - row.sft_val_loss) / abs(row.sft_val_loss)
        if not gap <= LOSS_TOLERANCE:
            raise ProximityError(
                f"{where}: node {row.node_id} ({row.model}, seed {row.seed}, {row.mixture_spec}, "
                f"target {row.target}): mean loss over its {len(tokens)} scored validation "
                f"examples is {mean:.9f}, results.csv sft_val_loss is {row.sft_val_loss:.9f} "
                f"(relative gap {gap:.1e} > {LOSS_TOLERANCE:.0e}); the scored examples are not "
                "the ones the validation loss was computed on"
            )
        worst = max(worst, gap)
    return worst


def _resampled_losses(
    nodes: list[str], scored: dict[str, tuple[np.ndarray, ...]], counts: np.ndarray, where: str
) -> np.ndarray:
    """Replicates × nodes matrix of token-weighted mean losses under the example counts."""
    tokens = scored[nodes[0]][1]
    for node in nodes[1:]:
        other = scored[node][1]
        if other.shape != tokens.shape or not np.array_equal(other, tokens):
            raise ProximityError(
                f"{where}: node {node} scored {len(other)} validation examples with other token "
                f"counts than node {nodes[0]} ({len(tokens)}); every branch and seed of a target "
                "must be scored on the same examples in the same order"
            )
    sums = np.column_stack([scored[n][0] for n in nodes])
    return (counts @ sums) / (counts @ tokens)[:, None]


def example_bootstrap(
    results: pd.DataFrame,
    outcomes: pd.DataFrame,
    root: Path,
    *,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Per (branch, target) pair: the standard error of its seed-mean improvement over
    resampled validation examples, beside its seed spread; medians per model size.

    Returns `{"recorded": False, "why": ...}` when the grid kept no per-example losses (grids
    from before they were recorded) or no pair has all its runs scored.
    """
    if "node_id" not in results or "node_id" not in outcomes:
        return {"recorded": False, "why": "results.csv has no node_id column"}
    chosen = selected_runs(results)
    scored = load_example_losses(root, list(chosen["node_id"].astype(str)))
    if not scored:
        return {"recorded": False, "why": f"no {MERGED} in {root} or its nodes/"}
    gap = check_means(chosen, scored, root)
    controls = chosen[chosen["branch_kind"] == "control"].set_index(["model", "seed", "target"])
    rng = np.random.default_rng(seed)
    rows = []
    for (model, target), group in outcomes.groupby(["model", "target"], sort=True):
        group = group[group["branch_kind"] != "control"]
        control_of = {s: str(controls.loc[(model, s, target), "node_id"]) for s in group["seed"]}
        needed = {*control_of.values(), *group["node_id"].astype(str)}
        if group.empty or not needed <= scored.keys():
            continue  # a run without scored examples: this target's SE is not recorded
        nodes = sorted(needed)
        n_examples = len(scored[nodes[0]][1])
        counts = rng.multinomial(n_examples, np.full(n_examples, 1 / n_examples), n_bootstrap)
        losses = _resampled_losses(nodes, scored, counts.astype(np.float64), f"{root} ({target})")
        column = {node: i for i, node in enumerate(nodes)}
        for keys, pair in group.groupby(BRANCH_KEYS, dropna=False, sort=True):
            per_seed = []
            for run in pair.itertuples():
                control = losses[:, column[control_of[run.seed]]]
                per_seed.append((control - losses[:, column[str(run.node_id)]]) / control)
            replicates = np.mean(per_seed, axis=0)
            seed_std = pair["improvement"].std(ddof=1) if len(pair) > 1 else np.nan
            rows.append(
                {
                    **dict(zip(BRANCH_KEYS, keys, strict=True)),
                    "improvement": float(pair["improvement"].mean()),
                    "improvement_se_examples": float(np.std(replicates, ddof=1)),
                    "improvement_seed_std": _number(seed_std),
                    "improvement_seed_se": _number(seed_std / np.sqrt(len(pair))),
                    "n_seeds": len(pair),
                    "n_examples": n_examples,
                }
            )
    if not rows:
        branches = (outcomes["branch_kind"] != "control").any()
        why = (
            "no branch has every run (and its control) scored"
            if branches
            else ("no branch beside the control has a selected run yet")
        )
        return {"recorded": False, "why": why}
    return {
        "recorded": True,
        "method": "bootstrap standard error: validation examples resampled with "
        "replacement, the same indices for the control and every branch and seed of a "
        "(model, target); improvement averaged over seeds per replicate",
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "max_relative_loss_gap": float(gap),
        "loss_gap_tolerance": LOSS_TOLERANCE,
        "per_model": _per_model(pd.DataFrame(rows)),
        "pairs": rows,
    }


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _per_model(pairs: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Median over pairs of the examples' SE, the seed std and the seed SE (std/√n)."""
    summary = {}
    for model, group in pairs.groupby("model", sort=True):
        seed_std = group["improvement_seed_std"].dropna()
        seed_se = group["improvement_seed_se"].dropna()
        summary[str(model)] = {
            "n_pairs": len(group),
            "n_examples": sorted(int(n) for n in group["n_examples"].unique()),
            "median_se_examples": float(group["improvement_se_examples"].median()),
            "median_seed_std": float(seed_std.median()) if len(seed_std) else None,
            "median_seed_se": float(seed_se.median()) if len(seed_se) else None,
        }
    return summary


def sampling_error_lines(statistics: dict[str, Any]) -> list[str]:
    """For the terminal and the report: per model size, the outcome's sampling error over
    validation examples beside the seed spread (medians over pairs)."""
    error = statistics.get("outcome_sampling_error")
    if not error:
        return ["outcome sampling error over validation examples: not recorded (old analysis)"]
    if not error.get("recorded"):
        return [f"outcome sampling error over validation examples: not recorded ({error['why']})"]
    lines = []
    for model, m in error["per_model"].items():
        seeds = (
            f"seed std {m['median_seed_std']:.2%}, seed SE {m['median_seed_se']:.2%}"
            if m["median_seed_std"] is not None
            else "seed spread: one seed"
        )
        lines.append(
            f"outcome sampling error {model}: bootstrap SE over validation examples "
            f"{m['median_se_examples']:.2%} (median over {m['n_pairs']} pairs, "
            f"{'/'.join(str(n) for n in m['n_examples'])} examples, {error['n_bootstrap']} "
            f"resamples) beside {seeds} (medians)"
        )
    return lines
