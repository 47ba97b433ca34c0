"""Packed fixed-length sequences and a stateless mixture sampler over them.

The paper mixes data per sequence, by weight, and midtraining resumes a run mid-way; so which
sequences step `s` sees is a pure function of (seed, s), never of a data loader's state. A
resumed run, a run on another number of GPUs, and an uninterrupted run all see the same
global batches.

Within one source the i-th row of the whole run (i = step * batch_size + row) reads sequence
`permute(i mod n, key(seed, source, i // n))`: with a single source (pretraining, the control,
continued pretraining) every epoch visits each sequence exactly once, in a fresh order. The
permutation is a keyed Feistel network, O(1) memory, so it also works for billions of sequences.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from proximity.errors import ProximityError
from proximity.training.data.tokenized import hash_uniform

_FEISTEL_ROUNDS = 4
_WEIGHT_TOLERANCE = 1e-6


class PackedSequences:
    """Fixed-length windows (seq_len + 1 tokens, for input/target shift) over a 1-D token array.

    Documents are packed across boundaries, separated by EOS (as `tokenize_dataset` writes them).
    Window i holds tokens[i * seq_len : i * seq_len + seq_len + 1]: consecutive windows share one
    token, so every token but the first is a target exactly once; the tail shorter than a
    window is dropped (fewer than seq_len + 1 tokens give zero windows; callers say what to raise).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if seq_len < 1:
            raise ProximityError(f"seq_len {seq_len} must be at least 1")
        if tokens.ndim != 1:
            raise ProximityError(f"expected a 1-D token array, got shape {tokens.shape}")
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1) // self.seq_len)

    def __getitem__(self, index: int) -> np.ndarray:
        if not -len(self) <= index < len(self):
            raise IndexError(f"sequence {index} out of range for {len(self)} sequences")
        start = (index % len(self)) * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)


class MixtureSampler:
    """Per-sequence mixture sampling by weight, a pure function of (seed, step).

    Each row of a global batch picks its source independently with probability equal to the
    source's weight (as litdata's weighted streams do), so realised proportions match weights in
    expectation. A resumed run sees exactly the data an uninterrupted run would.
    """

    def __init__(self, sources: Sequence[PackedSequences], weights: Sequence[float], seed: int):
        if not sources:
            raise ProximityError("MixtureSampler needs at least one source")
        if len(weights) != len(sources):
            raise ProximityError(f"{len(weights)} weights given for {len(sources)} sources")
        seq_lens = {source.seq_len for source in sources}
        if len(seq_lens) != 1:
            raise ProximityError(f"all sources need the same seq_len, got {sorted(seq_lens)}")
        w = np.asarray(weights, dtype=np.float64)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ProximityError(f"mixture weights {list(weights)} must be finite and >= 0")
        if abs(w.sum() - 1.0) > _WEIGHT_TOLERANCE:
            raise ProximityError(f"mixture weights {list(weights)} sum to {w.sum():g}, not 1")
        empty = [k for k, source in enumerate(sources) if len(source) == 0 and w[k] > 0]
        if empty:
            raise ProximityError(
                f"mixture sources {empty} have fewer than seq_len + 1 tokens: "
                "tokenise more documents (n_docs) or lower seq_len"
            )
        if seed < 0:
            raise ProximityError(f"seed {seed} must be >= 0")
        self.sources = list(sources)
        self.weights = w / w.sum()
        self.seed = seed
        self.seq_len = seq_lens.pop()
        self._cumulative = np.cumsum(self.weights)

    def source_of(self, step: int, batch_size: int) -> np.ndarray:
        """Which source each row of the global batch at `step` comes from (int64, [batch_size])."""
        if step < 0 or batch_size < 1:
            raise ProximityError(f"step {step} must be >= 0 and batch_size {batch_size} >= 1")
        if len(self.sources) == 1:
            return np.zeros(batch_size, dtype=np.int64)
        u = np.random.default_rng([self.seed, step]).random(batch_size)
        chosen = np.searchsorted(self._cumulative, u, side="right")
        return np.minimum(chosen, len(self.sources) - 1).astype(np.int64)

    def sequence_indices(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(source, sequence index within that source) for each row of the global batch."""
        sources = self.source_of(step, batch_size)
        rows = step * batch_size + np.arange(batch_size, dtype=np.int64)  # rows since step 0
        indices = np.empty(batch_size, dtype=np.int64)
        for k, source in enumerate(self.sources):
            picked = np.flatnonzero(sources == k)
            if picked.size == 0:
                continue
            n = len(source)
            epochs, positions = np.divmod(rows[picked], n)
            for epoch in np.unique(epochs):
                same = epochs == epoch
                key = _mix_key(self.seed, k, int(epoch))
                indices[picked[same]] = feistel_permute(positions[same], n, key)
        return sources, indices

    def batch(self, step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        """Rows rank::world_size of the global batch at `step`, LongTensor [B // W, seq_len + 1].

        The global batch does not depend on world_size, so results match across GPU counts.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ProximityError(f"rank {rank} must be in [0, world_size={world_size})")
        if batch_size % world_size:
            raise ProximityError(
                f"batch_size {batch_size} must be divisible by world_size {world_size}"
            )
        sources, indices = self.sequence_indices(step, batch_size)
        mine = slice(rank, None, world_size)
        rows = [
            self.sources[k][i]
            for k, i in zip(sources[mine].tolist(), indices[mine].tolist(), strict=True)
        ]
        return torch.from_numpy(np.stack(rows))


def feistel_permute(positions: np.ndarray, n: int, key: int) -> np.ndarray:
    """Apply a keyed pseudo-random bijection of [0, n) to `positions` (O(1) memory).

    A balanced Feistel network permutes [0, 4**h) for the smallest 4**h >= n; values landing
    at or beyond n are sent through again ("cycle walking"), which keeps it a bijection of [0, n).
    """
    x = np.asarray(positions, dtype=np.uint64)
    if n <= 1:
        return np.zeros(x.shape, dtype=np.int64)
    half = max(1, math.ceil((n - 1).bit_length() / 2))
    mask = np.uint64((1 << half) - 1)
    round_keys = [_mix_key(key, r) for r in range(_FEISTEL_ROUNDS)]

    def encrypt(v: np.ndarray) -> np.ndarray:
        left, right = v >> np.uint64(half), v & mask
        for round_key in round_keys:
            mixed = (hash_uniform(right, round_key) * float(1 << half)).astype(np.uint64)
            left, right = right, left ^ (mixed & mask)
        return (left << np.uint64(half)) | right

    x = encrypt(x)
    outside = x >= np.uint64(n)
    while outside.any():  # expected < 4 passes: the domain is under 4n
        x[outside] = encrypt(x[outside])
        outside = x >= np.uint64(n)
    return x.astype(np.int64)


def _mix_key(*parts: int) -> int:
    """One 62-bit key from several non-negative ints (seed, source, epoch, round)."""
    key = 0
    for part in parts:
        key = int(hash_uniform(np.array([part], dtype=np.uint64), key)[0] * float(1 << 62))
    return key
