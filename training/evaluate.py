"""Validation loss on held-out splits: fixed evaluation sets and the token-weighted mean loss.

The losses themselves are in training/losses.py, the metrics file in training/metrics_log.py.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from proximity.training.losses import IGNORE_INDEX, Batch, chunked_losses, packed_batch, sft_batch


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
            indices = np.arange(start, min(n, start + batch_size))
            ids, labels = split.rows(indices, split.batch_width(indices))
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
    return {s.name: _score(model, s, device, autocast, per_example=False)[0] for s in eval_sets}


@torch.no_grad()
def example_losses(
    model: torch.nn.Module,
    eval_set: EvalSet,
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example (summed loss, loss-token count), float64 and int64, in the set's order.

    The mean loss `evaluate` reports is `sums.sum() / counts.sum()`; keeping the examples apart
    lets the analysis bootstrap over validation examples (the outcome's own sampling error,
    which seed-to-seed spread leaves out when every seed scores the same examples).
    """
    _, examples = _score(model, eval_set, device, autocast, per_example=True, mean=False)
    return examples


@torch.no_grad()
def evaluate_with_examples(
    model: torch.nn.Module,
    eval_sets: list[EvalSet],
    example_set: EvalSet,
    *,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """`evaluate(eval_sets)` and `example_losses(example_set)` at once. When `example_set` is
    one of `eval_sets` (an SFT target whose validation split fits eval.max_batches), its
    batches go through the model once for both, and both are bitwise what the separate calls
    return (tested): the end of every SFT run used to score its target twice."""
    losses, examples = {}, None
    for eval_set in eval_sets:
        shared = eval_set is example_set
        losses[eval_set.name], scored = _score(model, eval_set, device, autocast, shared)
        if shared:
            examples = scored
    if examples is None:
        examples = example_losses(model, example_set, device=device, autocast=autocast)
    return losses, examples


def _score(
    model: torch.nn.Module,
    eval_set: EvalSet,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None,
    per_example: bool,
    mean: bool = True,
) -> tuple[float, tuple[np.ndarray, np.ndarray] | None]:
    """One pass over an eval set: its token-weighted mean loss (when `mean`) and, when
    `per_example`, each example's (summed loss, loss-token count)."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    sums, counts = [], []
    for inputs, targets in eval_set.batches():
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast or contextlib.nullcontext():
            summed, rows = chunked_losses(model, inputs, targets, total=mean, rows=per_example)
        if summed is not None:
            total += summed
        if rows is not None:
            sums.append(rows.cpu().numpy())
            counts.append((targets != IGNORE_INDEX).sum(dim=1).cpu().numpy())
        count += (targets != IGNORE_INDEX).sum()
    model.train(was_training)
    n = int(count)
    loss = float(total) / n if n else math.nan
    if not per_example:
        return loss, None
    if not sums:
        return loss, (np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64))
    return loss, (np.concatenate(sums).astype(np.float64), np.concatenate(counts).astype(np.int64))
