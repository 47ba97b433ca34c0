"""Run a plan on Slurm: one job per node (submitit), `afterok` on its parents' jobs; sibling
nodes (same kind and parents: e.g. one branch's SFT runs) go into one job array, and with a
cap (`slurm.max_queued`, `--max-queued`) at most that many jobs are live, the rest submitted
as earlier ones finish.

A job runs exactly what the local executor runs, `python -m proximity.training.grid.worker NODE_DIR`
(under torchrun for a DDP node), so the node's lock, its resume from its own checkpoint and
result.json-written-last hold on a cluster too. The node's folder is the truth about its fate,
never Slurm's accounting (clusters without slurmdbd, like slurm-local, have no `sacct` and
submitit reads every state as UNKNOWN): a node is done when result.json exists; its job gone
from `squeue` with no result means it failed (cancelled, time limit, OOM...), and the waiting
CLI writes that into its error.txt. Dependents of a failed node are skipped and their pending
jobs cancelled (`kill-on-invalid-dep` asks Slurm to do the same when nobody waits); nothing
waits forever on a job that is gone. A rerun submits only nodes that are not done and have no
live job (recorded in `nodes/<id>/slurm_job.txt`), so `--no-wait` then a later rerun resumes
watching without submitting anything twice. Which nodes are done, failed or skipped is the
ledger's (ledger.py), as for the local executor: this module submits, reads squeue and cancels.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from proximity.atomic import write_text_atomic
from proximity.errors import ProximityError
from proximity.training.grid.ledger import Ledger, NodeEvents, Outcome
from proximity.training.grid.nodes import ERROR, LOG, error_line, is_done, is_locked, node_dir
from proximity.training.grid.plan import Node, Plan
from proximity.training.grid.spec import SlurmSpec
from proximity.training.grid.worker import EXIT_BUSY

JOB_FILE = "slurm_job.txt"  # the node's latest job id
# squeue states of a job that may still write its node's result
ALIVE = {
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
}
NEVER = "DependencyNeverSatisfied"  # squeue's reason for a job whose parent job failed
# Pending reasons that no amount of waiting resolves: the job asks for more than its
# partition, account or QOS allows, or names something that does not exist. Such a node
# fails at once with the reason (its job cancelled) instead of pending forever.
CANNOT_START = {
    "PartitionTimeLimit",
    "PartitionNodeLimit",
    "PartitionConfig",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSMaxWallDurationPerJobLimit",
    "QOSMaxNodePerJobLimit",
    "QOSMaxGRESPerJob",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxMemoryPerJob",
    "AssocMaxWallDurationPerJobLimit",
    "AssocMaxNodesPerJobLimit",
    "AssocMaxGRESPerJob",
    "AssocMaxCpuPerJobLimit",
    "AssocMaxMemPerJobLimit",
}
BUSY_WAIT_S = 10.0  # a job whose node another process runs re-checks this often
RDZV_PORT = 29500  # torchrun rendezvous port base for multi-node jobs


# ---- what a job is: sbatch parameters and the command it runs ---------------------------


def job_parameters(resources: SlurmSpec, node: Node, dependencies: list[str]) -> dict[str, Any]:
    """submitit SlurmExecutor parameters of `node`'s job (rendered into #SBATCH lines).

    One task per Slurm node: a DDP node's task starts torchrun, which starts the ranks.
    """
    extra: dict[str, Any] = {}
    for item in resources.sbatch:
        key, sep, value = item.partition("=")
        extra[key.strip()] = value.strip() if sep else True
    if dependencies:
        extra["dependency"] = "afterok:" + ":".join(dependencies)
        extra.setdefault("kill-on-invalid-dep", "yes")
    params: dict[str, Any] = {
        "job_name": f"grid-{node.id}",
        "time": resources.time_minutes,
        "nodes": resources.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": resources.cpus_per_task,
        "stderr_to_stdout": True,
        # The step's own CPU count: from Slurm 22.05 to 23.02 srun does not inherit the job's
        # --cpus-per-task, and its one task (torchrun and all its ranks) would get one CPU.
        "srun_args": [f"--cpus-per-task={resources.cpus_per_task}"],
        "setup": list(resources.setup),
        "additional_parameters": extra,
    }
    optional = {
        "partition": resources.partition,
        "gpus_per_node": resources.gpus_per_node or None,
        "mem": None if resources.mem_gb is None else sbatch_memory(resources.mem_gb),
        "account": resources.account,
        "qos": resources.qos,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def sbatch_memory(gb: float) -> str:
    """sbatch's --mem value: whole GB, else MB (sbatch takes no fractions; submitit's SlurmExecutor
    passes `mem` through as written)."""
    return f"{int(gb)}GB" if float(gb).is_integer() else f"{round(gb * 1024)}MB"


@dataclass(frozen=True)
class Launch:
    """How a job runs its node; built at submission, turned into a command inside the job."""

    folder: str
    threads: int
    nodes: int = 1
    ranks_per_node: int = 1

    @property
    def distributed(self) -> bool:
        return self.nodes * self.ranks_per_node > 1

    def command(
        self, master: str = "localhost", job_id: str = "0", python: str = sys.executable
    ) -> list[str]:
        """The worker command; under torchrun when the node has more than one rank.

        One node: `--standalone` (torchrun picks a free local port, so two jobs sharing a
        machine never collide). Several: c10d rendezvous on the job's first host, with the
        job id as rendezvous id; every Slurm node's task runs this same command.
        """
        worker = [
            "-m",
            "proximity.training.grid.worker",
            self.folder,
            "--threads",
            str(self.threads),
        ]
        if not self.distributed:
            return [python, *worker]
        run = [python, "-m", "torch.distributed.run"]
        if self.nodes == 1:
            run += ["--standalone", "--nnodes", "1"]
        else:
            port = RDZV_PORT + int("".join(c for c in job_id if c.isdigit()) or 0) % 20000
            run += [
                "--nnodes", str(self.nodes),
                "--rdzv-backend", "c10d",
                "--rdzv-endpoint", f"{master}:{port}",
                "--rdzv-id", job_id,
            ]  # fmt: skip
        return [*run, "--nproc-per-node", str(self.ranks_per_node), *worker]


def launch_for(resources: SlurmSpec, folder: Path) -> Launch:
    ranks = resources.ranks_per_node
    return Launch(
        folder=str(folder),
        threads=max(1, resources.cpus_per_task // ranks),
        nodes=resources.nodes,
        ranks_per_node=ranks,
    )


def run_node_job(launch: Launch) -> None:
    """The body of a node's Slurm job (runs on the compute node, pickled by submitit).

    Waits while another process holds the node (a local run or a duplicate job; it then finds
    the result and returns), runs the worker with its output appended to the node's log.txt,
    and raises when the worker fails so that Slurm marks the job failed and `afterok`
    dependents never start.
    """
    folder = Path(launch.folder)
    master, job_id, node_index = "localhost", slurm_job_id(), 0
    if launch.nodes > 1:
        env = submitit.JobEnvironment()
        master, job_id, node_index = env.hostnames[0], env.job_id, env.node
    command = launch.command(master=master, job_id=job_id)
    threads = str(launch.threads)
    env_vars = {**os.environ, "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    log = folder / (LOG if node_index == 0 else f"log-node{node_index}.txt")
    while True:
        # Only the first Slurm node waits for the lock: on the others, the lock may be held by
        # this very job's rank 0, which waits for them at the rendezvous.
        while node_index == 0 and is_locked(folder) and not is_done(folder):
            time.sleep(BUSY_WAIT_S)
        if is_done(folder):
            return
        with log.open("ab") as out:
            out.write(f"== slurm job {job_id}: {' '.join(command)}\n".encode())
            out.flush()
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=env_vars)
        if code == EXIT_BUSY:
            continue
        if code != 0:
            line = error_line(folder) or f"see {log}"
            raise RuntimeError(f"node {folder.name}: worker exited with status {code}: {line}")
        return


def slurm_job_id() -> str:
    """This job's id as squeue and slurm_job.txt name it: `<array id>_<index>` in an array
    (SLURM_JOB_ID is then a number of the task's own)."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array:
        return f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    return os.environ.get("SLURM_JOB_ID", "0")


# ---- submitting ----------------------------------------------------------------------------

# (sibling nodes, their resources, job ids they wait for) -> each node's job id, in order. One
# call is one sbatch: a plain job for one node, a job array (`<array id>_<index>`) for several.
Submit = Callable[[list[Node], SlurmSpec, list[str]], list[str]]


def make_executor(folder: Path, resources: SlurmSpec, node: Node, dependencies: list[str]):
    """A submitit SlurmExecutor for `node`'s job, its files (script, logs) in `folder`."""
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(**job_parameters(resources, node, dependencies))
    return executor


def submitit_submitter(out: Path) -> Submit:
    """Submit through submitit's SlurmExecutor: one node as a plain job (its files in
    nodes/<id>/slurm/), several siblings as one job array through `map_array` (its files in
    DIR/slurm/, named `<array id>_<index>_...`); every task runs `run_node_job` for its node."""

    def submit(nodes: list[Node], resources: SlurmSpec, dependencies: list[str]) -> list[str]:
        folders = [node_dir(out, node.id) for node in nodes]
        files = folders[0] / "slurm" if len(nodes) == 1 else out / "slurm"
        executor = make_executor(files, resources, nodes[0], dependencies)
        if len(nodes) > 1:  # every task may run at once: the cap is --max-queued's business
            name = f"grid-{nodes[0].kind}-x{len(nodes)}-{nodes[0].id}"
            executor.update_parameters(job_name=name, array_parallelism=len(nodes))
        launches = [launch_for(resources, folder) for folder in folders]
        try:
            with stderr_captured() as captured:  # sbatch's complaints go into the error
                jobs = executor.map_array(run_node_job, launches)
        except Exception as error:  # sbatch's refusal (bad partition, account, time...)
            text = ("".join(captured) or str(error)).strip().splitlines()
            reason = text[-1] if text else repr(error)
            more = f" and its {len(nodes) - 1} siblings (one job array)" if len(nodes) > 1 else ""
            raise ProximityError(
                f"sbatch refused node {nodes[0].id} ({nodes[0].label}){more}: {reason} "
                f"(check the grid's slurm: section)"
            ) from None
        return [str(job.job_id) for job in jobs]

    return submit


def job_groups(nodes: Iterable[Node]) -> list[list[Node]]:
    """`nodes` as sbatch submissions: siblings with the same kind (so the same resources: the
    slurm: section is per kind) and the same parents (so the same `afterok`) share one job
    array, e.g. all SFT nodes of one branch (targets x learning rates). Groups keep the nodes'
    order and come in the order of their first node."""
    groups: dict[tuple[str, tuple[str, ...]], list[Node]] = {}
    for node in nodes:
        groups.setdefault((node.kind, node.parents), []).append(node)
    return list(groups.values())


@contextmanager
def stderr_captured():
    """Collect what child processes (submitit's sbatch call) write to fd 2, instead of the
    terminal, so that a refusal is reported as one line; yields a list that holds the text
    once the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read())


def recorded_job(folder: Path) -> str | None:
    path = folder / JOB_FILE
    return path.read_text().split()[0] if path.exists() and path.read_text().strip() else None


class Submission:
    """The grid's jobs, and the submitting of the rest: every node not done gets a job (or an
    array task) that waits `afterok` for its parents' jobs still queued or running.

    Jobs of an earlier call that are still queued are adopted (`adopt`); then `fill` submits
    ready nodes, parents first and in plan order, sibling groups (`job_groups`) as one array,
    until `cap` jobs are live (None: no cap). Which nodes are ready, done, failed or skipped is
    the ledger's: a node is ready when each parent is done or has a queued job.
    """

    def __init__(self, out: Path, submit: Submit, cap: int | None = None) -> None:
        self.out, self.submit, self.cap = out, submit, cap
        self.jobs: dict[str, str] = {}  # node id -> its job (adopted, or submitted by this call)
        self.submitted: list[str] = []  # nodes submitted by this call, in submission order
        self.calls = 0  # sbatch calls made by this call
        self.arrays = 0  # of which job arrays (more than one task)

    def adopt(self, plan: Plan, queue: dict[str, tuple[str, str]]) -> list[str]:
        """Keep the queued jobs of earlier calls (`nodes/<id>/slurm_job.txt`); returns the
        ones to cancel: a job that waits on a parent's dead job (it would wait forever; its
        node is submitted again, after the parent)."""
        stale = []
        for node in plan.nodes:
            folder = node_dir(self.out, node.id)
            job = None if is_done(folder) else recorded_job(folder)
            state, reason = queue.get(job or "", ("", ""))
            if job is None or state not in ALIVE:
                continue
            parents = all(p in self.jobs or is_done(node_dir(self.out, p)) for p in node.parents)
            if reason != NEVER and parents:
                self.jobs[node.id] = job
            else:
                stale.append(job)
        return stale

    def live(self, queue: dict[str, tuple[str, str]], waiting: Iterable[str] = ()) -> int:
        """This grid's jobs that count against the cap: queued or running in `queue`, or
        `waiting` (submitted, not settled yet: squeue may not list them yet)."""
        alive = {job for job in self.jobs.values() if queue.get(job, ("",))[0] in ALIVE}
        return len(alive | set(waiting))

    def fill(self, ledger: Ledger, room: int | None) -> list[str]:
        """Submit ready nodes while `room` more jobs may go live (None: all); returns the nodes
        submitted. One pass per generation, so a child's group goes after its parents'. Under
        a cap a group goes whole, or in pieces of `cap` when it is larger: a group that does
        not fit now waits for room (the groups after it that fit go first), so that arrays
        stay arrays instead of dribbling out one task per finished job."""
        new: list[str] = []
        while room is None or room > 0:
            went = 0
            for group in job_groups(ledger.ready(self.jobs, queued=self.jobs)):
                if room is not None:
                    if room < min(len(group), self.cap or room):
                        continue
                    group = group[:room]
                self._submit(ledger, group)
                new += [node.id for node in group]
                went += len(group)
                room = None if room is None else room - len(group)
            if not went:
                break
        return new

    def _submit(self, ledger: Ledger, group: list[Node]) -> None:
        """One sbatch for `group`; records each node's job in its slurm_job.txt."""
        parents = [p for p in group[0].parents if p in self.jobs and p not in ledger.done]
        waits = [self.jobs[p] for p in parents if not is_done(ledger.folder(p))]
        for node in group:
            if not is_locked(ledger.folder(node.id)):
                (ledger.folder(node.id) / ERROR).unlink(missing_ok=True)  # retried: not failed
        resources = ledger.plan.spec.slurm.for_kind(group[0].kind)
        jobs = self.submit(group, resources, list(dict.fromkeys(waits)))
        self.calls += 1
        self.arrays += len(group) > 1
        for node, job in zip(group, jobs, strict=True):
            write_text_atomic(ledger.folder(node.id) / JOB_FILE, f"{job}\n")
            self.jobs[node.id] = job
            self.submitted.append(node.id)

    def left(self, ledger: Ledger) -> int:
        """Nodes with no job yet that may still run (open ones with a failed or skipped parent
        are skipped here, so that nothing waits for them)."""
        count = 0
        for node in ledger.plan.nodes:
            if ledger.open(node.id, self.jobs):
                if ledger.blocked(node):
                    ledger.skip(node)
                else:
                    count += 1
        return count

    def refill(self, ledger: Ledger, queue: dict[str, tuple[str, str]], waiting: Iterable[str]):
        """What `watch` calls each poll: submit what is ready and fits under the cap now;
        returns node id -> job of the nodes submitted. A refusal by sbatch stops the watcher
        (the jobs already queued go on)."""
        room = None if self.cap is None else self.cap - self.live(queue, waiting)
        try:
            new = self.fill(ledger, room)
        except ProximityError as error:
            raise ProximityError(
                f"{error}; the grid's other jobs keep running: fix it and rerun the same command"
            ) from None
        return {nid: self.jobs[nid] for nid in new}


