"""Loss curves of one branch's phases, read from the grid's node folders (figure 6).

The trainer appends one JSON line per (step, dataset) to DIR/nodes/<node_id>/metrics.jsonl;
a branch's history is its pretraining node up to the start step, the branch node, and an SFT
node. Read with pandas, not training/ (which would import torch for nothing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

CURVE_COLUMNS = ["phase", "step", "split", "dataset", "loss"]


def read_curve(path: Path) -> pd.DataFrame:
    """One node's metrics.jsonl as a table (empty when the node has none)."""
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    table = pd.read_json(path, lines=True)
    missing = [c for c in CURVE_COLUMNS if c not in table.columns]
    if missing:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return table[CURVE_COLUMNS]


def example_branch(outcomes: pd.DataFrame) -> pd.Series | None:
    """The run figure 6 shows: the main midtraining branch that helped its target most (seed
    and model: the first), so the curves show the effect the paper is about."""
    mid = outcomes[(outcomes["branch_kind"] == "midtrain") & ~outcomes["ablation"]]
    needed = {"node_id", "branch_node_id", "pretrain_node_id"}
    if mid.empty or not needed <= set(mid.columns):
        return None
    first = mid[(mid["model"] == mid["model"].iloc[0]) & (mid["seed"] == mid["seed"].min())]
    return first.sort_values("improvement", ascending=False).iloc[0]


def branch_curves(root: Path, run: pd.Series) -> pd.DataFrame:
    """Pretraining up to the branch's start step, the branch, and its SFT run, stacked."""
    nodes = root / "nodes"
    pretrain = read_curve(nodes / str(run["pretrain_node_id"]) / "metrics.jsonl")
    pretrain = pretrain[pretrain["step"] <= int(run["start_step"])]
    parts = [
        pretrain.assign(phase="pretrain"),
        read_curve(nodes / str(run["branch_node_id"]) / "metrics.jsonl").assign(phase="midtrain"),
        read_curve(nodes / str(run["node_id"]) / "metrics.jsonl").assign(phase="sft"),
    ]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def copy_example_curves(runs_dir: str | Path, out: str | Path) -> list[Path]:
    """Copy the metrics.jsonl files figure 6 reads (its branch's three nodes) from a grid
    folder into `out/nodes/`, so a folder of committed results (figures/micro) can redraw
    figure 6 without the grid's checkpoints."""
    runs_dir, out = Path(runs_dir), Path(out)
    outcomes = pd.read_csv(out / "outcomes.csv")
    run = example_branch(outcomes)
    copied = []
    if run is None:
        return copied
    for column in ("pretrain_node_id", "branch_node_id", "node_id"):
        source = runs_dir / "nodes" / str(run[column]) / "metrics.jsonl"
        if source.exists():
            target = out / "nodes" / str(run[column]) / "metrics.jsonl"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            copied.append(target)
    return copied
