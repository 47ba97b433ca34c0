"""The grid ledger: the bookkeeping of one run of a plan, kept once for both executors.

The local executor (local.py: worker processes here) and the Slurm executor (slurm.py: one job
or array task per node) differ only in how they launch a node and learn that it ended; what
follows from that lives here: each unfinished node's node.json (what its worker runs, with this
machine's paths), which nodes are done, failed or skipped, which are ready (every parent done,
or queued on Slurm), skipping the dependents of a failed node, the events told to the caller
(`NodeEvents`: grid.log and the screen), and the `Outcome` returned. A node's folder stays the
truth (nodes.py): the ledger starts from the nodes already done there, and a rerun retries the
failed ones.
"""

from __future__ import annotations

import copy
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from proximity.atomic import write_text_atomic
from proximity.training.grid.nodes import (
    ERROR,
    NODE_FILE,
    error_line,
    is_done,
    node_dir,
    write_json_atomic,
)
from proximity.training.grid.plan import TOKENIZER_REF, Node, Plan


class NodeEvents(Protocol):
    """What an executor tells as it learns a node's fate: `event` is start, done, fail, skip
    or wait (another train-grid process runs the node), `text` how or why (progress.GridLog
    writes them to grid.log)."""

    def __call__(self, event: str, node: Node, text: str) -> None: ...


def _silent(event: str, node: Node, text: str) -> None:
    """No one listens (an executor called without `on_change`)."""


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)  # finished now or before
    ran: list[str] = field(default_factory=list)  # finished by this call
    failed: dict[str, str] = field(default_factory=dict)  # id -> error line
    skipped: list[str] = field(default_factory=list)  # a parent failed


class Ledger:
    """Done, failed and skipped nodes of one executor's run, and what is ready next.

    Nodes are visited in plan order, parents before children, so one pass both skips every
    dependent of a failed node (a skipped parent skips its children in turn) and finds every
    node whose parents are all done.
    """

    def __init__(self, plan: Plan, out: Path, on_change: NodeEvents | None = None) -> None:
        self.plan, self.out = plan, out
        self.by_id = plan.by_id()
        self.done = {n.id for n in plan.nodes if is_done(node_dir(out, n.id))}
        self.ran: list[str] = []  # finished by this run, in the order they finished
        self.failed: dict[str, str] = {}  # id -> the first line of its error.txt
        self.skipped: set[str] = set()
        self.say: NodeEvents = on_change or _silent

    def folder(self, node_id: str) -> Path:
        return node_dir(self.out, node_id)

    def open(self, node_id: str, *excluded: Container[str]) -> bool:
        """Not done, failed or skipped, nor in any of `excluded` (a running batch, say)."""
        settled = node_id in self.done or node_id in self.failed or node_id in self.skipped
        return not settled and not any(node_id in ids for ids in excluded)

    def blocked(self, node: Node) -> bool:
        """A parent failed or was skipped: the node cannot run in this call."""
        return any(p in self.failed or p in self.skipped for p in node.parents)

    def parents_done(self, node: Node, queued: Container[str] = ()) -> bool:
        """Every parent done, or in `queued` (Slurm: its job is queued, so the node's job can
        wait for it with `afterok`)."""
        return all(p in self.done or p in queued for p in node.parents)

    def ready(self, *excluded: Container[str], queued: Container[str] = ()) -> Iterator[Node]:
        """Open nodes (`open`) whose parents are all done (or `queued`: see parents_done), in
        plan order; on the way, skips the open nodes that `blocked` says cannot run. Lazy: what
        the caller records while it iterates (a node done, a batch launched) counts for the
        nodes after it."""
        for node in self.plan.nodes:
            if not self.open(node.id, *excluded):
                continue
            if self.blocked(node):
                self.skip(node)
                continue
            if self.parents_done(node, queued):
                yield node

    def found_done(self, node_id: str) -> None:
        """Done, by an earlier call or by another process (no event: nothing ran here)."""
        self.done.add(node_id)

    def finished(self, node: Node, how: str) -> None:
        """Done by this run: told as `done` with `how` it ran."""
        self.done.add(node.id)
        self.ran.append(node.id)
        self.say("done", node, how)

    def fail(self, node: Node, message: str | None = None) -> None:
        """Failed: its error.txt (`message`, unless the worker wrote its own) gives the line."""
        folder = self.folder(node.id)
        if message is not None:
            write_text_atomic(folder / ERROR, message)
        self.failed[node.id] = error_line(folder)
        self.say("fail", node, self.failed[node.id])

    def skip(self, node: Node, detail: str = "") -> None:
        """Skipped: a parent failed (`detail`, e.g. the cancelled job, in brackets after it)."""
        self.skipped.add(node.id)
        self.say("skip", node, "a parent failed" + (f" ({detail})" if detail else ""))

    def outcome(self) -> Outcome:
        """What happened, each list in plan order (`ran` in the order the nodes finished)."""
        ids = [n.id for n in self.plan.nodes]
        return Outcome(
            done=[i for i in ids if i in self.done],
            ran=list(self.ran),
            failed=dict(self.failed),
            skipped=[i for i in ids if i in self.skipped],
        )


