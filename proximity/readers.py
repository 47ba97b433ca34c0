"""Read records from local files or the Hugging Face hub, one at a time.

Each reader yields `(location, record)` where location is "file:line" (or "file row N"), so a
bad record can be reported exactly. Nothing here materialises a whole dataset: JSONL and
Parquet stream, hub datasets are opened with `streaming=True`. (A `.json` array must be parsed
whole; that is the format's nature.)
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from proximity.errors import ProximityError

Record = dict[str, Any]
LOCAL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet", ".txt")


def looks_like_local_path(source: str) -> bool:
    """A spec names a local path if it exists, or if it is written like one."""
    return (
        Path(source).expanduser().exists()
        or source.startswith((".", "/", "~"))
        or source.endswith(LOCAL_SUFFIXES)
    )


def file_fingerprint(path: Path) -> str:
    """Size and modification time of a file, or of every file in a folder (cheap, like make)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    parts = []
    for item in files:
        stat = item.stat()
        parts.append(f"{item.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(parts)


def read_local(path: Path, split: str | None = None) -> Iterator[tuple[str, Record]]:
    """Records of a local file or `save_to_disk` folder, in file order."""
    if not path.exists():
        raise ProximityError(f"file not found: {path}")
    if path.is_dir():
        yield from _read_saved_dataset(path, split)
        return
    name = path.name
    if name.endswith(".jsonl.gz"):
        with gzip.open(path, "rb") as handle:
            yield from _read_jsonl_lines(handle, path)
    elif name.endswith(".jsonl"):
        with path.open("rb") as handle:
            yield from _read_jsonl_lines(handle, path)
    elif name.endswith(".json"):
        yield from _read_json_array(path)
    elif name.endswith(".parquet"):
        yield from _read_parquet(path)
    elif name.endswith(".txt"):
        yield from _read_text_lines(path)
    else:
        raise ProximityError(
            f"{path}: unsupported file type; use one of {', '.join(LOCAL_SUFFIXES)} "
            f"or a folder written by datasets.save_to_disk"
        )


def _decoded_lines(handle: Any, path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a binary handle, decoded line by line.

    A text-mode handle decodes ahead in 8 KiB chunks, so its `UnicodeDecodeError` can point
    several lines past the bad one and arrives as a traceback; decoding each line names it.
    """
    for line_number, raw in enumerate(handle, start=1):
        try:
            yield line_number, raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ProximityError(
                f"{path}:{line_number}: not UTF-8 (byte {raw[error.start]:#04x} at column "
                f"{error.start + 1}); re-encode the file as UTF-8"
            ) from None


def _read_jsonl_lines(handle: Any, path: Path) -> Iterator[tuple[str, Record]]:
    for line_number, line in _decoded_lines(handle, path):
        if not line.strip():
            continue
        location = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ProximityError(
                f"{location}: malformed JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise ProximityError(
                f"{location}: expected a JSON object per line, got {type(record).__name__}"
            )
        yield location, record


def _read_json_array(path: Path) -> Iterator[tuple[str, Record]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        raise ProximityError(
            f"{path}:{line}: not UTF-8 (byte {raw[error.start]:#04x}); re-encode the file as UTF-8"
        ) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ProximityError(
            f"{path}:{error.lineno}: malformed JSON ({error.msg} at column {error.colno})"
        ) from None
    if isinstance(data, dict):
        # A {"data": [...]} or {"train": [...]} wrapper is common; take its only list.
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) != 1:
            raise ProximityError(f"{path}: expected a JSON array of objects")
        data = lists[0]
    if not isinstance(data, list):
        raise ProximityError(f"{path}: expected a JSON array of objects")
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise ProximityError(f"{path}: item {index} is not a JSON object")
        yield f"{path} item {index}", record


def _read_parquet(path: Path) -> Iterator[tuple[str, Record]]:
    import pyarrow.parquet as pq  # heavy (~0.3 s); only .parquet files need it

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a bad file
        raise ProximityError(f"{path}: not a readable Parquet file ({error})") from None
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield f"{path} row {row}", record
            row += 1


def _read_text_lines(path: Path) -> Iterator[tuple[str, Record]]:
    """A .txt file holds one document per line (blank lines skipped); the field is `text`."""
    with path.open("rb") as handle:
        for line_number, line in _decoded_lines(handle, path):
            text = line.rstrip("\r\n")
            if text.strip():
                yield f"{path}:{line_number}", {"text": text}


def _read_saved_dataset(path: Path, split: str | None) -> Iterator[tuple[str, Record]]:
    import datasets  # heavy (~1 s); only save_to_disk folders and the hub need it

    if not ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        raise ProximityError(
            f"{path} is a folder but not one written by datasets.save_to_disk "
            f"(no state.json or dataset_dict.json)"
        )
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise ProximityError(
                f"{path} holds splits {', '.join(loaded)}; pick one with ?split=NAME"
            )
        loaded = loaded[split]
    for row, record in enumerate(loaded):
        yield f"{path} row {row}", record


@functools.cache
def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a connection to the hub? Checked once per process.

    Without this, an offline machine spends ~25 s in the hub client's retries before failing;
    with it the user gets the "use local data" message at once. With `HF_HUB_OFFLINE=1` the
    hub libraries read their local cache, so we let them try.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def require_hub(what: str) -> None:
    """Fail fast, with the way out, when `what` needs the hub and it can't be reached."""
    if not hub_reachable():
        raise ProximityError(
            f"{what} needs the Hugging Face hub, which is unreachable from here. Point "
            f"--data-dir (or $PROXIMITY_DATA_DIR) at a folder with local copies, or pass a local "
            f"file path instead of the name"
        )


def read_hub(
    hub_id: str,
    *,
    config: str | None = None,
    split: str = "train",
    revision: str | None = None,
    data_dir: str | None = None,
    shuffle_seed: int | None = None,
    shuffle_buffer: int = 10_000,
) -> Iterator[tuple[str, Record]]:
    """Stream a hub dataset; never downloads it whole. Shuffling uses a buffer (approximate)."""
    import datasets  # heavy (~1 s); only save_to_disk folders and the hub need it

    require_hub(f"hf:{hub_id}")
    try:
        stream = datasets.load_dataset(
            hub_id, config, split=split, revision=revision, data_dir=data_dir, streaming=True
        )
        if shuffle_seed is not None:
            stream = stream.shuffle(seed=shuffle_seed, buffer_size=shuffle_buffer)
        for row, record in enumerate(stream):
            yield f"hf:{hub_id} ({split}) row {row}", record
    except ProximityError:
        raise
    except Exception as error:
        raise ProximityError(_hub_error_message(hub_id, error)) from None


def _hub_error_message(hub_id: str, error: Exception) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0][:200]
    return (
        f"could not read hf:{hub_id} from the Hugging Face hub ({text}). Without hub access, "
        f"point --data-dir (or $PROXIMITY_DATA_DIR) at a folder with local copies, or pass a "
        f"local file path instead of the name"
    )
