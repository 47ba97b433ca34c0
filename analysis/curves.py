"""Loss curves of one branch's phases, read from the grid's node folders (figure 6).

The trainer appends one JSON line per (step, dataset) to DIR/nodes/<node_id>/metrics.jsonl;
a branch's history is its pretraining node up to the start step, the branch node, and an SFT
node. Read with pandas, not training/ (which would import torch for nothing).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from proximity.analysis.results import load_grid, relative_improvements

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


def folder_example(folder: str | Path) -> pd.Series | None:
    """Figure 6's run for a folder holding a results.csv (no correlate needed first)."""
    return example_branch(relative_improvements(load_grid(folder).results))


def copy_example_curves(runs_dir: str | Path, out: str | Path) -> list[Path]:
    """Copy the metrics.jsonl files figure 6 reads (its branch's three nodes) from a grid
    folder into `out/nodes/`, so a folder of committed results (figures/micro) can redraw
    figure 6 without the grid's checkpoints."""
    runs_dir, out = Path(runs_dir), Path(out)
    run = folder_example(out)
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


def retrace_check(runs_dir: str | Path, out: str | Path) -> list[str]:
    """Lines comparing figure 6's SFT run retraced in `runs_dir` (same node ids, denser
    evaluation) with the losses `out/results.csv` recorded for it: the curves stand for the
    run the figures report only if they match (evaluating never changes a node's numbers)."""
    runs_dir, out = Path(runs_dir), Path(out)
    run = folder_example(out)
    if run is None:
        return ["no midtraining branch with an outcome: figure 6 has no branch to show"]
    recorded = pd.read_csv(out / "results.csv").set_index("node_id").loc[run["node_id"]]
    result_path = runs_dir / "nodes" / str(run["node_id"]) / "result.json"
    if not result_path.exists():
        return [f"{result_path}: not there; run the chain first (make study-curves)"]
    retraced = json.loads(result_path.read_text())["val_end"]
    lines = []
    for column in ("pretrain_node_id", "branch_node_id", "node_id"):
        curve = read_curve(runs_dir / "nodes" / str(run[column]) / "metrics.jsonl")
        evaluated_steps = curve.loc[curve["split"] == "val", "step"].nunique()
        if evaluated_steps <= 2:  # start and end only: a curve of two points
            lines.append(
                f"{run[column]}: evaluated at {evaluated_steps} step(s) only, no curve to draw; "
                "run its chain with intermediate evaluations first (make study-pretraining, "
                "or make study-curves)"
            )
    for column, dataset in (("sft_val_loss", recorded["target_spec"]), ("c4_val_loss", "c4")):
        ours, theirs = retraced.get(dataset), float(recorded[column])
        same = ours is not None and abs(ours - theirs) <= 1e-9 * max(1.0, abs(theirs))
        lines.append(
            f"{run['node_id']} {column}: retraced {ours} vs recorded {theirs}: "
            + ("equal" if same else "DIFFERENT")
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """`example FIGURES`: figure 6's SFT node id, model and seed; `copy RUNS FIGURES`: its
    three curves into FIGURES/nodes/, after checking the retraced run's losses against
    FIGURES/results.csv."""
    parser = argparse.ArgumentParser(prog="python -m proximity.analysis.curves")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("example").add_argument("figures", type=Path)
    copy = commands.add_parser("copy")
    copy.add_argument("runs_dir", type=Path)
    copy.add_argument("figures", type=Path)
    args = parser.parse_args(argv)
    if args.command == "example":
        run = folder_example(args.figures)
        if run is None:
            print(f"{args.figures}: no midtraining branch with an outcome", file=sys.stderr)
            return 2
        print(run["node_id"], run["model"], run["seed"])
        return 0
    lines = retrace_check(args.runs_dir, args.figures)
    print("\n".join(lines))
    if not all(line.endswith("equal") for line in lines):
        return 2
    for path in copy_example_curves(args.runs_dir, args.figures):
        print(f"copied {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
