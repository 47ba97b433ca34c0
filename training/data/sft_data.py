"""Supervised fine-tuning data: prompt/response examples stored as tokens, padded per batch.

Each example is `prompt + response` tokenised as ONE text, then EOS, so the tokens are exactly
what the model would see in running text: the response keeps its usual leading-space token
(GSM8K's "Answer: " + "Natalia" is `Answer`, `:`, ` Natalia`, not `Answer`, `:`, ` `, `Natalia`).
Which tokens are prompt comes from the character offsets: a token belongs to the response when
it ends after the prompt's last character, so a token straddling the boundary is trained on.
An example longer than `seq_len` is cut at `seq_len` (counted). One whose prompt alone fills
`seq_len` is dropped (counted) only when the prompt is masked, since then no token of it would
carry loss; when the prompt is in the loss (every target but GSM8K) it is cut like any other,
so long-passage targets (SciQ, LIMA) keep their examples and the loss sees the same first
`seq_len` tokens that similarity is measured on.

Storage is O(tokens), not O(examples x seq_len): one flat token array per split plus offsets
and per-example prompt lengths. Rows are padded only when a batch is built, to the batch's
longest example rounded up to PAD_MULTIPLE (not to `seq_len`: short targets would waste most
of each step on padding).

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

from proximity.data import Example, load_examples
from proximity.errors import ProximityError
from proximity.training.data.tokenized import PAD_TOKEN, resolve_eos_id, validation_mask
from proximity.training.losses import IGNORE_INDEX

PAD_MULTIPLE = 64  # batches are padded to a multiple of this many tokens (see batch_width)
_ENCODE_CHUNK = 1024  # examples per `encode_batch` call while building (bounds its memory)
log = logging.getLogger(__name__)


@dataclass
class SFTSplit:
    """One split's examples as flat tokens; example i is `tokens[offsets[i]:offsets[i + 1]]`."""

    tokens: np.ndarray  # int32, every kept example's ids (EOS included), concatenated
    offsets: np.ndarray  # int64 [N + 1]
    n_masked: np.ndarray  # int32 [N]: leading tokens of each example without loss (the prompt)
    seq_len: int
    pad_id: int
    n_truncated: int = 0  # examples whose response end was cut to fit seq_len
    n_dropped: int = 0  # examples left out: no response, or a masked prompt fills seq_len

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(
        self, indices: np.ndarray | list[int], width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Padded (input_ids, labels) int64 [len(indices), width] for these examples.

        `width` defaults to `seq_len`; `batch_width(indices)` is the narrower one batches use.
        """
        width = self.seq_len if width is None else width
        input_ids = np.full((len(indices), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(indices), width), IGNORE_INDEX, dtype=np.int64)
        for row, i in enumerate(indices):
            ids = self.tokens[self.offsets[i] : self.offsets[i + 1]]
            input_ids[row, : len(ids)] = ids
            first = int(self.n_masked[i])
            labels[row, first : len(ids)] = ids[first:]
        return input_ids, labels

    def batch_width(self, indices: np.ndarray | list[int]) -> int:
        """Pad a batch to its longest example rounded up to PAD_MULTIPLE, at most `seq_len`.

        Right padding carries no loss and, under causal attention, changes no real position's
        output, so this is the same loss as padding to `seq_len` (to float rounding) for a
        fraction of the compute when examples are short (GSM8K: ~250 of 2,048 tokens). The
        multiple keeps the number of distinct shapes small for torch.compile.
        """
        lengths = [int(self.offsets[i + 1] - self.offsets[i]) for i in indices]
        longest = max(lengths, default=1)
        return min(self.seq_len, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)

    @property
    def input_ids(self) -> np.ndarray:
        """Every row padded: O(examples x seq_len), for inspection and small splits only."""
        return self.rows(np.arange(len(self)))[0]

    @property
    def labels(self) -> np.ndarray:
        return self.rows(np.arange(len(self)))[1]

    @property
    def n_loss_tokens(self) -> int:
        """Tokens that carry loss (the model predicts each from the tokens before it)."""
        lengths = np.diff(self.offsets)
        return int(np.sum(lengths - np.maximum(self.n_masked, 1)))

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
            indices = order[start : start + batch_size]
            input_ids, labels = self.rows(indices, self.batch_width(indices))
            yield torch.from_numpy(input_ids), torch.from_numpy(labels)


def build_sft_data(
    spec: str,
    tokenizer: Tokenizer,
    *,
    seq_len: int,
    mask_prompt: bool,
    data_dir: str | Path | None = None,
    n_docs: int | None = None,
    val_fraction: float = 0.1,
    val_docs: int | None = None,
    seed: int = 0,
    eos_id: int | None = None,
    pad_id: int | None = None,
    warn: bool = True,
) -> tuple[SFTSplit, SFTSplit]:
    """Read `spec` as prompt/response examples and return (train, val) splits.

    `warn=False` leaves out the note on examples truncated or dropped for length (the splits
    carry those counts; `train-grid --dry-run` counts examples without training).

    The validation examples are picked per example by a seeded hash of its index (at least one),
    before any is dropped for length, so the split does not move when `seq_len` changes.
    `val_docs` holds out exactly that many (the smallest hashes) instead of `val_fraction`.
    `pad_id` defaults to `<|padding|>`, else EOS (its value never matters: padding has no loss).
    """
    if seq_len < 2:
        raise ProximityError(f"seq_len {seq_len} must be at least 2")
    if not 0.0 <= val_fraction < 1.0:
        raise ProximityError(f"val_fraction {val_fraction} must be in [0, 1)")
    eos_id = resolve_eos_id(tokenizer, eos_id)
    pad_id = resolve_pad_id(tokenizer, eos_id) if pad_id is None else pad_id
    examples = list(load_examples(spec, n_docs=n_docs, data_dir=data_dir))
    if not examples:
        raise ProximityError(f"{spec!r} gave no examples: check the spec and --data-dir")
    rows = _encode(examples, tokenizer)
    if val_docs is not None:
        if val_docs >= len(examples):
            raise ProximityError(
                f"{spec!r}: val_docs={val_docs} leaves no training example of {len(examples)}; "
                "lower data.sft_val_docs or raise data.n_docs"
            )
        is_val = validation_mask(len(examples), 0.0, seed, min_count=val_docs)
    else:
        is_val = validation_mask(len(examples), val_fraction, seed, min_count=1)
    splits = []
    for wanted in (False, True):
        chosen = [row for row, held_out in zip(rows, is_val, strict=True) if held_out == wanted]
        splits.append(_pack(chosen, seq_len, mask_prompt, eos_id, pad_id))
    train, val = splits
    for name, split in (("train", train), ("val", val)):
        _check_split(spec, name, split, seq_len, warn)
    return train, val


def _encode(examples: list[Example], tokenizer: Tokenizer) -> list[tuple[np.ndarray, int]]:
    """(token ids, prompt token count) per example.

    Encoded in chunks and kept as int32 arrays: a tokenizers `Encoding` carries offsets,
    token strings and masks (~140 bytes per token), so encoding a whole corpus at once would
    need ~35x the memory of what is kept.
    """
    rows: list[tuple[np.ndarray, int]] = []
    for begin in range(0, len(examples), _ENCODE_CHUNK):
        chunk = examples[begin : begin + _ENCODE_CHUNK]
        encodings = tokenizer.encode_batch(
            [e.prompt + e.response for e in chunk], add_special_tokens=False
        )
        rows.extend(
            (
                np.asarray(encoding.ids, dtype=np.int32),
                _prompt_token_count(encoding.offsets, len(example.prompt)),
            )
            for encoding, example in zip(encodings, chunk, strict=True)
        )
        del encodings
    return rows


def _check_split(spec: str, name: str, split: SFTSplit, seq_len: int, warn: bool) -> None:
    """Note examples cut or dropped for length; refuse a split left empty."""
    if warn and (split.n_dropped or split.n_truncated):
        log.warning(
            "%s %s: %d examples truncated to seq_len=%d, %d dropped (prompt alone too long)",
            spec,
            name,
            split.n_truncated,
            seq_len,
            split.n_dropped,
        )
    if len(split) == 0:
        raise ProximityError(f"{spec!r}: no {name} example fits seq_len={seq_len}; raise seq_len")


def resolve_pad_id(tokenizer: Tokenizer, eos_id: int) -> int:
    """`<|padding|>` when the tokenizer has it, else EOS (its value never matters: no loss)."""
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    return eos_id if pad_id is None else pad_id


def _prompt_token_count(offsets: list[tuple[int, int]], prompt_chars: int) -> int:
    """Leading tokens that lie wholly inside the prompt's characters (a straddler is response)."""
    count = 0
    for _, end in offsets:
        if end > prompt_chars:
            break
        count += 1
    return count


def _pack(
    rows: list[tuple[np.ndarray, int]],
    seq_len: int,
    mask_prompt: bool,
    eos_id: int,
    pad_id: int,
) -> SFTSplit:
    """Append EOS, truncate the response end, and record one split's examples flat."""
    pieces, lengths, masked = [], [], []
    n_truncated = 0
    for ids, n_prompt in rows:
        if n_prompt >= len(ids) or (mask_prompt and n_prompt >= seq_len):
            continue  # nothing of the example would be trained on
        ids = np.append(ids, np.int32(eos_id))
        n_truncated += len(ids) > seq_len
        ids = ids[:seq_len]
        pieces.append(ids.astype(np.int32, copy=False))
        lengths.append(len(ids))
        masked.append(n_prompt if mask_prompt else 0)
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return SFTSplit(
        tokens=tokens,
        offsets=offsets,
        n_masked=np.asarray(masked, dtype=np.int32),
        seq_len=seq_len,
        pad_id=pad_id,
        n_truncated=n_truncated,
        n_dropped=len(rows) - len(pieces),
    )
