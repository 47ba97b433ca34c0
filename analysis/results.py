"""A grid's results (docs/RESULTS.md) -> relative improvement over the C4 control.

The outcome of a branch for a target is `(L_control − L_branch) / L_control` on the target's
SFT validation loss, same model, seed and target, each at its selected learning rate; positive
means the branch helped. Seeds are then averaged with their spread kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from proximity.data import is_split_note
from proximity.errors import ProximityError

RESULTS_COLUMNS = {
    "model": str, "seed": int, "branch_kind": str, "mixture": str, "mixture_spec": str,
    "pretrain_spec": str, "weight": float, "start_step": int, "ablation": bool, "target": str,
    "target_spec": str, "lr": float, "selected": bool, "sft_val_loss": float,
    "c4_val_loss": float,
}  # fmt: skip
"""The columns correlate needs (the contract has more; extra columns are kept)."""

BRANCH_KINDS = ("midtrain", "cpt", "control")
BRANCH_KEYS = ["model", "branch_kind", "mixture", "mixture_spec", "weight", "start_step",
               "ablation", "target"]  # fmt: skip
"""What identifies a (branch, target) pair across seeds."""


@dataclass
class Grid:
    """A grid's output folder: its results table and its resolved configuration."""

    root: Path
    results: pd.DataFrame
    config: dict[str, Any] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    """One line per selected run left out for a NaN or infinite loss (commands print them)."""

    @property
    def substitutes(self) -> list[str]:
        """Every substitute-data note the grid recorded, once each."""
        if "substitutes" not in self.results:
            return []
        notes = self.results["substitutes"].fillna("").astype(str)
        return sorted({n.strip() for text in notes for n in text.split(";") if n.strip()})

    @property
    def stand_ins(self) -> set[str]:
        """Datasets read from a local stand-in for other data (figures mark them `*`): every
        dataset with a substitute note other than "another split of the same data"."""
        # A note is `name: text`; a piece without a name is a split note continuing the one
        # before it or a branch's free-text note, neither of which names a stand-in.
        found: set[str] = set()
        for text in self.results.get("substitutes", pd.Series(dtype=str)).dropna().astype(str):
            for piece in text.split(";"):
                head = re.match(r"(\S+?): ", piece.strip())
                if head and not is_split_note(piece):
                    found.add(head.group(1))
        return found


