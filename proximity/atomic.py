"""Atomic file writes: a results or cache file is either complete or absent, never half-written.

Readers (a second command, a crashed run picked up later, another process sharing the cache)
must never see a truncated file, so everything is written to a temporary file in the same
folder, flushed to disk (fsync), and moved into place with `os.replace`, which is atomic on
POSIX and Windows; the folder is fsynced after the rename so the new name survives a power
loss or a node crash too (without it, a crash can leave the new name pointing at an empty file).
This is the one helper every atomic writer in the project uses.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); a results file should get the permissions
        # any other new file would, so collaborators on a shared machine can read it.
        os.chmod(tmp, 0o666 & ~_umask())
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's contents to disk (folders: their entries, i.e. renames)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. folders cannot be opened on Windows; the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under `root`, then its folders: before renaming a folder into place."""
    root = Path(root)
    folders = [root]
    for path in root.rglob("*"):
        if path.is_dir():
            folders.append(path)
        else:
            fsync_path(path)
    for folder in reversed(folders):
        fsync_path(folder)


def _umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
