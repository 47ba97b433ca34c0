"""Validation loss on held-out splits, and the JSONL metrics file every phase appends to.

One metrics line per (step, dataset):
`{"phase": "midtrain", "step": 400, "tokens": 3276800, "split": "val", "dataset": "c4",
  "loss": 4.81, "lr": 0.00031, ...}`; training lines have `"split": "train"` plus tokens_per_s.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets), already aligned: no shift needed


def lm_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over targets that are not IGNORE_INDEX.

    We shift outside the model and compute the loss here (not via `labels=`) so that pretraining
    and SFT share one code path and logits are upcast to fp32 once, under our control.
    """
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


def packed_batch(sequences: torch.Tensor) -> Batch:
    """Packed pretraining sequences of seq_len+1 tokens -> (inputs, next-token targets)."""
    return sequences[:, :-1], sequences[:, 1:]


def sft_batch(input_ids: torch.Tensor, labels: torch.Tensor) -> Batch:
    """Hugging Face convention (labels == input ids, -100 where masked) -> aligned pair."""
    return input_ids[:, :-1], labels[:, 1:]


@dataclass
class EvalSet:
    """A named held-out split; `batches()` yields the same fixed batches every time."""

    name: str
    batches: Callable[[], Iterator[Batch]]


def packed_eval_set(name: str, packed, batch_size: int, max_batches: int | None) -> EvalSet:
    """The first sequences of a validation split (fixed, so losses compare across steps)."""
    n = len(packed)
    if max_batches is not None:
        n = min(n, batch_size * max_batches)

    def batches() -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            rows = np.stack(
                [np.asarray(packed[i]) for i in range(start, min(n, start + batch_size))]
            )
            yield packed_batch(torch.from_numpy(rows.astype(np.int64)))

    return EvalSet(name, batches)


def sft_eval_set(name: str, split, batch_size: int, max_batches: int | None) -> EvalSet:
    n = len(split.input_ids)
    if max_batches is not None:
        n = min(n, batch_size * max_batches)

    def batches() -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            ids = torch.as_tensor(np.asarray(split.input_ids[start:stop]), dtype=torch.long)
            labels = torch.as_tensor(np.asarray(split.labels[start:stop]), dtype=torch.long)
            yield sft_batch(ids, labels)

    return EvalSet(name, batches)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    eval_sets: list[EvalSet],
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Token-weighted mean loss per eval set (every unmasked target token counts once)."""
    was_training = model.training
    model.eval()
    results = {}
    for eval_set in eval_sets:
        total, count = 0.0, 0
        for inputs, targets in eval_set.batches():
            inputs, targets = inputs.to(device), targets.to(device)
            n_tokens = int((targets != IGNORE_INDEX).sum())
            if n_tokens == 0:
                continue
            with autocast or contextlib.nullcontext():
                loss = lm_loss(model, inputs, targets)
            total += float(loss) * n_tokens
            count += n_tokens
        results[eval_set.name] = total / count if count else math.nan
    model.train(was_training)
    return results


class MetricsLog:
    """Append-only JSONL; each line is flushed so a killed run keeps what it measured."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = path
        self.enabled = enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, phase: str, step: int) -> None:
        """On resume, drop lines a killed run wrote after its last checkpoint (redone now)."""
        if not (self.enabled and self.path.exists()):
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if record.get("phase") != phase or record.get("step", 0) <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
