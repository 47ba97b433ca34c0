"""How far a grid has got and how long it has left, read from its folder alone.

One function (`snapshot`) serves the live display of `train-grid` and `train-grid status`, so
the two cannot disagree: a node is done when its result.json exists (its time is the
`wall_time_s` the worker wrote there), running while a process holds its lock (since the lock
file's mtime: the worker writes its pid into it when it takes it), else pending or failed.

Time left is the sum of what each unfinished node should take, divided by the nodes running
now: a node whose tokens the plan knows takes tokens x the seconds per token measured on the
finished nodes of its kind (any training kind when none of its own has finished); one whose
tokens are unknown (SFT before its data is read; tokenizer, prepare) takes the mean time of its
kind's finished nodes. A running node is credited with the time it has run so far. Nodes of a
kind with nothing measured yet are counted and named, not guessed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.text import Text

from proximity.training.grid.nodes import ERROR, LOCK, is_done, is_locked, node_dir, read_result

if (
    TYPE_CHECKING
):  # a type only: the plan's modules import torch (through proximity.training.presets)
    from proximity.training.grid.plan import Node

KINDS = ("tokenizer", "prepare", "pretrain", "midtrain", "sft")
TRAINING = ("pretrain", "midtrain", "sft")


@dataclass
class Snapshot:
    """A grid's state at one moment (`snapshot`)."""

    total: dict[str, int]  # kind -> nodes
    done: dict[str, int]  # kind -> done nodes
    failed: list[str]
    running: dict[str, float]  # node id -> seconds it has run so far
    tokens_done: int  # trained by done nodes (their result.json)
    tokens_total: int  # done nodes' tokens + the plan's for the others (known ones)
    tokens_unknown: int  # nodes not done whose tokens the plan does not know
    node_seconds: float  # sum of done nodes' own times
    left_s: float | None  # estimated wall time left (None: nothing measured yet)
    unestimated: dict[str, int] = field(default_factory=dict)  # kind -> nodes not estimable
    labels: dict[str, str] = field(default_factory=dict)  # node id -> label

    @property
    def nodes_done(self) -> int:
        return sum(self.done.values())

    @property
    def nodes_total(self) -> int:
        return sum(self.total.values())


class ResultCache:
    """result.json of done nodes, read once (a done node never changes)."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}

    def get(self, out: Path, node_id: str) -> dict[str, Any] | None:
        if node_id not in self.results:
            folder = node_dir(out, node_id)
            if not is_done(folder):
                return None
            self.results[node_id] = read_result(folder)
        return self.results[node_id]


def snapshot(
    out: Path,
    nodes: list[dict[str, Any]],
    cache: ResultCache | None = None,
    now: float | None = None,
) -> Snapshot:
    """The state of the grid in `out`; `nodes` are plan.json's records (id, kind, tokens)."""
    cache = cache or ResultCache()
    now = time.time() if now is None else now
    total = {k: 0 for k in KINDS}
    done = {k: 0 for k in KINDS}
    results: dict[str, dict[str, Any]] = {}
    running: dict[str, float] = {}
    failed: list[str] = []
    for node in nodes:
        nid, kind = node["id"], node["kind"]
        total[kind] = total.get(kind, 0) + 1
        result = cache.get(out, nid)
        if result is not None:
            done[kind] = done.get(kind, 0) + 1
            results[nid] = result
            continue
        folder = node_dir(out, nid)
        if is_locked(folder):
            running[nid] = max(0.0, now - (folder / LOCK).stat().st_mtime)
        elif (folder / ERROR).exists():
            failed.append(nid)
    tokens_done = sum(int(r.get("tokens") or 0) for r in results.values())
    pending = [n for n in nodes if n["id"] not in results]
    known = [n for n in pending if n.get("tokens") is not None]
    speeds = {nid: _tokens_per_s(node_dir(out, nid)) for nid in running}
    left, unestimated = _time_left(nodes, results, running, failed, speeds)
    return Snapshot(
        total={k: v for k, v in total.items() if v},
        done={k: v for k, v in done.items() if total.get(k)},
        failed=failed,
        running=running,
        tokens_done=tokens_done,
        tokens_total=tokens_done + sum(int(n["tokens"]) for n in known),
        tokens_unknown=sum(1 for n in pending if n.get("tokens") is None and n["kind"] in TRAINING),
        node_seconds=sum(float(r.get("wall_time_s") or 0.0) for r in results.values()),
        left_s=left,
        unestimated=unestimated,
        labels={n["id"]: n.get("label", "") for n in nodes},
    )


