"""Start-of-phase validation losses, remembered across runs that start from the same weights.

Every SFT run of a grid evaluates where it starts: the target's validation loss and C4's, before
its first step (results.csv's "before" columns, the reference for gains and forgetting). The
three or four learning rates of one (branch, target) start from the same weights and score the
same batches, and so do all of a branch's targets on C4: on the study grid those repeats were
about a tenth of every SFT run's time. A run now looks each start loss up by a key naming
everything the number depends on (the weights' bytes, the evaluation batches' bytes, the machine:
CPU vector width or GPU, torch's build, the autocast dtype, the thread count, deterministic mode,
torch's and transformers' versions, the model's configuration and the source of its forward pass
and of the evaluation code), so a hit is the very float the evaluation would have computed
again (tested bitwise), and anything that could change it misses.

Entries are small JSON files written atomically; a folder that cannot be written only means no
caching (a read-only or shared cache never fails a run).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import platform
from pathlib import Path
from typing import Any

import torch
import transformers

from proximity.atomic import atomic_path
from proximity.training import attention as attention_module
from proximity.training import evaluate as evaluate_module
from proximity.training import losses as losses_module
from proximity.training.evaluate import EvalSet, evaluate

FORMAT = 1  # bump when an entry's meaning changes


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 over every state-dict entry's name, dtype, shape and bytes (a few ms at micro
    scale; about a second for 160M parameters)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def batches_digest(eval_set: EvalSet) -> str:
    """sha256 over the eval set's batches (inputs and targets) exactly as they are scored."""
    digest = hashlib.sha256(eval_set.name.encode())
    for inputs, targets in eval_set.batches():
        for tensor in (inputs, targets):
            flat = tensor.reshape(-1).contiguous()
            digest.update(f"{flat.dtype}|{tuple(tensor.shape)}|".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def compute_context(
    model: torch.nn.Module, device: torch.device, bf16: bool
) -> dict[str, Any] | None:
    """What besides weights and batches decides the float an evaluation returns: the machine
    (a grid folder may move, or be shared on a cluster: CPU vector width and torch's build
    change how reductions round), the numeric settings, the model's configuration and the
    code of the forward pass and losses. None when that code cannot be read (no caching)."""
    config = getattr(model, "config", None)
    settings = config.to_dict() if hasattr(config, "to_dict") else {}
    for volatile in ("_name_or_path", "transformers_version"):
        settings.pop(volatile, None)
    code = hashlib.sha256()
    try:
        for module in (evaluate_module, losses_module, attention_module, type(model)):
            code.update(Path(inspect.getsourcefile(module) or "").read_bytes())
    except (OSError, TypeError):
        return None
    if device.type == "cuda":
        machine = {
            "gpu": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "tf32": [torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32],
        }
    else:
        machine = {"cpu": torch.backends.cpu.get_cpu_capability(), "arch": platform.machine()}
    return {
        "format": FORMAT,
        "device": device.type,
        **machine,
        "torch_build": hashlib.sha256(torch.__config__.show().encode()).hexdigest(),
        "bf16": bf16,
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": type(model).__name__,
        "config": json.dumps(settings, sort_keys=True, default=str),
        "code": code.hexdigest(),
    }


class StartEvalCache:
    """Start losses on disk under `folder`, one JSON file per key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def key(self, weights: str, eval_set: EvalSet, context: dict[str, Any]) -> str:
        payload = {"weights": weights, "batches": batches_digest(eval_set), **context}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> float | None:
        try:
            return float(json.loads((self.folder / f"{key}.json").read_text())["loss"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or unreadable: evaluate instead

    def put(self, key: str, name: str, loss: float) -> None:
        # repr round-trips a float exactly, so a hit returns the computed value bit for bit
        entry = json.dumps({"dataset": name, "loss": loss})
        with contextlib.suppress(OSError):  # no caching beats a failed run
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.folder / f"{key}.json") as tmp:
                Path(tmp).write_text(entry)


def evaluate_start(
    model: torch.nn.Module,
    eval_sets: list[EvalSet],
    cache: StartEvalCache | None,
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None,
    bf16: bool,
    write: bool,
) -> dict[str, float]:
    """`evaluate(model, eval_sets)`, each set's loss taken from `cache` when the same weights
    scored the same batches here before; computed (and stored when `write`) otherwise."""
    if cache is None:
        return evaluate(model, eval_sets, device=device, autocast=autocast)
    context = compute_context(model, device, bf16)
    if context is None:
        return evaluate(model, eval_sets, device=device, autocast=autocast)
    weights = weights_digest(model)
    losses = {}
    for eval_set in eval_sets:
        key = cache.key(weights, eval_set, context)
        loss = cache.get(key)
        if loss is None:
            loss = evaluate(model, [eval_set], device=device, autocast=autocast)[eval_set.name]
            if write:
                cache.put(key, eval_set.name, loss)
        losses[eval_set.name] = loss
    return losses
