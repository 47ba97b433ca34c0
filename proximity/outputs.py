"""Results files: tidy CSV, JSON with every option and source, and whether a figure is current.

Every file is written atomically (see `proximity.atomic`), so an interrupted run leaves
either the previous complete file or none, never a truncated one. Nothing here imports
matplotlib: a figure is drawn (`proximity.figures`) only when its PNG is missing or was
drawn from other inputs, which `figure_key` and `png_figure_key` decide in microseconds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from proximity.atomic import atomic_path, write_text_atomic

FIGURE_KEY = "proximity-figure-key"
# Part of every figure key: bump when proximity.figures draws differently.
FIGURE_VERSION = 2
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def portable_path(path: str | Path) -> str:
    """A path as a results file records it: relative to the working directory when it lies
    within it or beside it (`../shared/data`), so that committed tables and reports carry no
    machine's absolute paths; any other path as it is."""
    target = Path(path)
    if not target.is_absolute():
        return str(target)
    relative = os.path.relpath(target, Path.cwd())
    return str(target) if relative.startswith(os.pardir + os.sep + os.pardir) else relative


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write `table` without its index, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def write_json(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` as indented JSON (NaN becomes null), atomically."""
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False, default=str)
    return write_text_atomic(path, text + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def figure_key(kind: str, data: pd.DataFrame, **settings: Any) -> str:
    """A hash of everything a figure is drawn from: its data, labels, titles, the code."""
    payload = {
        "kind": kind,
        "version": FIGURE_VERSION,
        "data": data.to_json(orient="split", double_precision=15),
        "settings": settings,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def png_figure_key(path: str | Path) -> str | None:
    """The figure key stored in a PNG's text chunks, or None (no file, not a PNG, no key)."""
    try:
        with Path(path).open("rb") as handle:
            if handle.read(8) != _PNG_SIGNATURE:
                return None
            while header := handle.read(8):
                if len(header) < 8:
                    return None
                length, kind = struct.unpack(">I4s", header)
                if kind == b"IDAT" or kind == b"IEND":
                    return None  # matplotlib writes text chunks before the image data
                body = handle.read(length)
                handle.read(4)  # CRC
                if kind == b"tEXt":
                    name, _, text = body.partition(b"\0")
                    if name.decode("latin-1") == FIGURE_KEY:
                        return text.decode("latin-1")
                elif kind == b"zTXt":
                    name, _, rest = body.partition(b"\0")
                    if name.decode("latin-1") == FIGURE_KEY:
                        return zlib.decompress(rest[1:]).decode("latin-1")
    except (OSError, struct.error, zlib.error, UnicodeDecodeError):
        return None
    return None