def _time_left(
    nodes: list[dict[str, Any]],
    results: dict[str, dict[str, Any]],
    running: dict[str, float],
    failed: list[str],
    speeds: dict[str, float | None] | None = None,
) -> tuple[float | None, dict[str, int]]:
    """(estimated wall seconds left, kind -> nodes with nothing to estimate them from).

    `speeds`: running nodes' latest logged tokens/s, used for a kind none of whose nodes
    has finished (the first pretraining node of a grid, say)."""
    seconds: dict[str, list[float]] = {}
    per_token: dict[str, tuple[float, int]] = {}  # kind -> (seconds, tokens) of done nodes
    kind_of = {n["id"]: n["kind"] for n in nodes}
    for nid, r in results.items():
        kind = kind_of[nid]
        wall = float(r.get("wall_time_s") or 0.0)
        seconds.setdefault(kind, []).append(wall)
        if r.get("tokens"):
            s, t = per_token.get(kind, (0.0, 0))
            per_token[kind] = (s + wall, t + int(r["tokens"]))
    for nid, speed in (speeds or {}).items():
        if speed and kind_of[nid] not in per_token:
            per_token[kind_of[nid]] = (1.0, speed)  # one second per `speed` tokens
    trained = [per_token[k] for k in TRAINING if k in per_token]
    any_rate = sum(s for s, _ in trained) / sum(t for _, t in trained) if trained else None
    left = 0.0
    unestimated: dict[str, int] = {}
    skipped = set(failed)
    for node in nodes:
        nid, kind = node["id"], node["kind"]
        if nid in results or nid in skipped:
            continue
        rate = per_token[kind][0] / per_token[kind][1] if kind in per_token else any_rate
        if node.get("tokens") is not None and kind in TRAINING and rate is not None:
            estimate = node["tokens"] * rate
        elif seconds.get(kind):
            estimate = sum(seconds[kind]) / len(seconds[kind])
        else:
            unestimated[kind] = unestimated.get(kind, 0) + 1
            continue
        left += max(0.0, estimate - running.get(nid, 0.0))
    if left == 0.0 and unestimated:
        return None, unestimated
    return left / max(1, len(running)), unestimated


def _tokens_per_s(folder: Path) -> float | None:
    """The last training throughput a running node logged (metrics.jsonl's tail), if any."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return None
    with path.open("rb") as file:
        file.seek(max(0, path.stat().st_size - 4096))
        tail = file.read().decode(errors="replace").splitlines()
    for line in reversed(tail):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("split") == "train" and record.get("tokens_per_s"):
            return float(record["tokens_per_s"])
    return None


def fmt_tokens(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.0f}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.1f} s"


def summary_lines(snap: Snapshot, elapsed_s: float | None = None) -> list[str]:
    """The totals as plain lines (the live display and `status` print these)."""
    kinds = ", ".join(f"{k} {snap.done[k]}/{n}" for k, n in snap.total.items())
    unknown = f" (+{snap.tokens_unknown} nodes not counted yet)" if snap.tokens_unknown else ""
    lines = [
        f"nodes done: {snap.nodes_done}/{snap.nodes_total} ({kinds})"
        + (f", {len(snap.failed)} failed" if snap.failed else ""),
        f"tokens trained: {fmt_tokens(snap.tokens_done)}/{fmt_tokens(snap.tokens_total)}{unknown}",
    ]
    times = "time left: " + ("?" if snap.left_s is None else f"~{fmt_seconds(snap.left_s)}")
    if snap.unestimated:
        what = ", ".join(f"{n} {k}" for k, n in snap.unestimated.items())
        more = "more " if snap.left_s is not None else ""
        times += f" ({more}for {what} nodes: nothing of that kind measured yet)"
    if elapsed_s is not None:
        times = f"elapsed {fmt_seconds(elapsed_s)}, {times}"
    lines.append(times + f"; node time so far {fmt_seconds(snap.node_seconds)}")
    return lines


class LiveDisplay:
    """The one live view of a running grid (a rich renderable, rebuilt at most once a second
    from the grid's folder by `snapshot`): totals, time left, and the nodes running now."""

    MAX_RUNNING = 8

    def __init__(self, out: Path, nodes: list[dict[str, Any]], started: float) -> None:
        self.out, self.nodes, self.started = out, nodes, started
        self.cache = ResultCache()
        self._last: tuple[float, Any] | None = None

    def render(self) -> Group:
        now = time.time()
        if self._last is not None and now - self._last[0] < 0.9:
            return self._last[1]
        snap = snapshot(self.out, self.nodes, self.cache, now)
        lines = [Text(line) for line in summary_lines(snap, now - self.started)]
        if snap.running:
            lines.append(Text(f"running now ({len(snap.running)}):"))
            longest = sorted(snap.running.items(), key=lambda item: -item[1])
            for nid, so_far in longest[: self.MAX_RUNNING]:
                lines.append(Text(f"  {nid} {snap.labels.get(nid, '')}  {fmt_seconds(so_far)}"))
            if len(longest) > self.MAX_RUNNING:
                lines.append(Text(f"  ... and {len(longest) - self.MAX_RUNNING} more"))
        group = Group(*lines)
        self._last = (now, group)
        return group


class GridLog:
    """DIR/grid.log: one timestamped line per node event an executor reports (start, done,
    fail, skip, wait; ledger.NodeEvents), also passed to `echo` (the screen) when given.
    After an SFT node's done line, `on_sft_done()` (train-grid rewrites results.csv there)."""

    def __init__(
        self,
        out: Path,
        echo: Callable[[str], object] | None = None,
        on_sft_done: Callable[[], object] | None = None,
    ) -> None:
        self.out, self.echo, self.on_sft_done = out, echo, on_sft_done
        self.file = (out / "grid.log").open("a", buffering=1)

    def __enter__(self) -> GridLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()

    def note(self, text: str) -> None:
        """A line of the log alone (the grid's start), not shown on the screen."""
        self.file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def __call__(self, event: str, node: Node, text: str) -> None:
        if event == "done":  # the node's own time, the one `status` shows
            took = read_result(node_dir(self.out, node.id)).get("wall_time_s")
            text = f"took {fmt_seconds(took)} {text}"
        line = f"{event:5s} {node.id} {node.label} {text}".rstrip()
        self.note(line)
        if self.echo is not None:
            self.echo(f"{time.strftime('%H:%M:%S')} {line}")
        if event == "done" and node.kind == "sft" and self.on_sft_done is not None:
            self.on_sft_done()
