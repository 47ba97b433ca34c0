"""SFT examples prepared once on disk, memory-mapped by every rank and every run that needs them.

`build_sft_data` (training/data/sft_data.py) turns a target's prompt/response examples into flat
token arrays. Doing that inside each training process would make every rank of a DDP job
tokenise the whole target, and every SFT run of a grid (each LR, each branch) tokenise it
again. Here the arrays are written once into a folder named by a hash of everything that
decides their bytes (the spec, the source's fingerprint, the tokenizer's fingerprint,
`seq_len`, prompt masking, `n_docs`, the validation split and the EOS/padding ids), as `.npy`
files and `manifest.json`, written in a private folder and renamed into place whole, so a build
is complete or absent even when several processes make it at once. Readers open the arrays
with `mmap_mode="r"`, so a rank's memory holds the pages it touches, O(tokens) on disk and
nothing O(examples x seq_len) anywhere.

Rank 0 (or `proximity train prepare --config SFT.yaml` before the job) builds; the other ranks
poll for the manifest (`build=False`), never a collective that a process-group timeout would cut.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from proximity.atomic import fsync_path, fsync_tree
from proximity.data import resolve
from proximity.errors import ProximityError
from proximity.tokenizer import tokenizer_fingerprint
from proximity.training.data.sft_data import SFTSplit, build_sft_data, resolve_pad_id
from proximity.training.data.tokenized import build_directory, resolve_eos_id, wait_for_build

# 2: an example whose prompt fills seq_len is kept (cut) when the prompt is in the loss.
SFT_FORMAT_VERSION = 2
_ARRAYS = ("tokens", "offsets", "n_masked")
_SPLITS = ("train", "val")


@dataclass
class PreparedSFT:
    """A finished SFT build: its folder, its manifest and its (train, val) splits, memory-mapped."""

    directory: Path
    manifest: dict
    train: SFTSplit
    val: SFTSplit

    @classmethod
    def open(cls, directory: str | Path) -> PreparedSFT:
        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text())
        splits = {}
        for split in _SPLITS:
            arrays = {
                name: np.load(directory / f"{split}_{name}.npy", mmap_mode="r") for name in _ARRAYS
            }
            counts = manifest["splits"][split]
            splits[split] = SFTSplit(
                **arrays,
                seq_len=manifest["key"]["seq_len"],
                pad_id=manifest["key"]["pad_id"],
                n_truncated=counts["n_truncated"],
                n_dropped=counts["n_dropped"],
            )
        return cls(directory, manifest, splits["train"], splits["val"])


def prepare_sft(
    spec: str,
    tokenizer: Tokenizer,
    *,
    cache_dir: str | Path,
    seq_len: int,
    mask_prompt: bool,
    data_dir: str | Path | None = None,
    n_docs: int | None = None,
    val_fraction: float = 0.1,
    val_docs: int | None = None,
    seed: int = 0,
    build: bool = True,
    wait_timeout_s: float = 7 * 24 * 3600,
) -> PreparedSFT:
    """Build `spec`'s SFT splits into `cache_dir` (or reuse the build with the same inputs).

    With `build=False` this only waits, up to `wait_timeout_s`, for another process's build.
    The arrays equal `build_sft_data(...)`'s for the same arguments (tested).
    """
    eos_id = resolve_eos_id(tokenizer, None)
    pad_id = resolve_pad_id(tokenizer, eos_id)
    source = resolve(spec, data_dir=data_dir).info
    key = {
        "format_version": SFT_FORMAT_VERSION,
        "spec": spec,
        "source_fingerprint": source.fingerprint,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "seq_len": seq_len,
        "mask_prompt": mask_prompt,
        "n_docs": n_docs,
        "val_fraction": val_fraction,
        **({"val_docs": val_docs} if val_docs is not None else {}),
        "seed": seed,
        "eos_id": eos_id,
        "pad_id": pad_id,
    }
    directory = build_directory(cache_dir, source.name, key, prefix="sft-")
    if not build:
        return wait_for_build(directory, key, wait_timeout_s, opener=_open_if_current)
    found = _open_if_current(directory, key)
    if found is not None:
        return found

    train, val = build_sft_data(
        spec, tokenizer, seq_len=seq_len, mask_prompt=mask_prompt, data_dir=data_dir,
        n_docs=n_docs, val_fraction=val_fraction, val_docs=val_docs, seed=seed, eos_id=eos_id,
        pad_id=pad_id,
    )  # fmt: skip
    # Built in a private folder and renamed into place whole: several processes may build the
    # same target at once (a grid's SFT runs of one target, on --jobs 2), and none may ever
    # see, or delete, another's half-written files.
    staging = directory.parent / f".{directory.name}.{uuid.uuid4().hex}.tmp"
    staging.mkdir(parents=True)
    try:
        for split_name, split in zip(_SPLITS, (train, val), strict=True):
            for name in _ARRAYS:
                np.save(staging / f"{split_name}_{name}.npy", getattr(split, name))
        manifest = _manifest(key, spec, source, train, val)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        fsync_tree(staging)
        return _move_into_place(staging, directory, key)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: Path, directory: Path, key: dict) -> PreparedSFT:
    """Rename the finished build onto `directory`; if another process got there first with a
    complete build, keep theirs (the same bytes); replace only a broken one."""
    for _ in range(3):
        try:
            os.rename(staging, directory)
        except OSError:  # the folder exists: another process's build, or a broken old one
            found = _open_if_current(directory, key)
            if found is not None:
                return found
            shutil.rmtree(directory, ignore_errors=True)
            continue
        fsync_path(directory.parent)
        return PreparedSFT.open(directory)
    raise ProximityError(f"could not move the SFT build into {directory}; remove it and rerun")


def _manifest(key: dict, spec: str, source, train: SFTSplit, val: SFTSplit) -> dict:
    return {
        "key": key,
        "spec": spec,
        "kind": "sft",
        "source": {
            "name": source.name,
            "location": str(source.location),
            "substitute": source.substitute,
        },
        "splits": {
            name: {
                "examples": len(split),
                "tokens": len(split.tokens),
                "loss_tokens": split.n_loss_tokens,
                "n_truncated": split.n_truncated,
                "n_dropped": split.n_dropped,
            }
            for name, split in zip(_SPLITS, (train, val), strict=True)
        },
        # The names `proximity train prepare` prints for every build.
        "n_train_tokens": len(train.tokens),
        "n_val_tokens": len(val.tokens),
    }


def _open_if_current(directory: Path, key: dict) -> PreparedSFT | None:
    if not (directory / "manifest.json").exists():
        return None
    try:
        found = PreparedSFT.open(directory)
    except (OSError, ValueError, KeyError):
        return None  # an unreadable or truncated build: rebuild it
    if found.manifest.get("key") != key:
        return None
    return found
