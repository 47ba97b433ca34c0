"""Run a plan on this machine: each node a `proximity.training.grid.worker` subprocess, `jobs`
at a time.

A subprocess per node is what makes `kill -9` safe (a node's state is only its folder), lets
`--jobs N` split the cores (system.threads = cores // N per node), and is the same unit that
Slurm runs. Nodes whose parents failed are skipped; the others go on; a rerun retries failures.
A node that another `train-grid` process holds (its lock) is waited for, never run twice.
Which nodes are done, failed, skipped or ready is the ledger's (ledger.py); this module only
launches worker processes and polls them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from proximity.training.grid.ledger import Ledger, NodeEvents, Outcome
from proximity.training.grid.nodes import ERROR, LOG, is_done, is_locked
from proximity.training.grid.plan import Node, Plan
from proximity.training.grid.worker import EXIT_BUSY

POLL_S = 0.2


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _how_it_runs(pid: int, batch: int) -> str:
    """Why a node's start may come later than its process's (said in the per-node lines)."""
    if batch == 1:
        return f"(worker process {pid})"
    return (
        f"(worker process {pid}, shared with {batch - 1} other ready node(s) of the same kind, "
        "run one after another so torch is imported once)"
    )


def run_local(
    plan: Plan,
    out: Path,
    *,
    jobs: int = 1,
    threads: int | None = None,
    max_batch: int = 16,
    on_change: NodeEvents | None = None,
) -> Outcome:
    """Run every node that is not done; returns what happened. `on_change(event, node, text)`."""
    ledger = Ledger(plan, out, on_change)
    workers = Workers(ledger, jobs, threads or max(1, available_cores() // jobs), max_batch)
    while True:
        progressed = workers.launch_ready()
        workers.report_starts()
        progressed |= workers.reap()
        progressed |= workers.recheck_elsewhere()
        if not workers.running and not workers.elsewhere and not progressed:
            break
        if not progressed:
            time.sleep(POLL_S)
    return ledger.outcome()


class Workers:
    """The worker processes of one `run_local` call, `jobs` at a time.

    Ready nodes of one kind share a process, so torch is imported once per batch (a node's
    numbers never depend on what ran before it in its process: each sets its own seeds and
    threads, tested bitwise); with --jobs N they are dealt out over the N processes. A node
    another process holds (its lock) is `elsewhere`: waited for, then taken as done, failed,
    or free to run again.
    """

    def __init__(self, ledger: Ledger, jobs: int, threads: int, max_batch: int) -> None:
        self.ledger, self.jobs, self.threads, self.max_batch = ledger, jobs, threads, max_batch
        # one worker process per batch of sibling nodes: pid -> (process, node ids, start time)
        self.running: dict[int, tuple[subprocess.Popen, list[str], float]] = {}
        self.busy: set[str] = set()  # ids inside a running batch
        self.unstarted: dict[str, str] = {}  # busy id -> how it runs, until its worker locks it
        self.elsewhere: dict[str, float] = {}  # node id -> when we started waiting for it

    def launch_ready(self) -> bool:
        """Launch ready nodes while fewer than `jobs` processes run; True if any launched."""
        ledger, launched = self.ledger, False
        for node in ledger.ready(self.busy, self.elsewhere):
            folder = ledger.folder(node.id)
            if is_done(folder):
                ledger.found_done(node.id)
                continue
            if is_locked(folder):
                self.elsewhere[node.id] = time.time()
                ledger.say("wait", node, "another train-grid process runs it")
                continue
            if len(self.running) >= self.jobs:
                break
            self._launch([node, *self._batch_mates(node)])
            launched = True
        return launched

    def _batch_mates(self, node: Node) -> list[Node]:
        """The ready nodes of `node`'s kind that share its process: any parent (on the study
        grid same-parent batches meant 85 worker processes per part, ~8 s of imports each),
        its share of them over the jobs. None for pretraining: minutes to hours each, an import
        is nothing, and two in one process would leave another slot idle."""
        if node.kind == "pretrain":
            return []
        ready = [n for n in self.ledger.plan.nodes if n.kind == node.kind and n is not node]
        ready = [n for n in ready if self._ready(n)]
        size = min(self.max_batch, -(-(len(ready) + 1) // self.jobs))
        return ready[: size - 1]

    def _ready(self, node: Node) -> bool:
        ledger = self.ledger
        return (
            ledger.open(node.id, self.busy, self.elsewhere)
            and ledger.parents_done(node)
            and not is_done(ledger.folder(node.id))
        )

    def _launch(self, batch: list[Node]) -> None:
        folders = [self.ledger.folder(node.id) for node in batch]
        log = (folders[0] / LOG).open("ab")
        command = [
            sys.executable,
            "-m",
            "proximity.training.grid.worker",
            *map(str, folders),
            "--threads",
            str(self.threads),
        ]
        threads = str(self.threads)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        for folder in folders[1:]:
            (folder / LOG).write_text(f"runs in the worker logging to {folders[0] / LOG}\n")
        self.running[proc.pid] = (proc, [node.id for node in batch], time.time())
        self.busy.update(node.id for node in batch)
        for node in batch:
            self.unstarted[node.id] = _how_it_runs(proc.pid, len(batch))

    def report_starts(self) -> None:
        """A node starts when its worker takes its lock (what `status` reads), not at launch:
        nodes sharing a worker process run one after another."""
        for nid, how in list(self.unstarted.items()):
            folder = self.ledger.folder(nid)
            if is_locked(folder) or is_done(folder) or (folder / ERROR).exists():
                del self.unstarted[nid]
                self.ledger.say("start", self.ledger.by_id[nid], how)

    def reap(self) -> bool:
        """Settle the nodes of every worker process that ended; True if any had."""
        reaped = False
        for pid, (proc, ids, started) in list(self.running.items()):
            rc = proc.poll()
            if rc is None:
                continue
            self.report_starts()
            for nid in ids:
                self.unstarted.pop(nid, None)
            del self.running[pid]
            self.busy.difference_update(ids)
            reaped = True
            self._settle(pid, rc, ids, started)
        return reaped

    def _settle(self, pid: int, rc: int, ids: list[str], started: float) -> None:
        """Each node of an ended batch: done, failed (its error.txt is from this run), or
        `elsewhere` (another process had it, or the batch ended before reaching it)."""
        ledger = self.ledger
        crashed = rc not in (0, 1, 2, 3, EXIT_BUSY)  # killed by a signal, OOM, ...
        for nid in ids:
            folder = ledger.folder(nid)
            error = folder / ERROR
            if is_done(folder):
                ledger.finished(ledger.by_id[nid], _how_it_runs(pid, len(ids)))
                continue
            if crashed and not (error.exists() and error.stat().st_mtime >= started - 1):
                # the first unfinished node of the batch is the one it was running
                log = (ledger.folder(ids[0]) / LOG).read_text(errors="replace")
                tail = "\n".join(log.splitlines()[-20:])
                error.write_text(f"worker process ended with status {rc}\n\n{tail}\n")
                crashed = False
            if error.exists() and error.stat().st_mtime >= started - 1:
                ledger.fail(ledger.by_id[nid])
            else:
                self.elsewhere[nid] = time.time()  # another process had it, or not reached

    def recheck_elsewhere(self) -> bool:
        """Nodes another process held: done, failed, or free again (decided on the next
        pass); True if any of them was released."""
        ledger, released = self.ledger, False
        for nid, since in list(self.elsewhere.items()):
            folder = ledger.folder(nid)
            if is_done(folder):
                ledger.found_done(nid)
            elif is_locked(folder):
                continue
            elif (folder / ERROR).exists() and (folder / ERROR).stat().st_mtime >= since:
                ledger.fail(ledger.by_id[nid])
            del self.elsewhere[nid]
            released = True
        return released
