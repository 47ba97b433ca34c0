"""A grid run in parts (one model size and seed at a time), saved and merged into one folder.

A study too long for one sitting runs as parts into one grid folder; after each part,
`collect` saves that part's tables into `FIGURES/parts/` (small files, committed), so a later
sitting on a fresh clone loses nothing. `merge` joins every saved part into the folder the
analysis reads (`results.csv`, `pretraining.csv`, `val_examples.npz`, `grid.yaml`), as if the
whole grid had run at once: rows are keyed by node id, so a part saved twice counts once.

    python -m proximity.training.grid.merge_parts collect RUNS/study figures/study \
        --part micro-2l-128-seed0
    python -m proximity.training.grid.merge_parts merge figures/study --spec study
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from proximity.atomic import atomic_path, write_text_atomic
from proximity.errors import ProximityError
from proximity.training.config import read_yaml_mapping
from proximity.training.grid.spec import load_grid

PARTS = "parts"


def collect(run_dir: Path, figures: Path, part: str) -> list[Path]:
    """Save a finished part's results, pretraining table, wall time and the per-example
    validation losses of its selected SFT runs under `figures/parts/`."""
    results_path = run_dir / "results.csv"
    if not results_path.exists():
        raise ProximityError(f"{results_path} not found: run the part first")
    parts = figures / PARTS
    parts.mkdir(parents=True, exist_ok=True)
    saved = []
    results = pd.read_csv(results_path)
    target = parts / f"results-{part}.csv"
    with atomic_path(target) as tmp:
        results.to_csv(tmp, index=False)
    saved.append(target)
    if (run_dir / "pretraining.csv").exists():
        target = parts / f"pretraining-{part}.csv"
        shutil.copyfile(run_dir / "pretraining.csv", target)
        saved.append(target)
    arrays = {}
    for node_id in results.loc[results.selected.astype(bool), "node_id"]:
        path = run_dir / "nodes" / node_id / "val_examples.npz"
        if path.exists():
            with np.load(path) as scored:
                arrays[f"{node_id}/loss_sum"] = scored["loss_sum"]
                arrays[f"{node_id}/tokens"] = scored["tokens"]
    if arrays:
        target = parts / f"val_examples-{part}.npz"
        with atomic_path(target) as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        saved.append(target)
    for tokenizer in (run_dir / "nodes").glob("tokenizer-*/tokenizer.json"):
        target = figures / "nodes" / tokenizer.parent.name / "tokenizer.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tokenizer, target)
    return saved


def merge(figures: Path, spec: str | None) -> dict[str, int]:
    """Join every saved part into `figures/` (results.csv, pretraining.csv, val_examples.npz,
    grid.yaml from `spec` with no machine path in it)."""
    parts = figures / PARTS
    result_files = sorted(parts.glob("results-*.csv"))
    if not result_files:
        raise ProximityError(f"no saved parts in {parts}: run `make study-part` first")
    results = pd.concat([pd.read_csv(f) for f in result_files], ignore_index=True)
    results = results.drop_duplicates("node_id", keep="last")
    with atomic_path(figures / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    pretraining_files = sorted(parts.glob("pretraining-*.csv"))
    if pretraining_files:
        table = pd.concat([pd.read_csv(f) for f in pretraining_files], ignore_index=True)
        with atomic_path(figures / "pretraining.csv") as tmp:
            table.drop_duplicates("node_id", keep="last").to_csv(tmp, index=False)
    arrays: dict[str, np.ndarray] = {}
    for path in sorted(parts.glob("val_examples-*.npz")):
        with np.load(path) as scored:
            arrays.update({key: scored[key] for key in scored.files})
    if arrays:
        with atomic_path(figures / "val_examples.npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    if spec is not None:
        write_portable_spec(load_grid(spec).to_dict(), figures)
    return {"parts": len(result_files), "rows": len(results), "scored_runs": len(arrays) // 2}


def write_portable_spec(resolved: dict[str, Any], figures: Path) -> Path:
    """`figures/grid.yaml` without the data folder (analysis then reads $PROXIMITY_DATA_DIR or
    --data-dir), so a committed folder holds no machine's absolute path."""
    resolved = {**resolved, "data": {**resolved.get("data", {}), "data_dir": None}}
    figures.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(figures / "grid.yaml", yaml.safe_dump(resolved, sort_keys=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proximity.training.grid.merge_parts", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("collect", help="save a finished part's tables")
    one.add_argument("run_dir", type=Path)
    one.add_argument("figures", type=Path)
    one.add_argument("--part", required=True, help="a name for the part, e.g. micro-2l-128-seed0")
    both = commands.add_parser("merge", help="join every saved part")
    both.add_argument("figures", type=Path)
    both.add_argument("--spec", default=None, help="the grid preset or YAML, for grid.yaml")
    copy = commands.add_parser("spec", help="copy a grid's grid.yaml without its data folder")
    copy.add_argument("grid_yaml", type=Path)
    copy.add_argument("figures", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "collect":
            for path in collect(args.run_dir, args.figures, args.part):
                print(f"saved {path}")
        elif args.command == "spec":
            if not args.grid_yaml.is_file():
                raise ProximityError(f"{args.grid_yaml}: no such grid.yaml")
            resolved = read_yaml_mapping(args.grid_yaml, "grid settings")
            print(f"saved {write_portable_spec(resolved, args.figures)}")
        else:
            print(merge(args.figures, args.spec))
    except ProximityError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
