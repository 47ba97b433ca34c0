"""Tokenise a dataset once into memory-mapped token streams (train + held-out validation).

Every phase reads its data from here: documents are tokenised without special tokens, each
followed by EOS, and appended to two flat files (`train.bin`, `val.bin`; uint16 when the
vocabulary fits, else uint32) that the sampler memory-maps, so a run never holds a corpus in
memory and a second run with the same data starts at once.

Which documents are held out is decided per document, by a seeded hash of its index in the
stream, so the split does not depend on batch sizes or on how many documents were read, and
validation documents never reach training. `manifest.json` is written last, atomically: a
folder without it is an unfinished build and is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from proximity.atomic import write_text_atomic
from proximity.errors import ProximityError

FORMAT_VERSION = 1
EOS_TOKEN = "<|endoftext|>"
_ENCODE_BATCH = 256  # documents per `encode_batch` call: enough to keep the Rust threads busy


@dataclass
class TokenizedDataset:
    """One dataset tokenised to disk: train and held-out validation token streams."""

    train: np.ndarray  # 1-D np.memmap, each document followed by eos_id
    val: np.ndarray  # same layout; documents that training never sees
    manifest: dict  # spec, fingerprints, options, counts, dtype, eos_id (see tokenize_dataset)
    directory: Path | None = field(default=None, compare=False)

    @property
    def eos_id(self) -> int:
        return int(self.manifest["eos_id"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.manifest["dtype"])

    @classmethod
    def open(cls, directory: str | Path) -> TokenizedDataset:
        """Memory-map a finished build (a folder holding manifest.json)."""
        directory = Path(directory)
        manifest_path = directory / "manifest.json"
        if not manifest_path.exists():
            raise ProximityError(f"{directory} is not a finished tokenised dataset (no manifest)")
        manifest = json.loads(manifest_path.read_text())
        dtype = np.dtype(manifest["dtype"])
        arrays = {}
        for split in ("train", "val"):
            n_tokens = manifest[f"n_{split}_tokens"]
            path = directory / f"{split}.bin"
            if not path.exists() or path.stat().st_size != n_tokens * dtype.itemsize:
                raise ProximityError(f"{path} is missing or truncated; delete {directory}")
            # np.memmap cannot map an empty file.
            arrays[split] = (
                np.memmap(path, dtype=dtype, mode="r") if n_tokens else np.zeros(0, dtype)
            )
        return cls(arrays["train"], arrays["val"], manifest, directory)


def tokenize_dataset(
    spec: str,
    tokenizer: Tokenizer,
    *,
    cache_dir: Path,
    data_dir: Path | None = None,
    n_docs: int | None = None,
    max_chars: int | None = None,
    val_fraction: float = 0.05,
    min_val_docs: int = 1,
    seed: int = 0,
    eos_id: int | None = None,
    progress: bool = True,
) -> TokenizedDataset:
    """Tokenise `spec` into `cache_dir`, or reuse the build made with the same inputs.

    The cache key is the spec, the source's fingerprint (files' size and mtime, or the hub
    revision), the tokenizer's fingerprint and every option here, so changing any of them
    builds a new folder. `val_fraction` of the documents (at least `min_val_docs`) are held out.
    Only single datasets: a mixture is several builds mixed by `training.sampler.MixtureSampler`.
    """
    from proximity.data import describe_source
    from proximity.tokenizer import tokenizer_fingerprint

    spec = _single_spec(spec)
    if not 0.0 <= val_fraction < 1.0:
        raise ProximityError(f"val_fraction {val_fraction} must be in [0, 1)")
    if min_val_docs < 0:
        raise ProximityError(f"min_val_docs {min_val_docs} must be >= 0")
    eos_id = resolve_eos_id(tokenizer, eos_id)
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(max(vocab_size - 1, eos_id))
    source = describe_source(spec, data_dir=data_dir)
    key = {
        "format_version": FORMAT_VERSION,
        "spec": spec,
        "source_fingerprint": source.fingerprint,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "n_docs": n_docs,
        "max_chars": max_chars,
        "val_fraction": val_fraction,
        "min_val_docs": min_val_docs,
        "seed": seed,
        "eos_id": eos_id,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(cache_dir) / f"{_slug(source.name)}-{digest}"
    if (directory / "manifest.json").exists():
        try:
            cached = TokenizedDataset.open(directory)
            if cached.manifest.get("key") == key:
                return cached
        except (ProximityError, json.JSONDecodeError, KeyError):
            pass  # an unreadable or truncated build: rebuild it below
        (directory / "manifest.json").unlink(missing_ok=True)

    from proximity.data import load_texts

    directory.mkdir(parents=True, exist_ok=True)
    texts = load_texts(spec, n_docs=n_docs, max_chars=max_chars, data_dir=data_dir)
    bar = tqdm(
        texts, total=n_docs, unit="doc", desc=f"tokenising {source.name}", disable=not progress
    )
    counts = _write_splits(
        bar, tokenizer, directory, dtype, eos_id, val_fraction, min_val_docs, seed
    )
    manifest = {
        "key": key,
        "spec": spec,
        "source": {
            "name": source.name,
            "kind": source.kind,
            "location": str(source.location),
            "substitute": source.substitute,
            "fingerprint": source.fingerprint,
        },
        "tokenizer_fingerprint": key["tokenizer_fingerprint"],
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "eos_id": eos_id,
        "n_tokens": counts["n_train_tokens"] + counts["n_val_tokens"],
        **counts,
    }
    write_text_atomic(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return TokenizedDataset.open(directory)


def resolve_eos_id(tokenizer: Tokenizer, eos_id: int | None) -> int:
    """`eos_id`, else the tokenizer's `<|endoftext|>` (id 0 for Pythia and our BPEs)."""
    if eos_id is None:
        eos_id = tokenizer.token_to_id(EOS_TOKEN)
        if eos_id is None:
            raise ProximityError(f"the tokenizer has no {EOS_TOKEN} token: pass eos_id explicitly")
    return int(eos_id)


