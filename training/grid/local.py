"""Run a plan on this machine: each node a `training.grid.worker` subprocess, `jobs` at a time.

A subprocess per node is what makes `kill -9` safe (a node's state is only its folder), lets
`--jobs N` split the cores (system.threads = cores // N per node), and is the same unit that
Slurm runs. Nodes whose parents failed are skipped; the others go on; a rerun retries failures.
A node that another `train-grid` process holds (its lock) is waited for, never run twice.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from training.grid.nodes import (
    ERROR,
    LOG,
    NODE_FILE,
    error_line,
    is_done,
    is_locked,
    node_dir,
    write_json_atomic,
)
from training.grid.plan import TOKENIZER_REF, Node, Plan
from training.grid.worker import EXIT_BUSY

POLL_S = 0.2


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)  # finished now or before
    ran: list[str] = field(default_factory=list)  # finished by this call
    failed: dict[str, str] = field(default_factory=dict)  # id -> error line
    skipped: list[str] = field(default_factory=list)  # a parent failed


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


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


def _how_it_runs(pid: int, batch: int) -> str:
    """Why a node's start may come later than its process's (said in the per-node lines)."""
    if batch == 1:
        return f"(worker process {pid})"
    return (
        f"(worker process {pid}, shared with {batch - 1} sibling node(s) of the same kind and "
        "parent, run one after another so torch is imported once)"
    )


def write_node_files(plan: Plan, out: Path, data_dir: str | None) -> None:
    for node in plan.nodes:
        folder = node_dir(out, node.id)
        if not is_done(folder):
            write_json_atomic(folder / NODE_FILE, node_payload(plan, node, out, data_dir))


def run_local(
    plan: Plan,
    out: Path,
    *,
    jobs: int = 1,
    threads: int | None = None,
    max_batch: int = 16,
    on_change: Callable[[str, Node, str], None] | None = None,
) -> Outcome:
    """Run every node that is not done; returns what happened. `on_change(event, node, text)`."""
    threads = threads or max(1, available_cores() // jobs)
    by_id = plan.by_id()
    outcome = Outcome()
    done = {n.id for n in plan.nodes if is_done(node_dir(out, n.id))}
    failed: dict[str, str] = {}
    skipped: set[str] = set()
    # one worker process per batch of sibling nodes: (process, node ids, start time)
    running: dict[int, tuple[subprocess.Popen, list[str], float]] = {}
    busy: set[str] = set()  # ids inside a running batch
    unstarted: dict[str, str] = {}  # busy id -> how it runs, until its worker takes its lock
    elsewhere: dict[str, float] = {}  # node id -> when we started waiting for it
    say = on_change or (lambda *a: None)

    def launch(batch: list[Node]) -> None:
        folders = [node_dir(out, node.id) for node in batch]
        log = (folders[0] / LOG).open("ab")
        command = [
            sys.executable,
            "-m",
            "training.grid.worker",
            *map(str, folders),
            "--threads",
            str(threads),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        for folder in folders[1:]:
            (folder / LOG).write_text(f"runs in the worker logging to {folders[0] / LOG}\n")
        running[proc.pid] = (proc, [node.id for node in batch], time.time())
        busy.update(node.id for node in batch)
        for node in batch:
            unstarted[node.id] = _how_it_runs(proc.pid, len(batch))

    def report_starts() -> None:
        """A node starts when its worker takes its lock (what `status` reads), not at launch:
        siblings in one worker process run one after another."""
        for nid, how in list(unstarted.items()):
            folder = node_dir(out, nid)
            if is_locked(folder) or is_done(folder) or (folder / ERROR).exists():
                del unstarted[nid]
                say("start", by_id[nid], how)

    def ready(node: Node) -> bool:
        nid = node.id
        if nid in done or nid in failed or nid in skipped or nid in busy or nid in elsewhere:
            return False
        return all(p in done for p in node.parents) and not is_done(node_dir(out, nid))

    while True:
        progressed = False
        for node in plan.nodes:
            nid = node.id
            if nid in done or nid in failed or nid in skipped or nid in busy:
                continue
            if nid in elsewhere:
                continue
            if any(p in failed or p in skipped for p in node.parents):
                skipped.add(nid)
                say("skip", node, "a parent failed")
                continue
            if not all(p in done for p in node.parents):
                continue
            folder = node_dir(out, nid)
            if is_done(folder):
                done.add(nid)
                continue
            if is_locked(folder):
                elsewhere[nid] = time.time()
                say("wait", node, "another train-grid process runs it")
                continue
            if len(running) >= jobs:
                break
            # Siblings of the same kind and parent share one process (torch imports once);
            # with --jobs N they are dealt out over the N processes.
            siblings = [
                n
                for n in plan.nodes
                if n.kind == node.kind and n.parents == node.parents and n is not node and ready(n)
            ]
            size = min(max_batch, -(-(len(siblings) + 1) // jobs))
            launch([node, *siblings[: size - 1]])
            progressed = True
        report_starts()
        for pid, (proc, ids, started) in list(running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            report_starts()
            for nid in ids:
                unstarted.pop(nid, None)
            del running[pid]
            busy.difference_update(ids)
            progressed = True
            crashed = rc not in (0, 1, 2, 3, EXIT_BUSY)  # killed by a signal, OOM, ...
            for nid in ids:
                folder = node_dir(out, nid)
                error = folder / ERROR
                if is_done(folder):
                    done.add(nid)
                    outcome.ran.append(nid)
                    say("done", by_id[nid], _how_it_runs(pid, len(ids)))
                    continue
                if crashed and not (error.exists() and error.stat().st_mtime >= started - 1):
                    # the first unfinished node of the batch is the one it was running
                    log = (node_dir(out, ids[0]) / LOG).read_text(errors="replace")
                    tail = "\n".join(log.splitlines()[-20:])
                    error.write_text(f"worker process ended with status {rc}\n\n{tail}\n")
                    crashed = False
                if error.exists() and error.stat().st_mtime >= started - 1:
                    failed[nid] = error_line(folder)
                    say("fail", by_id[nid], failed[nid])
                else:
                    elsewhere[nid] = time.time()  # another process had it, or not reached
        for nid, since in list(elsewhere.items()):
            folder = node_dir(out, nid)
            if is_done(folder):
                done.add(nid)
            elif is_locked(folder):
                continue
            elif (folder / ERROR).exists() and (folder / ERROR).stat().st_mtime >= since:
                failed[nid] = error_line(folder)
                say("fail", by_id[nid], failed[nid])
            del elsewhere[nid]  # finished, failed, or free again: decide on the next pass
            progressed = True
        if not running and not elsewhere and not progressed:
            break
        if not progressed:
            time.sleep(POLL_S)
    outcome.done = [n.id for n in plan.nodes if n.id in done]
    outcome.failed = failed
    outcome.skipped = [n.id for n in plan.nodes if n.id in skipped]
    return outcome
