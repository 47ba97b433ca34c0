"""Validation loss on held-out splits, and the JSONL metrics file every phase appends to.

One metrics line per (step, dataset):
`{"phase": "midtrain", "step": 400, "tokens": 3276800, "split": "val", "dataset": "c4",
  "loss": 4.81, "lr": 0.00031, ...}`; training lines have `"split": "train"` plus tokens_per_s.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
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
    logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


def token_loss_sum(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Sum (not mean) of the next-token losses over targets that are not IGNORE_INDEX.

    SFT divides this by the trained tokens of the whole global batch, so every trained token
    weighs the same whatever the micro-batch size, accumulation and number of GPUs.
    """
    logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(
        logits.float().view(-1, logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )


# Positions per chunk of the evaluation loss: the fp32 logits of one chunk are
# EVAL_CHUNK x vocabulary (4 MB per 20 positions at 50k), never batch x seq_len x vocabulary.
EVAL_CHUNK = 1024


def chunked_loss_sum(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunk: int = EVAL_CHUNK
) -> torch.Tensor:
    """`token_loss_sum` without materialising all logits: the output head runs per chunk of
    positions on the final hidden states (a 2,048-token batch of 16 at a 50k vocabulary would
    otherwise hold 6.6 GB of fp32 logits). Falls back to the whole batch for models without a
    separate output head."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    if head is None or base is None or base is model:
        return token_loss_sum(model, inputs, targets)
    hidden = base(input_ids=inputs, use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.size(-1))
    flat_targets = targets.reshape(-1)
    total = torch.zeros((), dtype=torch.float64, device=hidden.device)
    for start in range(0, hidden.size(0), chunk):
        logits = head(hidden[start : start + chunk]).float()
        total += F.cross_entropy(
            logits, flat_targets[start : start + chunk], ignore_index=IGNORE_INDEX, reduction="sum"
        ).double()
    return total


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
    n = len(split)
    if max_batches is not None:
        n = min(n, batch_size * max_batches)

    def batches() -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            ids, labels = split.rows(np.arange(start, min(n, start + batch_size)))
            yield sft_batch(torch.from_numpy(ids), torch.from_numpy(labels))

    return EvalSet(name, batches)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    eval_sets: list[EvalSet],
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Token-weighted mean loss per eval set (every unmasked target token counts once).

    Summed in float64 over chunks of positions (see `chunked_loss_sum`), one host sync per
    eval set rather than per batch.
    """
    was_training = model.training
    model.eval()
    results = {}
    for eval_set in eval_sets:
        total = torch.zeros((), dtype=torch.float64, device=device)
        count = torch.zeros((), dtype=torch.int64, device=device)
        for inputs, targets in eval_set.batches():
            inputs, targets = inputs.to(device), targets.to(device)
            with autocast or contextlib.nullcontext():
                total += chunked_loss_sum(model, inputs, targets)
            count += (targets != IGNORE_INDEX).sum()
        n = int(count)
        results[eval_set.name] = float(total) / n if n else math.nan
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
        """On resume, cut the tail a killed run wrote after its last checkpoint (redone now).

        The file is never rewritten: lines are only appended, and this cuts it in place
        (`os.truncate`) at the first line that is past `step` or cut short by the kill, so
        every line before it keeps its bytes.
        """
        if not (self.enabled and self.path.exists()):
            return
        offset = 0
        with self.path.open("rb") as file:
            for raw in file:
                try:
                    record = json.loads(raw)
                    complete = raw.endswith(b"\n")
                except (json.JSONDecodeError, UnicodeDecodeError):
                    complete = False
                if not complete or (record.get("phase") == phase and record.get("step", 0) > step):
                    break
                offset += len(raw)
        os.truncate(self.path, offset)

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