def submit_plan(
    plan: Plan,
    out: Path,
    submit: Submit,
    queue: dict[str, tuple[str, str]],
    cap: int | None = None,
) -> Submission:
    """Adopt the live jobs of earlier calls, then submit every other node not done (at most
    `cap` jobs live in all); `queue` is squeue's job id -> (state, reason).

    If sbatch refuses a node, the jobs submitted by this call are cancelled and the error
    raised: no half-submitted grid is left behind.
    """
    submission = Submission(out, submit, cap)
    cancel(submission.adopt(plan, queue))
    ledger = Ledger(plan, out)
    room = None if cap is None else cap - submission.live(queue)
    try:
        submission.fill(ledger, room)
    except BaseException:
        cancel([submission.jobs[n] for n in submission.submitted])
        raise
    return submission


# ---- watching ------------------------------------------------------------------------------


def read_queue(user: str | None = None) -> dict[str, tuple[str, str]]:
    """squeue's view of the user's jobs: job id -> (state, reason). Ended jobs may be absent.
    `-r`: one line per array task (`<array id>_<index>`), pending ones included."""
    user = user or getpass.getuser()
    done = subprocess.run(
        ["squeue", "-h", "-r", "-u", user, "--states=all", "-o", "%i|%T|%r"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise ProximityError(f"squeue failed: {done.stderr.strip() or done.returncode}")
    queue = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            queue[parts[0]] = (parts[1], parts[2])
    return queue


def cancel(job_ids: list[str]) -> None:
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=60)


def check_slurm() -> None:
    missing = [tool for tool in ("sbatch", "squeue", "scancel", "srun") if not shutil.which(tool)]
    if missing:
        raise ProximityError(
            f"--executor slurm: {', '.join(missing)} not found on PATH; run on a Slurm login "
            f"node (or start one here: ../shared/tools/slurm-local start)"
        )


def watch(
    plan: Plan,
    out: Path,
    jobs: dict[str, str],
    *,
    poll_s: float = 10.0,
    grace_s: float = 5.0,
    completed_grace_s: float = 120.0,
    max_queue_errors: int = 30,
    read: Callable[[], dict[str, tuple[str, str]]] = read_queue,
    on_change: NodeEvents | None = None,
    on_poll: Callable[[dict[str, int]], None] | None = None,
    submission: Submission | None = None,
) -> Outcome:
    """Follow the jobs until every node is done, failed or skipped; returns what happened.
    With `submission`, each poll also submits the nodes that are ready and fit under its cap
    (`Submission.refill`), and the watch ends only when none is left.

    A job that left the queue (or shows an ended state) with no result.json for `grace_s`
    is failed: error.txt says so unless the worker wrote its own. A job Slurm reports
    COMPLETED did write its result (the job fails otherwise), so it gets `completed_grace_s`
    for the file to show up here (NFS can cache a file's absence for a minute).
    squeue failing `max_queue_errors` polls in a row raises rather than waiting forever; the
    jobs then keep running, and a rerun watches them again.
    """
    ledger = Ledger(plan, out, on_change)
    watcher = JobWatcher(ledger, jobs, grace_s, completed_grace_s)
    errors = 0
    while True:
        try:
            queue = read()
            errors = 0
        except (ProximityError, subprocess.TimeoutExpired) as error:
            errors += 1
            if errors >= max_queue_errors:
                raise ProximityError(
                    f"{error}; gave up after {errors} tries. The jobs may still run: rerun the "
                    f"same command to watch them (it submits nothing twice)"
                ) from None
            time.sleep(poll_s)
            continue
        cancel(watcher.poll(queue))
        if submission is not None:
            watcher.waiting.update(submission.refill(ledger, queue, watcher.waiting.values()))
        if on_poll is not None:
            on_poll(watcher.counts(queue))
        if not watcher.waiting and (submission is None or not submission.left(ledger)):
            break
        time.sleep(poll_s)
    return ledger.outcome()


class JobWatcher:
    """The node jobs `watch` waits for, settled in the ledger from squeue's view and the
    nodes' folders: done when result.json exists, else skipped, failed or still waiting."""

    def __init__(
        self, ledger: Ledger, jobs: dict[str, str], grace_s: float, completed_grace_s: float
    ) -> None:
        self.ledger, self.grace_s, self.completed_grace_s = ledger, grace_s, completed_grace_s
        self.waiting = dict(jobs)  # node id -> job id, until the node is settled
        self.ended_since: dict[str, float] = {}  # node id -> when its job was first seen ended
        self.started: set[str] = set()  # nodes whose job was seen RUNNING (told once)

    def poll(self, queue: dict[str, tuple[str, str]]) -> list[str]:
        """One pass over the waiting nodes, parents first (so a failure skips its dependents
        at once); returns the jobs to cancel (skipped nodes', jobs that can never start)."""
        to_cancel: list[str] = []
        for node in self.ledger.plan.nodes:
            if node.id in self.waiting:
                job = self.waiting[node.id]
                state, reason = queue.get(job, ("", ""))
                if self._settle(node, job, state, reason, to_cancel):
                    del self.waiting[node.id]
        return to_cancel

    def _settle(self, node: Node, job: str, state: str, reason: str, to_cancel: list[str]) -> bool:
        """Decide one waiting node's fate from its folder and its job's (state, reason); True
        when it is settled. A skipped node's live job, and one that can never start, go to
        `to_cancel`."""
        ledger, nid = self.ledger, node.id
        folder = ledger.folder(nid)
        if is_done(folder):
            ledger.finished(node, f"job {job}")
            return True
        if ledger.blocked(node) or reason == NEVER:
            if state in ALIVE:
                to_cancel.append(job)
            ledger.skip(node, f"job {job} cancelled")
            return True
        if state == "PENDING" and reason in CANNOT_START:
            to_cancel.append(job)
            ledger.fail(
                node,
                f"job {job} can never start: Slurm says {reason} (fix the grid's slurm: "
                f"section for {node.kind} nodes)\n",
            )
            return True
        if state in ALIVE:
            self.ended_since.pop(nid, None)
            if state == "RUNNING" and nid not in self.started:
                self.started.add(nid)
                ledger.say("start", node, f"job {job}")
            return False
        first_seen = self.ended_since.setdefault(nid, time.monotonic())
        patience = self.completed_grace_s if state == "COMPLETED" else self.grace_s
        if time.monotonic() - first_seen < patience:
            return False
        ledger.fail(node, self._ended_without_result(job, state, folder))
        return True

    def _ended_without_result(self, job: str, state: str, folder: Path) -> str | None:
        """error.txt of a node whose job ended with no result.json (None: keep the worker's)."""
        if state == "COMPLETED":
            return (
                f"job {job} completed but {folder / 'result.json'} did not appear within "
                f"{self.completed_grace_s:g} s (is --out on a file system the jobs share?)\n"
            )
        if (folder / ERROR).exists():
            return None  # the worker's own error
        how = f" ({state})" if state else ""
        files = folder / "slurm" if "_" not in job else self.ledger.out / "slurm" / f"{job}_*"
        return (
            f"job {job} ended without a result{how} (cancelled, time limit or OOM?)\n\n"
            f"its output: {folder / LOG} and {files}\n"
        )

    def counts(self, queue: dict[str, tuple[str, str]]) -> dict[str, int]:
        """Nodes done (on disk), running, queued, failed and skipped, for `on_poll`."""
        ledger = self.ledger
        running = sum(1 for j in self.waiting.values() if queue.get(j, ("",))[0] == "RUNNING")
        return {
            "done": sum(1 for n in ledger.plan.nodes if is_done(ledger.folder(n.id))),
            "running": running,
            "queued": len(self.waiting) - running,
            "failed": len(ledger.failed),
            "skipped": len(ledger.skipped),
        }


def submit_grid(
    plan: Plan, out: Path, submit: Submit | None = None, cap: int | None = None
) -> Submission:
    """Submit the plan's unfinished nodes (`submit_plan` against squeue's view now), at most
    `cap` jobs live; their node.json files must exist (ledger.write_node_files), the jobs read
    them. The Submission goes to `watch`, which submits the rest, and tells the caller what
    was submitted."""
    check_slurm()
    return submit_plan(plan, out, submit or submitit_submitter(out), read_queue(), cap)