# ---- node.json: what a worker runs ---------------------------------------------------------


def write_node_files(plan: Plan, out: Path, data_dir: str | None) -> None:
    """node.json of every node not done yet (a done node keeps the one it ran with)."""
    for node in plan.nodes:
        folder = node_dir(out, node.id)
        if not is_done(folder):
            write_json_atomic(folder / NODE_FILE, node_payload(plan, node, out, data_dir))


def node_payload(plan: Plan, node: Node, out: Path, data_dir: str | None) -> dict:
    """node.json: everything the worker needs, with this machine's paths filled in."""
    payload = {
        "id": node.id,
        "kind": node.kind,
        "label": node.label,
        "settings": node.settings,
        "parents": list(node.parents),
        "data_dir": data_dir,
        "keep_checkpoints": False,
    }
    if node.kind == "tokenizer":
        return payload
    if node.kind == "prepare":
        payload["run_configs"] = [
            _with_paths(plan, copy.deepcopy(c), out, data_dir) for c in node.settings["configs"]
        ]
        return payload
    cfg = _with_paths(plan, copy.deepcopy(node.settings), out, data_dir)
    folder = node_dir(out, node.id)
    cfg["out_dir"] = str(folder)
    if node.init_from is not None:
        parent, step = node.init_from
        source = node_dir(out, parent)
        cfg["model"]["init_from"] = str(
            source if step is None else source / "checkpoints" / f"step-{step:06d}"
        )
    _group_trackers(cfg["log"], plan, node, out)
    payload["run_config"] = cfg
    return payload


def _group_trackers(log: dict, plan: Plan, node: Node, out: Path) -> None:
    """Trackers asked for through `train_set` group a grid's runs: W&B group = the grid,
    job type = the node's kind, name = its id; TensorBoard under DIR/tensorboard/<kind>/<id>,
    so `tensorboard --logdir DIR/tensorboard` shows the whole grid. Values set in train_set win."""
    if not (log.get("tensorboard") or log.get("wandb")):
        return
    defaults = {
        "group": f"{plan.spec.name} {out.name}",
        "job_type": node.kind,
        "name": node.id,
        "tb_dir": str(out / "tensorboard" / node.kind / node.id),
    }
    for key, value in defaults.items():
        if log.get(key) is None:
            log[key] = value


def _with_paths(plan: Plan, cfg: dict, out: Path, data_dir: str | None) -> dict:
    """This machine's data folder, the grid's shared token cache and the grid's tokenizer."""
    cfg["data"]["data_dir"] = data_dir
    cfg["data"]["cache_dir"] = str(out / "cache" / "tokens")
    if cfg["data"]["tokenizer"] == TOKENIZER_REF:
        tok = next(n for n in plan.nodes if n.kind == "tokenizer")
        cfg["data"]["tokenizer"] = str(node_dir(out, tok.id) / "tokenizer.json")
    return cfg