def token_dtype(max_id: int) -> np.dtype:
    """uint16 when every id fits (halves disk and page cache), else uint32."""
    return np.dtype(np.uint16) if max_id <= np.iinfo(np.uint16).max else np.dtype(np.uint32)


def hash_uniform(indices: np.ndarray, seed: int) -> np.ndarray:
    """A float in [0, 1) per index, fixed by (seed, index) alone (splitmix64 finaliser)."""
    x = np.asarray(indices, dtype=np.uint64) ^ _splitmix64(np.array([seed], dtype=np.uint64))
    return (_splitmix64(x) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def validation_mask(n: int, fraction: float, seed: int, min_count: int = 0) -> np.ndarray:
    """Which of `n` items are held out: hash(seed, i) < fraction, topped up to `min_count`.

    The top-up takes the items with the smallest hashes, so it only adds to the plain rule.
    At least one item is always left for training.
    """
    if n - min_count < 1:
        raise ProximityError(
            f"only {n} documents: need more than min_val_docs={min_count} so training gets some"
        )
    u = hash_uniform(np.arange(n), seed)
    mask = u < fraction
    if mask.sum() < min_count:
        mask[np.argsort(u, kind="stable")[:min_count]] = True
    if mask.all():
        mask[np.argmax(u)] = False
    return mask


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _single_spec(spec: str) -> str:
    from proximity.specs import parse_mixture

    mixture = parse_mixture(spec)
    if mixture.is_mixture:
        parts = ", ".join(str(part) for part in mixture.datasets)
        raise ProximityError(
            f"{spec!r} is a mixture: tokenise each part ({parts}) and mix them with MixtureSampler"
        )
    return mixture.canonical()


def _encoded_batches(texts: Iterable[str], tokenizer: Tokenizer) -> Iterator[list[list[int]]]:
    """Token ids per document, encoded a batch at a time (all cores) while streaming."""
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == _ENCODE_BATCH:
            yield [e.ids for e in tokenizer.encode_batch(batch, add_special_tokens=False)]
            batch = []
    if batch:
        yield [e.ids for e in tokenizer.encode_batch(batch, add_special_tokens=False)]


def _write_splits(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    directory: Path,
    dtype: np.dtype,
    eos_id: int,
    val_fraction: float,
    min_val_docs: int,
    seed: int,
) -> dict:
    """Stream documents into train.bin / val.bin; returns the counts for the manifest.

    Documents go to their split as they arrive (hash rule); only when a small dataset ends with
    fewer than `min_val_docs` held out are both files rewritten once with the topped-up split.
    """
    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # concurrent builders never collide
    tmp = {split: directory / f"{split}.bin{tag}" for split in ("train", "val")}
    starts, lengths, in_val = array("q"), array("q"), array("b")
    offsets = {"train": 0, "val": 0}
    n_empty = 0
    with open(tmp["train"], "wb") as train_file, open(tmp["val"], "wb") as val_file:
        files = {"train": train_file, "val": val_file}
        for batch in _encoded_batches(texts, tokenizer):
            first = len(lengths)
            held_out = hash_uniform(np.arange(first, first + len(batch)), seed) < val_fraction
            for ids, is_val in zip(batch, held_out.tolist(), strict=True):
                split = "val" if is_val else "train"
                n_empty += not ids
                tokens = np.empty(len(ids) + 1, dtype=dtype)
                tokens[:-1] = ids
                tokens[-1] = eos_id
                files[split].write(tokens.tobytes())
                starts.append(offsets[split])
                lengths.append(len(tokens))
                in_val.append(is_val)
                offsets[split] += len(tokens)
    n = len(lengths)
    if n == 0:
        for path in tmp.values():
            path.unlink()
        raise ProximityError("the dataset gave no documents: check the spec and --data-dir")
    mask = validation_mask(n, val_fraction, seed, min_val_docs)
    if not np.array_equal(mask, np.frombuffer(in_val, dtype=np.int8).astype(bool)):
        _resplit(tmp, dtype, np.frombuffer(in_val, np.int8).astype(bool), starts, lengths, mask)
    for split, path in tmp.items():
        os.replace(path, directory / f"{split}.bin")
    held_out_path = directory / f"val_docs{tag}.npy"
    np.save(held_out_path, np.flatnonzero(mask))
    os.replace(held_out_path, directory / "val_docs.npy")
    doc_lengths = np.frombuffer(lengths, dtype=np.int64)
    return {
        "n_docs": n,
        "n_train_docs": int((~mask).sum()),
        "n_val_docs": int(mask.sum()),
        "n_empty_docs": n_empty,
        "n_train_tokens": int(doc_lengths[~mask].sum()),
        "n_val_tokens": int(doc_lengths[mask].sum()),
    }


def _resplit(
    tmp: dict[str, Path],
    dtype: np.dtype,
    was_val: np.ndarray,
    starts: array,
    lengths: array,
    mask: np.ndarray,
) -> None:
    """Rewrite both files so that document i lands in val exactly when mask[i]."""
    old = {
        split: np.fromfile(path, dtype=dtype) for split, path in tmp.items()
    }  # only reached for small datasets (fewer than min_val_docs held out by the hash rule)
    new = {"train": [], "val": []}
    for i, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        source = old["val" if was_val[i] else "train"]
        new["val" if mask[i] else "train"].append(source[start : start + length])
    for split, path in tmp.items():
        parts = new[split]
        (np.concatenate(parts) if parts else np.zeros(0, dtype)).astype(dtype).tofile(path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:40] or "dataset"
