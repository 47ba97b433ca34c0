"""Tokenise a dataset once into memory-mapped token streams (train + held-out validation).

Every phase reads its data from here: documents are tokenised without special tokens, each
followed by EOS, and appended to two flat files (`train.bin`, `val.bin`; uint16 when the
vocabulary fits, else uint32) that the sampler memory-maps, so a run never holds a corpus in
memory and a second run with the same data starts at once.

Which documents are held out is decided per document, by a seeded hash of its index in the
stream, so the split does not depend on batch sizes or on how many documents were read, and
validation documents never reach training. `manifest.json` is written last, atomically: a
folder without it is an unfinished build and is rebuilt.

A build tokenises fixed-size shards of `SHARD_DOCS` documents, with `workers` processes, each
shard written to `parts/` atomically with its counts; a build that was killed skips the
shards it finished. The shards are then joined in order, so the bytes are the same for any
number of workers (the shard size, not the worker count, decides the cut points, and each
document's split depends only on its index). Other ranks of a distributed job wait for the
manifest file (`wait_for_build`), not on a collective that would time out.
"""

from __future__ import annotations

import contextlib
import fcntl  # POSIX only, like the grid's node locks
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from proximity.atomic import atomic_path, fsync_path, write_text_atomic
from proximity.data import SourceInfo, resolve
from proximity.errors import ProximityError
from proximity.specs import parse_mixture
from proximity.tokenizer import tokenizer_fingerprint