def load_grid(root: str | Path) -> Grid:
    """Read DIR/results.csv (and DIR/grid.yaml when present), checking the columns."""
    root = Path(root)
    path = root / "results.csv" if root.is_dir() else root
    if not path.exists():
        raise ProximityError(
            f"{path}: no results.csv; run `proximity train-grid ... --out {root}` first "
            "or pass the folder it wrote"
        )
    try:
        results = pd.read_csv(path, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise ProximityError(
            f"{path}: empty file (no header, no rows); rerun `proximity train-grid` on its folder "
            "to rewrite it"
        ) from None
    except pd.errors.ParserError as error:
        raise ProximityError(f"{path}: not a readable CSV ({error})") from None
    missing = [c for c in RESULTS_COLUMNS if c not in results.columns]
    if missing:
        raise ProximityError(
            f"{path}: missing column(s) {', '.join(missing)} (see docs/RESULTS.md)"
        )
    if results.empty:
        raise ProximityError(f"{path}: no rows; the grid has not finished any SFT run yet")
    results = _typed(results, path)
    results, excluded = _without_nonfinite_losses(results, path)
    config_path = path.parent / "grid.yaml"
    config = {}
    if config_path.exists():
        config = yaml.safe_load(config_path.read_text()) or {}
    return Grid(root=path.parent, results=results, config=config, excluded=excluded)


def _without_nonfinite_losses(results: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Leave out what a NaN or infinite loss of a selected run would corrupt, saying what.

    Left in, pandas would skip a NaN in the seed mean while `n_seeds` still counted it, and an
    infinite loss would make the mean infinite. A bad `sft_val_loss` drops the run, so the
    pair's mean and `n_seeds` are over the seeds that remain (a dropped control also leaves
    out its seed's branches for that target: no control, no relative improvement). A bad
    `c4_val_loss` alone only blanks that loss (NaN), so forgetting is averaged without it
    and the improvement is kept. Unselected runs (other learning rates) never enter the
    statistics and are kept as they are.
    """
    results = results.copy()
    selected = results["selected"].to_numpy()
    sft_bad = selected & ~np.isfinite(results["sft_val_loss"].to_numpy(float))
    c4_bad = selected & ~sft_bad & ~np.isfinite(results["c4_val_loss"].to_numpy(float))
    notes = []
    for index, row in results[sft_bad | c4_bad].iterrows():
        line = int(index) + 2  # header is line 1; read_csv numbers the rows from 0
        node = f"node {row['node_id']}, " if "node_id" in row and pd.notna(row["node_id"]) else ""
        run = (
            f"({node}{row['model']} seed {row['seed']}, {row['branch_kind']} "
            f"{row['mixture_spec']} -> {row['target']}, lr {row['lr']:g})"
        )
        if np.isfinite(row["sft_val_loss"]):
            what = f"c4_val_loss = {row['c4_val_loss']} {run}: left out of forgetting only"
        else:
            control = row["branch_kind"] == "control"
            also = f"; with it, every branch of seed {row['seed']} for {row['target']}"
            what = f"sft_val_loss = {row['sft_val_loss']} {run}: left out{also if control else ''}"
        notes.append(f"{path}:{line}: {what}")
    results.loc[c4_bad, "c4_val_loss"] = np.nan
    return results[~sft_bad], notes


def _typed(results: pd.DataFrame, path: Path) -> pd.DataFrame:
    results = results.copy()
    for column, kind in RESULTS_COLUMNS.items():
        if kind is bool:
            values = results[column].map(_as_bool)
            bad = values.isna()
        elif kind is str:
            results[column] = results[column].fillna("").astype(str)
            continue
        else:
            values = pd.to_numeric(results[column], errors="coerce")
            bad = values.isna() & results[column].notna()
            if column in ("seed", "start_step"):
                bad |= values.isna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            raise ProximityError(
                f"{path}:{line}: column {column} has {results[column].iloc[line - 2]!r}, "
                f"expected {kind.__name__}"
            )
        results[column] = values.astype(kind) if kind is not float else values
    unknown = sorted(set(results["branch_kind"]) - set(BRANCH_KINDS))
    if unknown:
        raise ProximityError(
            f"{path}: column branch_kind has {unknown[0]!r}; expected one of "
            f"{', '.join(BRANCH_KINDS)}"
        )
    return results


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    return None


def selected_runs(results: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, seed, branch, target): the run at its selected learning rate.

    A (model, seed, branch, target) with several `selected` rows is a grid bug and refused;
    one with none (not finished yet) is left out.
    """
    chosen = results[results["selected"]]
    keys = ["seed", *BRANCH_KEYS]
    dupes = chosen.duplicated(keys, keep=False)
    if dupes.any():
        row = chosen[dupes].iloc[0]
        raise ProximityError(
            f"results.csv: {int(dupes.sum())} rows marked selected for one branch and target "
            f"(model {row['model']}, seed {row['seed']}, {row['mixture_spec']}, "
            f"target {row['target']}): exactly one LR may be selected"
        )
    return chosen


def relative_improvements(results: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed, branch, target): relative improvement over the same seed's control.

    Adds `control_sft_val_loss`, `improvement` = (L_control − L)/L_control and the same for
    forgetting on C4, `c4_change` = (L_c4 − L_c4_control)/L_c4_control (positive: forgot more).
    Branches whose seed has no control run for that target are dropped.
    """
    chosen = selected_runs(results)
    control = chosen[chosen["branch_kind"] == "control"]
    control = control[["model", "seed", "target", "sft_val_loss", "c4_val_loss"]].rename(
        columns={"sft_val_loss": "control_sft_val_loss", "c4_val_loss": "control_c4_val_loss"}
    )
    if control.duplicated(["model", "seed", "target"]).any():
        raise ProximityError(
            "results.csv: more than one selected control run for one (model, seed, target)"
        )
    joined = chosen.merge(control, on=["model", "seed", "target"], how="inner")
    joined["improvement"] = (joined["control_sft_val_loss"] - joined["sft_val_loss"]) / joined[
        "control_sft_val_loss"
    ]
    joined["c4_change"] = (joined["c4_val_loss"] - joined["control_c4_val_loss"]) / joined[
        "control_c4_val_loss"
    ]
    return joined.reset_index(drop=True)


def average_seeds(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (branch, target), with the spread: std (ddof 1), min, max, n."""
    grouped = outcomes.groupby(BRANCH_KEYS, dropna=False, sort=True)
    summary = grouped.agg(
        improvement=("improvement", "mean"),
        improvement_std=("improvement", "std"),
        improvement_min=("improvement", "min"),
        improvement_max=("improvement", "max"),
        sft_val_loss=("sft_val_loss", "mean"),
        sft_val_loss_std=("sft_val_loss", "std"),
        c4_val_loss=("c4_val_loss", "mean"),
        c4_val_loss_std=("c4_val_loss", "std"),
        control_sft_val_loss=("control_sft_val_loss", "mean"),
        n_seeds=("seed", "nunique"),
        seeds=("seed", lambda s: ",".join(str(v) for v in sorted(s))),
    )
    return summary.reset_index()


def seed_matrix(
    outcomes: pd.DataFrame,
    pairs: pd.DataFrame,
    value: str = "improvement",
    keys: list[str] = BRANCH_KEYS,
) -> np.ndarray:
    """pairs × seeds matrix of `value` (NaN where a pair lacks a seed), rows as `pairs`, which
    `keys` identify across seeds."""
    wide = outcomes.pivot_table(
        index=keys, columns="seed", values=value, aggfunc="mean", dropna=False
    )
    index = pd.MultiIndex.from_frame(pairs[keys])
    return wide.reindex(index).to_numpy(float)
