"""SFT examples prepared once on disk, memory-mapped by every rank and every run that needs them.

`build_sft_data` (training/sft_data.py) turns a target's prompt/response examples into flat
token arrays. Doing that inside each training process would make every rank of a DDP job
tokenise the whole target, and every SFT run of a grid (each LR, each branch) tokenise it
again. Here the arrays are written once into a folder named by a hash of everything that
decides their bytes (the spec, the source's fingerprint, the tokenizer's fingerprint,
`seq_len`, prompt masking, `n_docs`, the validation split and the EOS/padding ids), as `.npy`
files with `manifest.json` written last, atomically: a folder without it is unfinished and is
rebuilt. Readers open the arrays with `mmap_mode="r"`, so a rank's memory holds the pages it
touches, O(tokens) on disk and nothing O(examples x seq_len) anywhere.

Rank 0 (or `proximity train prepare --config SFT.yaml` before the job) builds; the other ranks
poll for the manifest (`build=False`), never a collective that a process-group timeout would cut.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from proximity.atomic import atomic_path, write_text_atomic
from training.sft_data import PAD_TOKEN, SFTSplit, build_sft_data
from training.tokenized import resolve_eos_id, slug, wait_for_build

SFT_FORMAT_VERSION = 1
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
    seed: int = 0,
    build: bool = True,
    wait_timeout_s: float = 7 * 24 * 3600,
) -> PreparedSFT:
    """Build `spec`'s SFT splits into `cache_dir` (or reuse the build with the same inputs).

    With `build=False` this only waits, up to `wait_timeout_s`, for another process's build.
    The arrays equal `build_sft_data(...)`'s for the same arguments (tested).
    """
    from proximity.data import describe_source
    from proximity.tokenizer import tokenizer_fingerprint

    eos_id = resolve_eos_id(tokenizer, None)
    pad_id = tokenizer.token_to_id(PAD_TOKEN)
    pad_id = eos_id if pad_id is None else pad_id
    source = describe_source(spec, data_dir=data_dir)
    key = {
        "format_version": SFT_FORMAT_VERSION,
        "spec": spec,
        "source_fingerprint": source.fingerprint,
        "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
        "seq_len": seq_len,
        "mask_prompt": mask_prompt,
        "n_docs": n_docs,
        "val_fraction": val_fraction,
        "seed": seed,
        "eos_id": eos_id,
        "pad_id": pad_id,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    directory = Path(cache_dir) / f"sft-{slug(source.name)}-{digest}"
    if not build:
        return wait_for_build(directory, key, wait_timeout_s, opener=_open_if_current)
    found = _open_if_current(directory, key)
    if found is not None:
        return found

    train, val = build_sft_data(
        spec, tokenizer, seq_len=seq_len, mask_prompt=mask_prompt, data_dir=data_dir,
        n_docs=n_docs, val_fraction=val_fraction, seed=seed, eos_id=eos_id, pad_id=pad_id,
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").unlink(missing_ok=True)  # a stale build is unfinished now
    for split_name, split in zip(_SPLITS, (train, val), strict=True):
        for name in _ARRAYS:
            # A handle, not a path: np.save(path) would append ".npy" to the temporary name.
            with atomic_path(directory / f"{split_name}_{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, getattr(split, name))
    manifest = {
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
    write_text_atomic(directory / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return PreparedSFT.open(directory)


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
