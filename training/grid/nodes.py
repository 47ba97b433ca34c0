"""A node's folder: DIR/nodes/<id>/ with node.json (what to run), a lock, result.json or error.txt.

A node is done when result.json exists (written atomically, last). A running node holds an
exclusive `flock` on its `lock` file for its whole life; the kernel drops it when the process
dies however it dies (kill -9 included), so a lock is never left behind by a dead process and
two `train-grid` processes can never run one node twice.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from proximity.atomic import write_text_atomic

RESULT, ERROR, LOCK, NODE_FILE, LOG = "result.json", "error.txt", "lock", "node.json", "log.txt"
ATTEMPTS = "attempts.txt"


def node_dir(out: Path, node_id: str) -> Path:
    return out / "nodes" / node_id


def is_done(folder: Path) -> bool:
    return (folder / RESULT).exists()


def read_result(folder: Path) -> dict[str, Any]:
    return json.loads((folder / RESULT).read_text())


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


@contextmanager
def node_lock(folder: Path):
    """Hold the node's lock (yields True) or learn that another process holds it (False)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {os.uname().nodename}\n".encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(folder: Path) -> bool:
    """True while some process runs the node (a shared probe; released at once)."""
    if not (folder / LOCK).exists():
        return False
    fd = os.open(folder / LOCK, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def node_state(folder: Path) -> str:
    if is_done(folder):
        return "done"
    if is_locked(folder):
        return "running"
    if (folder / ERROR).exists():
        return "failed"
    return "pending"


def error_line(folder: Path) -> str:
    path = folder / ERROR
    if not path.exists():
        return ""
    lines = path.read_text().strip().splitlines()
    return lines[0] if lines else ""
