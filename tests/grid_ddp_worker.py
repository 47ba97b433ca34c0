"""One rank of a grid node's CPU DDP run for tests/test_ddp_cpu.py, started by torchrun:

    torchrun --standalone --nproc_per_node=2 tests/grid_ddp_worker.py NODE_DIR

Every rank but 0 sees no checkpoint in the node's folder (a shared filesystem that has not
caught up): the grid worker must follow rank 0's decision to resume.
"""

from __future__ import annotations

import os
import sys

import proximity.training.checkpoint
from proximity.training import loop
from proximity.training.grid import worker

if __name__ == "__main__":
    if int(os.environ.get("RANK", "0")) > 0:
        proximity.training.checkpoint.latest_checkpoint = lambda root: None  # the worker's own look
        loop.latest_checkpoint = lambda root: None  # the loop's (overruled by the broadcast)
    sys.exit(worker.main(sys.argv[1:]))
