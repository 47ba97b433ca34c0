"""Checkpoints that resume exactly and load anywhere.

Layout of one checkpoint (a folder under `<out_dir>/checkpoints/`):

    step-000200/
      model/          Hugging Face format (save_pretrained) + tokenizer.json:
                      `GPTNeoXForCausalLM.from_pretrained("…/step-000200/model")` just works
      optimizer.pt    AdamW state
      state.pt        step, tokens seen, LR schedule, RNG states (python, numpy, torch, cuda)
                      of rank 0 and of every rank (rng_per_rank)
      config.yaml     the RunConfig that wrote it
    LATEST            name of the newest complete checkpoint

A checkpoint is written into a temporary folder and renamed into place, so a run killed while
saving leaves the previous checkpoint intact and never a half-written one under a real name.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers.utils import logging as hf_logging

from proximity.atomic import fsync_path, fsync_tree, write_text_atomic
from proximity.errors import ProximityError

LATEST = "LATEST"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def capture_rng() -> dict[str, Any]:
    """This process's RNG states; CUDA: the current device's only (one rank, one GPU).

    `get_rng_state_all` would also initialise a CUDA context on every other GPU of the node
    from every rank, and restoring all of them would overwrite the other ranks' generators.
    """
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's (set in setup())
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, list):  # older checkpoints: every device's state; take ours
        cuda = cuda[torch.cuda.current_device()] if torch.cuda.is_available() else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
    config_yaml: str,
    tokenizer=None,
    keep_last: int | None = None,
    protected_steps: set[int] | frozenset[int] = frozenset(),
) -> Path:
    """Write checkpoint `step` atomically, point LATEST at it, then prune old periodic ones.

    `model` must be the bare `GPTNeoXForCausalLM` (not DDP- or compile-wrapped).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    tmp = root / f".tmp-{checkpoint_name(step)}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    hf_logging.disable_progress_bar()  # a bar per save would break our own progress bar
    model.save_pretrained(tmp / "model", safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save(str(tmp / "model" / "tokenizer.json"))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    # `state` may carry "rng_per_rank" (every rank's generators, gathered by the loop).
    torch.save({**state, "step": step, "rng": capture_rng()}, tmp / "state.pt")
    (tmp / "config.yaml").write_text(config_yaml)
    fsync_tree(tmp)  # the data is on disk before the rename makes it visible
    if final.exists():  # re-saving a step (e.g. after a resume): replace it whole
        old = root / f".old-{checkpoint_name(step)}-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old)
    else:
        tmp.rename(final)
    fsync_path(root)
    write_text_atomic(root / LATEST, final.name)
    if keep_last is not None:
        _prune(root, keep_last=keep_last, protected={*protected_steps, step})
    return final


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root`, oldest first."""
    found = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith("step-") and (path / "state.pt").exists():
                found.append((int(path.name.removeprefix("step-")), path))
    return sorted(found)


def _prune(root: Path, *, keep_last: int, protected: set[int]) -> None:
    periodic = [(s, p) for s, p in list_checkpoints(root) if s not in protected]
    # `protected` always holds the newest step, so keep_last - 1 more periodic ones survive.
    for _, path in periodic[: max(0, len(periodic) - (keep_last - 1))]:
        shutil.rmtree(path, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint LATEST names, else the highest complete step, else None."""
    pointer = root / LATEST
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / "state.pt").exists():
            return path
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def resolve_checkpoint(path: str | Path) -> Path | None:
    """Accept a checkpoint folder, a run's `checkpoints/` folder or a run folder.

    Returns None when `path` is not one of ours (e.g. a plain Hugging Face model folder or hub id).
    """
    path = Path(path)
    if (path / "state.pt").exists():
        return path
    for root in (path, path / "checkpoints"):
        if root.is_dir() and (found := latest_checkpoint(root)) is not None:
            return found
    return None


@dataclass
class Checkpoint:
    path: Path
    state: dict[str, Any]

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def optimizer_state(self, device: torch.device | str = "cpu") -> dict | None:
        file = self.path / "optimizer.pt"
        return torch.load(file, map_location=device, weights_only=True) if file.exists() else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    resolved = resolve_checkpoint(path)
    if resolved is None:
        raise ProximityError(f"no checkpoint found at {path} (expected a folder with state.pt)")
    # weights_only=False: state.pt holds numpy RNG state, and we wrote the file ourselves.
    state = torch.load(resolved / "state.pt", map_location="cpu", weights_only=False)
    return Checkpoint(path=resolved, state=state)
