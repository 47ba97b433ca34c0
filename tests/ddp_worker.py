"""One rank of a CPU DDP run for tests/test_ddp_cpu.py, started by torchrun:

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py CONFIG [--resume]
        [--lagging-followers]

`--lagging-followers` makes every rank but 0 see no checkpoint in the run folder, as a rank on
a node whose shared filesystem has not caught up would: the loop must follow rank 0's decision.
"""

from __future__ import annotations

import argparse
import os

from proximity.training import loop
from proximity.training.config import RunConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--lagging-followers", action="store_true")
    args = parser.parse_args()
    if args.lagging_followers and int(os.environ.get("RANK", "0")) > 0:
        loop.latest_checkpoint = lambda root: None  # this rank's view of the folder is stale
    result = loop.train(RunConfig.from_yaml(args.config), resume=args.resume)
    print(f"rank {os.environ.get('RANK')} finished={result.finished} step={result.step}")


if __name__ == "__main__":
    main()