FORMAT_VERSION = 1
# Held-out documents are chosen with this seed whatever the training seed, so that "C4 validation
# loss" means the same documents in every run, phase and seed of a grid.
SPLIT_SEED = 0
# GPT-NeoX's special tokens (ids 0 and 1 in Pythia's tokenizer and in ours): EOS separates
# packed documents and ends SFT examples; padding fills SFT batches (it carries no loss).
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"
_ENCODE_BATCH = 256  # documents per `encode_batch` call: enough to keep the Rust threads busy
# Documents per shard: the unit of parallel work and of resuming. Part of the file layout, not
# of the bytes: the joined files are the same for any shard size and any number of workers.
SHARD_DOCS = 4096
_WAIT_POLL_S = 2.0


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
    workers: int = 1,
    build: bool = True,
    wait_timeout_s: float = 7 * 24 * 3600,
) -> TokenizedDataset:
    """Tokenise `spec` into `cache_dir`, or reuse the build made with the same inputs.

    `workers` processes tokenise shards in parallel (same bytes for any number). With
    `build=False` this only waits (up to `wait_timeout_s`) for another process's build of the
    same inputs to finish: the other ranks of a job whose rank 0 is tokenising.

    The cache key is the spec, the source's fingerprint (`Source.fingerprint`: the files' size
    and mtime or the hub revision, the split actually read, the resolved formatting and the
    reader's version), the tokenizer's fingerprint and every option here, so changing any of
    them (a registry template edited, say) builds a new folder. `val_fraction` of the
    documents (at least `min_val_docs`) are held out.
    Only single datasets: a mixture is several builds mixed by
    `proximity.training.data.sampler.MixtureSampler`.
    """
    spec = _single_spec(spec)
    if not 0.0 <= val_fraction < 1.0:
        raise ProximityError(f"val_fraction {val_fraction} must be in [0, 1)")
    if min_val_docs < 0:
        raise ProximityError(f"min_val_docs {min_val_docs} must be >= 0")
    eos_id = resolve_eos_id(tokenizer, eos_id)
    resolved = resolve(spec, data_dir=data_dir)
    source = resolved.info
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
    directory = build_directory(cache_dir, source.name, key)
    if not build:
        return wait_for_build(directory, key, wait_timeout_s)
    cached = _open_if_current(directory, key)
    if cached is not None:
        return cached
    # Two processes may want the same build at once (a grid's nodes on --jobs 2 reading one
    # eval set): the second waits on this lock, then finds the first one's finished build,
    # instead of joining shards the first is about to delete.
    with _build_lock(directory):
        cached = _open_if_current(directory, key)
        if cached is not None:
            return cached
        (directory / "manifest.json").unlink(missing_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        texts = resolved.texts(n_docs=n_docs, max_chars=max_chars)
        bar = tqdm(
            texts, total=n_docs, unit="doc", desc=f"tokenising {source.name}", disable=not progress
        )
        _write_build(bar, tokenizer, directory, key, source, workers)
        return TokenizedDataset.open(directory)


def _write_build(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    directory: Path,
    key: dict,
    source: SourceInfo,
    workers: int,
) -> None:
    """Tokenise `texts` into `directory` (the caller holds its lock), manifest.json last."""
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(max(vocab_size - 1, key["eos_id"]))
    counts = _write_splits(
        texts, tokenizer, directory, dtype, key["eos_id"], key["val_fraction"],
        key["min_val_docs"], key["seed"], key, workers,
    )  # fmt: skip
    manifest = {
        "key": key,
        "spec": key["spec"],
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
        "eos_id": key["eos_id"],
        "n_tokens": counts["n_train_tokens"] + counts["n_val_tokens"],
        **counts,
    }
    write_text_atomic(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(directory / "parts", ignore_errors=True)  # joined: the shards are spent


def build_directory(cache_dir: str | Path, name: str, key: dict, prefix: str = "") -> Path:
    """A build's folder: its source's name and a digest of `key`, everything that changes its
    bytes, so a changed input is a new folder and never overwrites a build in use."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{prefix}{slug(name)}-{digest}"


@contextlib.contextmanager
def _build_lock(directory: Path) -> Iterator[None]:
    """An exclusive `flock` beside the build folder, held while building; the kernel drops it
    if the process dies, so a killed builder never blocks the next one."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _open_if_current(directory: Path, key: dict) -> TokenizedDataset | None:
    try:
        cached = TokenizedDataset.open(directory)
    except (ProximityError, OSError, json.JSONDecodeError, KeyError):
        return None  # absent, unreadable or truncated
    return cached if cached.manifest.get("key") == key else None


def wait_for_build(
    directory: Path,
    key: dict,
    timeout_s: float,
    opener: Callable[[Path, dict], Any] | None = None,
) -> Any:
    """Poll for another process's finished build (its manifest) instead of a collective.

    `opener(directory, key)` returns the build when it is finished and current, else None
    (default: a token build; training/data/sft_prepared.py passes its own).
    """
    opener = opener or _open_if_current
    deadline = time.monotonic() + timeout_s
    while True:
        if (directory / "manifest.json").exists():
            found = opener(directory, key)
            if found is not None:
                return found
        if time.monotonic() > deadline:
            raise ProximityError(
                f"waited {timeout_s:.0f} s for {directory}/manifest.json (rank 0's tokenisation); "
                f"prepare the data first with `proximity train prepare`"
            )
        time.sleep(_WAIT_POLL_S)


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
    mixture = parse_mixture(spec)
    if mixture.is_mixture:
        parts = ", ".join(str(part) for part in mixture.datasets)
        raise ProximityError(
            f"{spec!r} is a mixture: tokenise each part ({parts}) and mix them with MixtureSampler"
        )
    return mixture.canonical()


def _write_splits(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    directory: Path,
    dtype: np.dtype,
    eos_id: int,
    val_fraction: float,
    min_val_docs: int,
    seed: int,
    key: dict,
    workers: int = 1,
) -> dict:
    """Tokenise shards into parts/ (in parallel, skipping finished ones), then join them into
    train.bin / val.bin; returns the counts for the manifest.

    Documents go to their split by the hash rule; only when a small dataset ends with fewer
    than `min_val_docs` held out are both files rewritten once with the topped-up split.
    """
    parts = directory / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    job = {"dtype": dtype.str, "eos_id": eos_id,
           "val_fraction": val_fraction, "seed": seed, "key": key,
           "shard_docs": SHARD_DOCS}  # fmt: skip
    if workers <= 1:
        n_shards = 0
        for index, first, shard_texts in _shards(texts):
            n_shards = index + 1
            if not _shard_done(parts, index, key):
                _tokenize_shard(job, parts, index, first, shard_texts, tokenizer)
    else:
        n_shards = _run_parallel(job, parts, _shards(texts), key, workers, tokenizer.to_str())

    tag = f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"  # concurrent builders never collide
    tmp = {split: directory / f"{split}.bin{tag}" for split in ("train", "val")}
    lengths_parts, in_val_parts, n_empty = _join_shards(parts, n_shards, tmp)
    n = sum(len(x) for x in lengths_parts)
    if n == 0:
        for path in tmp.values():
            path.unlink()
        raise ProximityError("the dataset gave no documents: check the spec and --data-dir")
    lengths = np.concatenate(lengths_parts).astype(np.int64)
    in_val = np.concatenate(in_val_parts).astype(bool)
    mask = validation_mask(n, val_fraction, seed, min_val_docs)
    if not np.array_equal(mask, in_val):
        starts = np.zeros(n, dtype=np.int64)
        for split_mask in (in_val, ~in_val):  # offsets within each split's own file
            split_lengths = lengths[split_mask]
            starts[split_mask] = np.cumsum(split_lengths) - split_lengths
        _resplit(tmp, dtype, in_val, starts, lengths, mask)
    for split, path in tmp.items():
        fsync_path(path)
        os.replace(path, directory / f"{split}.bin")
    held_out_path = directory / f"val_docs{tag}.npy"
    np.save(held_out_path, np.flatnonzero(mask))
    fsync_path(held_out_path)
    os.replace(held_out_path, directory / "val_docs.npy")
    return {
        "n_docs": n,
        "n_train_docs": int((~mask).sum()),
        "n_val_docs": int(mask.sum()),
        "n_empty_docs": n_empty,
        "n_train_tokens": int(lengths[~mask].sum()),
        "n_val_tokens": int(lengths[mask].sum()),
    }


def _join_shards(
    parts: Path, n_shards: int, tmp: dict[str, Path]
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Append every shard's train and val tokens to the `tmp` files, in shard order; returns
    each shard's document lengths and held-out flags, and the number of empty documents."""
    lengths_parts, in_val_parts = [], []
    n_empty = 0
    with open(tmp["train"], "wb") as train_file, open(tmp["val"], "wb") as val_file:
        for index in range(n_shards):
            info = json.loads((parts / f"{index:06d}.json").read_text())
            n_empty += info["n_empty"]
            with np.load(parts / f"{index:06d}.npz") as arrays:
                lengths_parts.append(arrays["lengths"])
                in_val_parts.append(arrays["in_val"])
            for split, file in (("train", train_file), ("val", val_file)):
                with open(parts / f"{index:06d}.{split}.bin", "rb") as part:
                    shutil.copyfileobj(part, file, 1 << 24)
    return lengths_parts, in_val_parts, n_empty


def _shards(texts: Iterable[str]) -> Iterator[tuple[int, int, list[str]]]:
    """(shard index, index of its first document, its texts): fixed SHARD_DOCS per shard."""
    batch: list[str] = []
    index = first = 0
    shard_docs = SHARD_DOCS  # read at call time, so tests can make shards small
    for text in texts:
        batch.append(text)
        if len(batch) == shard_docs:
            yield index, first, batch
            index, first, batch = index + 1, first + len(batch), []
    if batch:
        yield index, first, batch


def _shard_done(parts: Path, index: int, key: dict) -> bool:
    path = parts / f"{index:06d}.json"
    try:
        info = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return info.get("key") == key and info.get("shard_docs") == SHARD_DOCS


_WORKER_TOKENIZER: Tokenizer | None = None  # one per worker process, loaded once


def _init_worker(tokenizer_json: str, threads: int) -> None:
    """Load the tokenizer once per worker; share the cores between the workers' thread pools
    (each tokenizer process would otherwise start one Rust thread per core)."""
    global _WORKER_TOKENIZER
    os.environ["RAYON_RS_NUM_THREADS"] = str(threads)  # read when the pool first starts
    _WORKER_TOKENIZER = Tokenizer.from_str(tokenizer_json)


def _run_parallel(
    job: dict, parts: Path, shards, key: dict, workers: int, tokenizer_json: str
) -> int:
    """Tokenise shards in `workers` processes, at most 2 x workers shards in flight (memory
    stays bounded however large the corpus); returns the number of shards."""
    n_shards = 0
    pending: set = set()
    # spawn, not fork: the parent may hold torch and tokenizers thread pools.
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=(tokenizer_json, threads)
    ) as pool:
        for index, first, shard_texts in shards:
            n_shards = index + 1
            if _shard_done(parts, index, key):
                continue
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()  # a failed shard fails the build (finished ones stay)
            pending.add(pool.submit(_tokenize_shard, job, parts, index, first, shard_texts))
        for future in pending:
            future.result()
    return n_shards


def _tokenize_shard(
    job: dict,
    parts: Path,
    index: int,
    first: int,
    texts: list[str],
    tokenizer: Tokenizer | None = None,
) -> None:
    """Tokenise one shard; write its token files, then (last, atomically) its counts."""
    tokenizer = tokenizer or _WORKER_TOKENIZER
    assert tokenizer is not None, "a worker process runs _init_worker first"
    dtype, eos_id = np.dtype(job["dtype"]), job["eos_id"]
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # same ids
    held_out = hash_uniform(np.arange(first, first + len(texts)), job["seed"]) < job["val_fraction"]
    chunks: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    lengths = np.zeros(len(texts), dtype=np.int64)
    n_empty = 0
    for start in range(0, len(texts), _ENCODE_BATCH):
        encodings = encode(texts[start : start + _ENCODE_BATCH], add_special_tokens=False)
        for offset, encoding in enumerate(encodings):
            i = start + offset
            ids = encoding.ids
            n_empty += not ids
            tokens = np.empty(len(ids) + 1, dtype=dtype)
            tokens[:-1] = ids
            tokens[-1] = eos_id
            chunks["val" if held_out[i] else "train"].append(tokens)
            lengths[i] = len(tokens)
    stem = parts / f"{index:06d}"
    for split, pieces in chunks.items():
        with atomic_path(f"{stem}.{split}.bin") as tmp:
            (np.concatenate(pieces) if pieces else np.zeros(0, dtype)).tofile(tmp)
    with atomic_path(f"{stem}.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, lengths=lengths, in_val=held_out)
    info = {"key": job["key"], "shard_docs": job["shard_docs"], "first_doc": first,
            "n_docs": len(texts), "n_empty": n_empty}  # fmt: skip
    write_text_atomic(f"{stem}.json", json.dumps(info))


def _resplit(
    tmp: dict[str, Path],
    dtype: np.dtype,
    was_val: np.ndarray,
    starts: np.ndarray,
    lengths: np.ndarray,
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


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")[:40] or "dataset"
