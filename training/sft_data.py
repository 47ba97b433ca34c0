"""Supervised fine-tuning data: prompt/response examples as padded id and label matrices.

Each example becomes `prompt ids + response ids + EOS`, tokenised part by part so the
boundary between prompt and response is exact, cut at `seq_len` by dropping the end of the
response (an example whose response does not fit at all is dropped and counted), then
right-padded with `pad_id`.

Labels follow the Hugging Face convention: NOT shifted. `labels[i] == input_ids[i]` where the
token is trained on and -100 elsewhere (padding, and the prompt when `mask_prompt`); the model
shifts internally, so `GPTNeoXForCausalLM(input_ids=x, labels=y).loss` is the masked loss, and
a manual loss is `cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())`.
Right padding needs no attention mask under causal attention: real tokens never attend to the
padding after them, and padding positions carry no loss.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from proximity.errors import ProximityError
from training.tokenized import resolve_eos_id, validation_mask

IGNORE_INDEX = -100  # torch.nn.CrossEntropyLoss's default ignore_index, as Hugging Face uses
PAD_TOKEN = "<|padding|>"
log = logging.getLogger(__name__)


@dataclass
class SFTSplit:
    """Padded examples of one split; row i is one example."""

    input_ids: np.ndarray  # int64 [N, seq_len], right-padded with pad_id
    labels: np.ndarray  # int64 [N, seq_len], -100 on padding and (when masked) on the prompt
    n_truncated: int = 0  # examples whose response end was cut to fit seq_len
    n_dropped: int = 0  # examples left out because no response token fitted

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_loss_tokens(self) -> int:
        """Tokens that carry loss (the model predicts each from the tokens before it)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    def batches(
        self, batch_size: int, epoch: int, seed: int, shuffle: bool = True, drop_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(input_ids, labels) LongTensors of up to `batch_size` rows, ordered by (seed, epoch)."""
        if batch_size < 1:
            raise ProximityError(f"batch_size {batch_size} must be at least 1")
        order = (
            np.random.default_rng([seed, epoch]).permutation(len(self))
            if shuffle
            else np.arange(len(self))
        )
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            rows = order[start : start + batch_size]
            yield torch.from_numpy(self.input_ids[rows]), torch.from_numpy(self.labels[rows])


def build_sft_data(
    spec: str,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    mask_prompt: bool,
    data_dir: str | Path | None = None,
    n_docs: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> tuple[SFTSplit, SFTSplit]:
    """Read `spec` as prompt/response examples and return (train, val) splits.

    The validation examples are picked per example by a seeded hash of its index (at least one),
    before any is dropped for length, so the split does not move when `seq_len` changes.
    `pad_id` defaults to `<|padding|>`, else EOS (its value never matters: padding has no loss).
    """
    from proximity.data import load_examples

    if seq_len < 2:
        raise ProximityError(f"seq_len {seq_len} must be at least 2")
    if not 0.0 <= val_fraction < 1.0:
        raise ProximityError(f"val_fraction {val_fraction} must be in [0, 1)")
    eos_id = resolve_eos_id(tokenizer, eos_id)
    if pad_id is None:
        pad_id = tokenizer.token_to_id(PAD_TOKEN)
        pad_id = eos_id if pad_id is None else pad_id
    examples = list(load_examples(spec, n_docs=n_docs, data_dir=data_dir))
    if not examples:
        raise ProximityError(f"{spec!r} gave no examples: check the spec and --data-dir")
    prompts = tokenizer.encode_batch([e.prompt for e in examples], add_special_tokens=False)
    responses = tokenizer.encode_batch([e.response for e in examples], add_special_tokens=False)
    is_val = validation_mask(len(examples), val_fraction, seed, min_count=1)
    splits = []
    for wanted in (False, True):
        rows = [
            (p.ids, r.ids)
            for p, r, held_out in zip(prompts, responses, is_val, strict=True)
            if held_out == wanted
        ]
        splits.append(_pack(rows, seq_len, mask_prompt, eos_id, pad_id))
    train, val = splits
    for name, split in (("train", train), ("val", val)):
        if split.n_dropped or split.n_truncated:
            log.warning(
                "%s %s: %d examples truncated to seq_len=%d, %d dropped (prompt alone too long)",
                spec,
                name,
                split.n_truncated,
                seq_len,
                split.n_dropped,
            )
        if len(split) == 0:
            raise ProximityError(
                f"{spec!r}: no {name} example fits seq_len={seq_len}; raise seq_len"
            )
    return train, val


def _pack(
    rows: list[tuple[list[int], list[int]]],
    seq_len: int,
    mask_prompt: bool,
    eos_id: int,
    pad_id: int,
) -> SFTSplit:
    """Concatenate, truncate the response end, pad, and mask one split's examples."""
    input_ids = np.full((len(rows), seq_len), pad_id, dtype=np.int64)
    labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=np.int64)
    kept = n_truncated = 0
    for prompt, response in rows:
        if len(prompt) >= seq_len or not response:
            continue  # nothing of the response would be trained on
        ids = [*prompt, *response, eos_id]
        n_truncated += len(ids) > seq_len
        ids = ids[:seq_len]
        input_ids[kept, : len(ids)] = ids
        first_label = len(prompt) if mask_prompt else 0
        labels[kept, first_label : len(ids)] = ids[first_label:]
        kept += 1
    return SFTSplit(input_ids[:kept], labels[:kept], n_truncated, len(rows) - kept)
