"""Process-group setup for DDP under `torchrun`; a single process needs none of it.

`torchrun` sets RANK, LOCAL_RANK and WORLD_SIZE; without them we are one process on one device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from proximity.errors import ProximityError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProximityError(f"system.device={requested} but no CUDA GPU is visible; use cpu")
    return device


def setup(requested_device: str = "auto", timeout_minutes: float = 30) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device.

    The timeout is explicit: a collective that waits longer (a rank stuck or dead) fails the
    job with an error instead of hanging, and no collective waits on data preparation (ranks
    wait on the prepared data's manifest file instead; see training/data/tokenized.py).
    """
    if "RANK" not in os.environ:
        device = pick_device(requested_device)
        if device.type == "cuda" and device.index is not None:
            # cuda:1 in one process: make it the current device, so that everything keyed to
            # "the current device" (CUDA RNG save/restore, default allocations) means it.
            torch.cuda.set_device(device)
        return DistInfo(rank=0, local_rank=0, world_size=1, device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available() and requested_device != "cpu":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=timeout_minutes))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average a scalar tensor over ranks (for logging and the NaN check, so all ranks agree)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.AVG if value.is_cuda else dist.ReduceOp.SUM)
        if not value.is_cuda:  # gloo has no AVG
            value /= info.world_size
    return value


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over ranks (e.g. the trained-token count of the global batch)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def broadcast_object(value: Any, info: DistInfo) -> Any:
    """Rank 0's `value` on every rank: one process decides (what to resume), all follow."""
    if not info.enabled:
        return value
    box = [value if info.is_main else None]
    dist.broadcast_object_list(box, src=0)  # NCCL: via the current device, set in setup()
    return box[0]


def gather_objects(value: Any, info: DistInfo) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank (e.g. per-rank RNG states)."""
    if not info.enabled:
        return [value]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, value)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
