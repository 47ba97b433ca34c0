"""The next-token losses every phase trains and evaluates with (one definition each).

Batches are `(inputs, targets)` already aligned (no shift inside the model); targets equal to
IGNORE_INDEX (padding, a masked prompt) carry no loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# torch.nn.CrossEntropyLoss's default ignore_index, as Hugging Face uses for masked labels.
IGNORE_INDEX = -100

Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs, targets), already aligned: no shift needed


def lm_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss over targets that are not IGNORE_INDEX.

    We shift outside the model and compute the loss here (not via `labels=`) so that pretraining
    and SFT share one code path. The logits are not upcast here: cross_entropy is one of
    autocast's float32 ops (CUDA and CPU), so under bf16 autocast it runs in fp32 on its own,
    with the values an explicit `.float()` gives (tested), and on fp32 logits it is the same
    call; an explicit copy would only add a vocabulary-wide tensor.
    """
    logits = model(input_ids=inputs, use_cache=False).logits
    return F.cross_entropy(
        logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )


def token_loss_sum(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Sum (not mean) of the next-token losses over targets that are not IGNORE_INDEX.

    SFT divides this by the trained tokens of the whole global batch, so every trained token
    weighs the same whatever the micro-batch size, accumulation and number of GPUs.
    """
    logits = model(input_ids=inputs, use_cache=False).logits  # fp32 loss: see lm_loss
    return F.cross_entropy(
        logits.view(-1, logits.size(-1)),
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
    total, _ = chunked_losses(model, inputs, targets, chunk, total=True, rows=False)
    return total


def chunked_row_loss_sums(
    model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, chunk: int = EVAL_CHUNK
) -> torch.Tensor:
    """Per-row sums of the next-token losses (float64 [batch]), with the output head run per
    chunk of positions like `chunked_loss_sum`: one forward pass scores a whole batch of
    validation examples one by one."""
    _, rows = chunked_losses(model, inputs, targets, chunk, total=False, rows=True)
    return rows


def chunked_losses(
    model: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = EVAL_CHUNK,
    *,
    total: bool = True,
    rows: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(`chunked_loss_sum`, `chunked_row_loss_sums`) from one forward pass, each asked-for one
    computed from the same logits with the very operations it uses alone, so both are bitwise
    what the separate calls return (tested): the end of an SFT run scores its target's mean
    loss and its per-example losses without running the model over the examples twice."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    base = getattr(model, "base_model", None)
    flat_targets = targets.reshape(-1)
    if head is None or base is None or base is model:
        logits = model(input_ids=inputs, use_cache=False).logits
        flat_logits = logits.reshape(-1, logits.size(-1))
        summed = row_sums = None
        if total:  # token_loss_sum's call: no upcast (see lm_loss)
            summed = F.cross_entropy(
                flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum"
            )
        if rows:
            losses = F.cross_entropy(
                flat_logits.float(), flat_targets, ignore_index=IGNORE_INDEX, reduction="none"
            )
            row_sums = losses.double().view(targets.shape).sum(dim=1)
        return summed, row_sums
    hidden = base(input_ids=inputs, use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.size(-1))
    summed = torch.zeros((), dtype=torch.float64, device=hidden.device) if total else None
    losses = torch.empty(hidden.size(0), dtype=torch.float64, device=hidden.device)
    for start in range(0, hidden.size(0), chunk):
        logits = head(hidden[start : start + chunk]).float()
        chunk_targets = flat_targets[start : start + chunk]
        if summed is not None:
            summed += F.cross_entropy(
                logits, chunk_targets, ignore_index=IGNORE_INDEX, reduction="sum"
            ).double()
        if rows:
            losses[start : start + chunk] = F.cross_entropy(
                logits, chunk_targets, ignore_index=IGNORE_INDEX, reduction="none"
            ).double()
    return summed, losses.view(targets.shape).sum(dim=1) if rows else None


def packed_batch(sequences: torch.Tensor) -> Batch:
    """Packed pretraining sequences of seq_len+1 tokens -> (inputs, next-token targets)."""
    return sequences[:, :-1], sequences[:, 1:]


def sft_batch(input_ids: torch.Tensor, labels: torch.Tensor) -> Batch:
    """Hugging Face convention (labels == input ids, -100 where masked) -> aligned pair."""
    return input_ids[:, :-1], labels[:, 1:]
