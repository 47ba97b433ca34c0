"""Grid benchmark: tokens trained by the shared plan vs a naive grid, and --jobs 1 vs 2 wall time.

    PROXIMITY_DATA_DIR=../shared/data python benchmarks/bench_grid.py            # tokens only
    PROXIMITY_DATA_DIR=../shared/data python benchmarks/bench_grid.py --wall     # + smoke runs
    python benchmarks/bench_grid.py --results figures/micro/results.csv          # measured

Tokens: the naive grid retrains, for every SFT run, its whole lineage (pretraining up to the
branch start, the branch, the SFT); the plan trains each prefix once and takes the C4 control
from the pretraining run itself. The presets' figures are `--dry-run` estimates; `--results`
counts what a finished grid trained, from its results.csv: the plan trained each pretraining
node's final prefix, each branch and each SFT run once; the naive grid trains, per row,
tokens_pretrain + tokens_midtrain + tokens_sft.

Wall time: the smoke grid run twice from scratch into fresh folders (shared token cache
cleared), `--jobs 1` (one node at a time, all cores) and `--jobs 2` (two at a time, cores
split). Measured side by side in one run; prints both and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proximity.training.grid.estimate import estimate, naive_tokens
from proximity.training.grid.plan import build_plan
from proximity.training.grid.spec import load_grid


def tokens(preset: str, data_dir: str | None) -> None:
    plan = build_plan(load_grid(preset))
    est = estimate(plan, data_dir, measure=False)
    shared = sum(e.tokens or 0 for e in est.values())
    naive = naive_tokens(plan, est)
    ratio = f"{naive / shared:.2f}x" if naive else "?"
    print(f"{preset:11s} plan {shared:>16,} tokens | naive {naive or 0:>18,} tokens | {ratio}")


def measured_tokens(path: str) -> None:
    import pandas as pd

    rows = pd.read_csv(path)
    naive = int((rows["tokens_pretrain"] + rows["tokens_midtrain"] + rows["tokens_sft"]).sum())
    # Each pretraining node runs to the grid's last step: its tokens are the largest prefix any
    # branch starts from plus that branch's tokens (the control's row: its start is the end).
    ends = rows["tokens_pretrain"] + rows["tokens_midtrain"]
    pretrain = int(ends.groupby(rows["pretrain_node_id"]).max().sum())
    branches = rows[rows["branch_node_id"] != rows["pretrain_node_id"]]
    midtrain = int(branches.drop_duplicates("branch_node_id")["tokens_midtrain"].sum())
    sft = int(rows["tokens_sft"].sum())
    plan = pretrain + midtrain + sft
    print(
        f"{path}: trained {plan:,} tokens (pretraining {pretrain:,}, branches {midtrain:,}, "
        f"SFT {sft:,}) | naive {naive:,} | {naive / plan:.2f}x fewer"
    )


def wall(jobs: int, data_dir: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROXIMITY_CACHE_DIR": str(Path(tmp) / "cache")}
        command = [sys.executable, "-c", "from proximity.cli import main; main()", "train-grid",
                   "smoke", "--out", str(Path(tmp) / "grid"), "--data-dir", data_dir,
                   "--jobs", str(jobs)]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--wall", action="store_true", help="also time smoke with --jobs 1 and 2")
    parser.add_argument(
        "--repeats", type=int, default=1, help="--wall runs per setting, interleaved 1, 2, 1, 2"
    )
    parser.add_argument("--results", help="a finished grid's results.csv: tokens it trained")
    args = parser.parse_args()
    if args.results:
        measured_tokens(args.results)
        return
    data_dir = os.environ.get("PROXIMITY_DATA_DIR")
    for preset in ("smoke", "micro", "paper-70m", "paper-160m"):
        tokens(preset, data_dir)
    if args.wall:
        if not data_dir:
            sys.exit("set PROXIMITY_DATA_DIR for --wall")
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.repeats):  # interleaved, so a change in load hits both settings
            for jobs in (1, 2):
                times[jobs].append(wall(jobs, data_dir))
        for jobs, runs in times.items():
            print(f"smoke --jobs {jobs}: " + ", ".join(f"{t:.1f} s" for t in runs))
        one, two = statistics.median(times[1]), statistics.median(times[2])
        worst = min(a / b for a, b in zip(times[1], times[2], strict=True))
        print(f"median --jobs 1 {one:.1f} s vs --jobs 2 {two:.1f} s: {one / two:.2f}x "
              f"(least favourable pair {worst:.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
