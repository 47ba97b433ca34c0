"""On-disk cache of token statistics, shared by every command.

Tokenising is the only expensive step, so each dataset's statistics are stored once under
`$PROXIMITY_CACHE_DIR` (default `~/.cache/proximity`) as `stats/<key>.npz` (arrays) beside
`stats/<key>.json` (human-readable provenance). The key hashes everything that can change
the counts: the spec's canonical string, the data fingerprint (path + size + mtime for a
local file, hub id + revision for the hub), the tokenizer fingerprint and the counting
options, so editing the file or changing an option is a miss, never a stale hit. Files are
written atomically; an unreadable entry is a miss and gets rewritten.

This module only stores named arrays; `proximity.stats` decides what they mean.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from proximity.atomic import atomic_path, write_text_atomic

CACHE_DIR_ENV = "PROXIMITY_CACHE_DIR"
CACHE_FORMAT = 1  # bump when the stored layout or the counting code changes meaning


def cache_dir() -> Path:
    """`$PROXIMITY_CACHE_DIR`, else `~/.cache/proximity`."""
    chosen = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "proximity"
    return Path(chosen).expanduser()


def cache_key(
    spec: str, data_fingerprint: str, tokenizer_fingerprint: str, options: dict[str, Any]
) -> str:
    """Hash of what determines the counts (see the module docstring)."""
    payload = {
        "format": CACHE_FORMAT,
        "spec": spec,
        "data": data_fingerprint,
        "tokenizer": tokenizer_fingerprint,
        "options": options,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def entry_paths(key: str) -> tuple[Path, Path]:
    """The `.npz` and `.json` files of one cache entry."""
    folder = cache_dir() / "stats"
    return folder / f"{key}.npz", folder / f"{key}.json"


def load_entry(key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """(arrays, metadata) stored under `key`, or None when absent or unreadable."""
    npz_path, json_path = entry_paths(key)
    if not npz_path.exists() or not json_path.exists():
        return None
    try:
        with np.load(npz_path) as stored:
            arrays = dict(stored)
        metadata = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, zipfile.BadZipFile):
        return None  # json.JSONDecodeError is a ValueError
    return arrays, metadata


def save_entry(key: str, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Store an entry atomically: arrays first, then the metadata that marks it complete."""
    npz_path, json_path = entry_paths(key)
    with atomic_path(npz_path) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    record = {**metadata, "key": key, "cache_format": CACHE_FORMAT}
    write_text_atomic(json_path, json.dumps(record, indent=2, sort_keys=True, default=str))
    return npz_path
