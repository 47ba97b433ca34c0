"""Validation loss on held-out splits: fixed evaluation sets and the token-weighted mean loss.

The losses themselves are in training/losses.py, the metrics file in training/metrics_log.py
(both still importable from here, as before the split).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from training.losses import (  # noqa: F401  (lm_loss, token_loss_sum: re-exported)
    IGNORE_INDEX,
    Batch,
    chunked_loss_sum,
    lm_loss,
    packed_batch,
    sft_batch,
    token_loss_sum,
)
from training.metrics_log import MetricsLog, read_metrics  # noqa: F401  (re-exported)


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
