"""`train-grid --executor slurm`: job wiring without Slurm, then real runs on a one-node Slurm.

The unit tests check the sbatch scripts (rendered by submitit itself), the dependency wiring
and the watcher's verdicts against hand-written expectations. The Slurm tests start
`../shared/tools/slurm-local` (skipped, with its reason, where it cannot start) and check
that a grid run through Slurm gives the local run's results.csv bitwise (same threads per
node), that a cancelled job fails its node without hanging and skips its dependents, and that
a rerun completes the grid; and that a torchrun (2-rank CPU DDP) node runs under Slurm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from proximity.errors import ProximityError
from proximity.training.grid import slurm
from proximity.training.grid.local import available_cores
from proximity.training.grid.nodes import RESULT, node_dir
from proximity.training.grid.plan import build_plan
from proximity.training.grid.spec import load_grid

CLI = "from proximity.cli import main; main()"
VOLATILE = ["wall_time_s"]
TINY = (
    "name: tiny\nmodels: [micro-2l-64]\n"
    "tokenizer: {name: train, corpus: c4, vocab_size: 512, n_docs: 300}\n"
    "data: {n_docs: 300, max_chars: 4000}\n"
    "pretrain: {steps: 16, batch_size: 8, seq_len: 64, lr: 3.0e-3, min_lr: 3.0e-4,"
    " checkpoint_every: 4}\n"
    "sft: {targets: [pycode], lrs: [1.0e-3], epochs: 1, batch_size: 8, seq_len: 64, n_docs: 48}\n"
    "eval: {datasets: [c4], batch_size: 8, max_batches: 2}\n"
    "train_set: [system.deterministic=true]\n"
)
MIXTURE = "mixtures: [{name: code, data: starcoder, weights: [0.2], start_steps: [8]}]\n"


@pytest.fixture
def sbatch_lines(monkeypatch, tmp_path):
    """The #SBATCH options of the script submitit would submit for a node, as {option: value}."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))

    def render(resources, node, dependencies) -> dict[str, str]:
        executor = slurm.make_executor(tmp_path, resources, node, dependencies)
        script = executor._make_submission_file_text("true", "0")
        options = {}
        for line in script.splitlines():
            if line.startswith("#SBATCH --"):
                key, _, value = line[len("#SBATCH --") :].partition("=")
                options[key] = value
        return options

    return render


# ---- without Slurm --------------------------------------------------------------------------


def test_sbatch_options_follow_the_spec_and_its_per_kind_overrides(tmp_path, sbatch_lines):
    spec = tmp_path / "g.yaml"
    spec.write_text(
        TINY + "slurm: {partition: gpu, time_minutes: 120, cpus_per_task: 4, account: lab,"
        " sbatch: [constraint=h100, exclusive], setup: [module load cuda],"
        " pretrain: {gpus_per_node: 8, nodes: 2, cpus_per_task: 64, mem_gb: 500,"
        " time_minutes: 2880}, sft: {gpus_per_node: 1, qos: short}}\n"
    )
    plan = build_plan(load_grid(str(spec)))
    pre = next(n for n in plan.nodes if n.kind == "pretrain")
    sft = next(n for n in plan.nodes if n.kind == "sft")
    tok = next(n for n in plan.nodes if n.kind == "tokenizer")
    options = sbatch_lines(plan.spec.slurm.for_kind("pretrain"), pre, ["7"])
    assert {k: options[k] for k in [
        "partition", "time", "nodes", "ntasks-per-node", "cpus-per-task", "gpus-per-node", "mem",
        "account", "constraint", "dependency", "kill-on-invalid-dep", "job-name",
    ]} == {
        "partition": "gpu", "time": "2880", "nodes": "2", "ntasks-per-node": "1",
        "cpus-per-task": "64", "gpus-per-node": "8", "mem": "500GB", "account": "lab",
        "constraint": "h100", "dependency": "afterok:7", "kill-on-invalid-dep": "yes",
        "job-name": f"grid-{pre.id}",
    }  # fmt: skip
    assert "exclusive" in options and "qos" not in options
    options = sbatch_lines(plan.spec.slurm.for_kind("sft"), sft, ["8", "9"])
    assert options["gpus-per-node"] == "1" and options["qos"] == "short"
    assert options["time"] == "120" and options["cpus-per-task"] == "4"
    assert options["dependency"] == "afterok:8:9" and "mem" not in options
    half = load_grid(str(spec), ["slurm.mem_gb=1.5"]).slurm
    assert sbatch_lines(half, sft, [])["mem"] == "1536MB"
    # the tokenizer is one CPU process whatever the section says; no parents, no dependency
    options = sbatch_lines(plan.spec.slurm.for_kind("tokenizer"), tok, [])
    assert "gpus-per-node" not in options and options["nodes"] == "1"
    assert "dependency" not in options and "kill-on-invalid-dep" not in options


def test_torchrun_command_for_ddp_nodes(tmp_path):
    spec = load_grid("smoke", ["slurm.gpus_per_node=4", "slurm.cpus_per_task=32"])
    launch = slurm.launch_for(spec.slurm.for_kind("pretrain"), tmp_path / "n")
    assert launch.threads == 8  # 32 CPUs over 4 ranks
    single = launch.command(python="py")
    assert single[:5] == ["py", "-m", "torch.distributed.run", "--standalone", "--nnodes"]
    assert single[single.index("--nproc-per-node") + 1] == "4"
    assert single[-5:] == [
        "-m",
        "proximity.training.grid.worker",
        str(tmp_path / "n"),
        "--threads",
        "8",
    ]
    two = slurm.launch_for(load_grid("smoke", ["slurm.nodes=2"]).slurm, tmp_path / "n")
    command = two.command(master="gpu017", job_id="4242", python="py")
    assert "--standalone" not in command
    assert command[command.index("--nnodes") + 1] == "2"
    assert command[command.index("--rdzv-endpoint") + 1] == f"gpu017:{29500 + 4242}"
    assert command[command.index("--rdzv-id") + 1] == "4242"
    assert command[command.index("--nproc-per-node") + 1] == "1"
    # one process, no torchrun: the same command the local executor runs
    plain = slurm.launch_for(load_grid("smoke").slurm, tmp_path / "n").command(python="py")
    assert plain == [
        "py",
        "-m",
        "proximity.training.grid.worker",
        str(tmp_path / "n"),
        "--threads",
        "1",
    ]


def test_slurm_section_is_checked_and_never_changes_node_ids():
    base = [n.id for n in build_plan(load_grid("smoke")).nodes]
    other = ["slurm.partition=gpu", "slurm.gpus_per_node=8", "slurm.cpus_per_task=8",
             "slurm.sft.time_minutes=5"]  # fmt: skip
    assert [n.id for n in build_plan(load_grid("smoke", other)).nodes] == base
    with pytest.raises(ProximityError, match=r"unknown config key 'slurm\.gpus'"):
        load_grid("smoke", ["slurm.gpus=2"])
    with pytest.raises(ProximityError, match=r"slurm\.sft\.time_minutes"):
        load_grid("smoke", ["slurm.sft.time_minutes=0"])
    with pytest.raises(ProximityError, match=r"unknown config key 'slurm\.sft\.setup'"):
        load_grid("smoke", ["slurm.sft.setup=[x]"])
    with pytest.raises(ProximityError, match=r"slurm\.max_queued: 0 must be >= 1"):
        load_grid("smoke", ["slurm.max_queued=0"])
    with pytest.raises(ProximityError, match=r"unknown config key 'slurm\.sft\.max_queued'"):
        load_grid("smoke", ["slurm.sft.max_queued=5"])  # a cap is the grid's, not a kind's
    assert load_grid("smoke", ["slurm.max_queued=500"]).slurm.max_queued == 500
    with pytest.raises(ProximityError, match=r"slurm\.sbatch\[0\]"):
        load_grid("smoke", ["slurm.sbatch=[--exclusive]"])


def test_the_srun_step_gets_the_jobs_cpus_and_ranks_get_one_cpu_each_at_least(
    tmp_path, monkeypatch
):
    """Slurm 22.05-23.02's srun does not inherit --cpus-per-task from sbatch: the rendered
    script's srun line must carry it, or torchrun and all its ranks share one CPU."""
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    sections = ["slurm.gpus_per_node=4", "slurm.cpus_per_task=32"]
    spec = load_grid("smoke", [*sections, "slurm.sft.gpus_per_node=1", "slurm.sft.cpus_per_task=6"])
    plan = build_plan(spec)
    for kind, cpus in (("pretrain", "32"), ("sft", "6"), ("tokenizer", "32")):
        node = next(n for n in plan.nodes if n.kind == kind)
        script = slurm.make_executor(tmp_path / kind, spec.slurm.for_kind(kind), node, [])
        text = script._make_submission_file_text("true", "0")
        (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
        assert f"--cpus-per-task={cpus}" in srun.split()
        assert f"#SBATCH --cpus-per-task={cpus}" in text.splitlines()
    with pytest.raises(ProximityError, match=r"slurm\.cpus_per_task: 1 is fewer than the 8 ranks"):
        load_grid("smoke", ["slurm.gpus_per_node=8"])
    with pytest.raises(ProximityError, match=r"slurm\.sft\.cpus_per_task: 2 is fewer than the 4"):
        load_grid("smoke", ["slurm.sft.gpus_per_node=4", "slurm.sft.cpus_per_task=2"])
    load_grid("smoke", ["slurm.prepare.cpus_per_task=1", "slurm.gpus_per_node=2",
                        "slurm.cpus_per_task=2"])  # CPU kinds run one process  # fmt: skip


def test_jobs_depend_on_unfinished_parents_and_done_or_queued_nodes_are_not_resubmitted(
    tmp_path, monkeypatch
):
    plan = build_plan(load_grid("smoke"))
    out = tmp_path / "g"
    tok = next(n for n in plan.nodes if n.kind == "tokenizer")
    prep = next(n for n in plan.nodes if n.kind == "prepare")
    pre = next(n for n in plan.nodes if n.kind == "pretrain")
    mids = [n for n in plan.nodes if n.kind == "midtrain"]
    for done in (tok, prep):
        node_dir(out, done.id).mkdir(parents=True)
        (node_dir(out, done.id) / RESULT).write_text("{}")  # done
    node_dir(out, pre.id).mkdir(parents=True)
    (node_dir(out, pre.id) / slurm.JOB_FILE).write_text("77\n")  # queued by an earlier call
    node_dir(out, mids[0].id).mkdir(parents=True)
    (node_dir(out, mids[0].id) / slurm.JOB_FILE).write_text("78\n")  # its job is gone
    child = next(n for n in plan.nodes if n.parents == (mids[0].id,))
    node_dir(out, child.id).mkdir(parents=True)
    (node_dir(out, child.id) / slurm.JOB_FILE).write_text("79\n")  # waits on job 78 forever
    cancelled: list[str] = []
    monkeypatch.setattr(slurm, "cancel", lambda ids: cancelled.extend(ids))
    calls: list[tuple[str, list[str]]] = []

    def fake_submit(nodes, resources, dependencies):
        calls.extend((node.id, list(dependencies)) for node in nodes)
        return [str(100 + len(calls) - len(nodes) + i) for i in range(len(nodes))]

    queue = {"77": ("RUNNING", "None"), "79": ("PENDING", "Dependency")}
    submission = slurm.submit_plan(plan, out, fake_submit, queue)
    jobs, submitted = submission.jobs, submission.submitted
    assert tok.id not in jobs and prep.id not in jobs and jobs[pre.id] == "77"
    assert child.id in submitted and cancelled == ["79"]
    assert [nid for nid, _ in calls] == submitted
    assert set(submitted) == {n.id for n in plan.nodes} - {tok.id, prep.id, pre.id}
    assert mids[0].id in submitted
    position = {nid: i for i, nid in enumerate(submitted)}
    for node in plan.nodes:
        if node.id in position:
            deps = dict(calls)[node.id]
            assert deps == [jobs[p] for p in node.parents]  # every parent is unfinished here
            assert all(position.get(p, -1) < position[node.id] for p in node.parents)
            assert (node_dir(out, node.id) / slurm.JOB_FILE).read_text().strip() == jobs[node.id]


def test_a_refused_submission_cancels_the_jobs_submitted_before_it(tmp_path, monkeypatch):
    plan = build_plan(load_grid("smoke"))
    cancelled: list[str] = []
    monkeypatch.setattr(slurm, "cancel", lambda ids: cancelled.extend(ids))

    def submit(nodes, resources, dependencies):
        if nodes[0].kind == "sft":
            raise ProximityError("sbatch refused node ...")
        return [f"j{node.id}" for node in nodes]

    with pytest.raises(ProximityError, match="sbatch refused"):
        slurm.submit_plan(plan, tmp_path, submit, {})
    first_sft = next(i for i, n in enumerate(plan.nodes) if n.kind == "sft")
    assert cancelled == [f"j{n.id}" for n in plan.nodes[:first_sft]]


def test_watch_fails_a_vanished_job_skips_and_cancels_its_dependents(tmp_path, monkeypatch):
    plan = build_plan(load_grid("smoke"))
    out = tmp_path / "g"
    tok, pre = plan.nodes[0], plan.nodes[1]
    others = plan.nodes[2:]
    for node in plan.nodes:
        node_dir(out, node.id).mkdir(parents=True)
    jobs = {node.id: str(i) for i, node in enumerate(plan.nodes)}
    (node_dir(out, tok.id) / RESULT).write_text("{}")
    queue = {jobs[n.id]: ("PENDING", "Dependency") for n in others}  # pretrain's job is gone
    cancelled: list[str] = []
    monkeypatch.setattr(slurm, "cancel", lambda ids: cancelled.extend(ids))
    events: list[tuple[str, str]] = []
    outcome = slurm.watch(
        plan, out, jobs, poll_s=0, grace_s=0, read=lambda: queue,
        on_change=lambda event, node, text: events.append((event, node.id)),
    )  # fmt: skip
    assert outcome.failed.keys() == {pre.id}
    assert outcome.failed[pre.id] == (
        f"job {jobs[pre.id]} ended without a result (cancelled, time limit or OOM?)"
    )
    assert set(outcome.skipped) == {n.id for n in others}
    assert sorted(cancelled) == sorted(jobs[n.id] for n in others)
    assert ("done", tok.id) in events and outcome.done == [tok.id]


def test_watch_fails_a_job_that_can_never_start_instead_of_waiting(tmp_path, monkeypatch):
    plan = build_plan(load_grid("smoke"))
    tok, pre = plan.nodes[0], plan.nodes[1]
    jobs = {tok.id: "1", pre.id: "2"}
    for node in (tok, pre):
        node_dir(tmp_path, node.id).mkdir(parents=True)
    (node_dir(tmp_path, tok.id) / RESULT).write_text("{}")
    cancelled: list[str] = []
    monkeypatch.setattr(slurm, "cancel", lambda ids: cancelled.extend(ids))
    queue = {"2": ("PENDING", "PartitionTimeLimit")}
    outcome = slurm.watch(plan, tmp_path, jobs, poll_s=0, read=lambda: queue)
    assert outcome.failed[pre.id].startswith("job 2 can never start: Slurm says PartitionTimeLimit")
    assert cancelled == ["2"]


def test_watch_waits_longer_for_the_result_of_a_completed_job(tmp_path):
    plan = build_plan(load_grid("smoke"))
    tok = plan.nodes[0]
    folder = node_dir(tmp_path, tok.id)
    folder.mkdir(parents=True)
    polls = []

    def read():  # the result shows up on the third poll, after the job left as COMPLETED
        polls.append(1)
        if len(polls) == 3:
            (folder / RESULT).write_text("{}")
        return {"1": ("COMPLETED", "None")}

    outcome = slurm.watch(
        plan, tmp_path, {tok.id: "1"}, poll_s=0.01, grace_s=0, completed_grace_s=60, read=read
    )
    assert outcome.done == [tok.id] and not outcome.failed and len(polls) == 3
    (folder / RESULT).unlink()
    outcome = slurm.watch(
        plan, tmp_path, {tok.id: "1"}, poll_s=0, completed_grace_s=0,
        read=lambda: {"1": ("COMPLETED", "None")},
    )  # fmt: skip
    assert outcome.failed[tok.id].startswith("job 1 completed but")


def test_watch_gives_up_when_squeue_keeps_failing(tmp_path):
    plan = build_plan(load_grid("smoke"))

    def broken():
        raise ProximityError("squeue failed: slurm_load_jobs error: Unable to contact controller")

    with pytest.raises(ProximityError, match="rerun the same command"):
        slurm.watch(plan, tmp_path, {plan.nodes[0].id: "1"}, poll_s=0, read=broken)


class FakeSlurm:
    """A queue without Slurm: sbatch numbers jobs (`<array>_<index>` for an array); each squeue
    read runs one queued job whose dependencies all completed (its node's result.json appears,
    or for a node in `failing` nothing does) and drops it from the queue."""

    def __init__(self, out: Path, failing: set[str] = frozenset()) -> None:
        self.out, self.failing = out, failing
        self.queued: dict[str, tuple[str, list[str]]] = {}  # job -> (node id, dependencies)
        self.finished: set[str] = set()
        self.calls: list[tuple[list[str], list[str]]] = []  # (node ids, dependencies)
        self.most_queued = 0

    def submit(self, nodes, resources, dependencies) -> list[str]:
        self.calls.append(([n.id for n in nodes], list(dependencies)))
        array = str(100 + len(self.calls))
        ids = [array] if len(nodes) == 1 else [f"{array}_{i}" for i in range(len(nodes))]
        for node, job in zip(nodes, ids, strict=True):
            self.queued[job] = (node.id, list(dependencies))
        self.most_queued = max(self.most_queued, len(self.queued))
        return ids

    def queue(self) -> dict[str, tuple[str, str]]:
        return {job: ("PENDING", "Dependency") for job in self.queued}

    def read(self) -> dict[str, tuple[str, str]]:
        for job, (nid, dependencies) in list(self.queued.items()):
            if all(d in self.finished for d in dependencies):
                if nid not in self.failing:
                    (node_dir(self.out, nid) / RESULT).write_text("{}")
                    self.finished.add(job)
                del self.queued[job]
                break
        return self.queue()


def made_folders(plan, out: Path) -> Path:
    for node in plan.nodes:
        node_dir(out, node.id).mkdir(parents=True, exist_ok=True)
    return out


def test_siblings_go_into_one_job_array_and_children_wait_for_their_parents_task(tmp_path):
    plan = build_plan(load_grid("smoke"))
    fake = FakeSlurm(made_folders(plan, tmp_path))
    submission = slurm.submit_plan(plan, tmp_path, fake.submit, {})
    by_id = plan.by_id()
    groups = [[by_id[nid] for nid in ids] for ids, _ in fake.calls]
    # tokenizer, prepare, pretrain; the 3 branches from pretraining; control SFT (2 LRs);
    # each branch's 2 SFT runs: 14 jobs in 8 sbatch calls, 5 of them arrays
    assert [len(g) for g in groups] == [1, 1, 1, 3, 2, 2, 2, 2]
    assert submission.calls == 8 and submission.arrays == 5
    assert len(submission.submitted) == len(plan.nodes) == len(submission.jobs)
    assert sum(map(len, slurm.job_groups(plan.nodes))) == 14  # --dry-run's grouping
    assert len(slurm.job_groups(plan.nodes)) == 8
    for group, (_, dependencies) in zip(groups, fake.calls, strict=True):
        assert len({(n.kind, n.parents) for n in group}) == 1
        assert dependencies == [submission.jobs[p] for p in group[0].parents]
        for node in group:
            recorded = (node_dir(tmp_path, node.id) / slurm.JOB_FILE).read_text().strip()
            assert recorded == submission.jobs[node.id]
    branch_sft = next(g for g in groups if g[0].kind == "sft" and g[0].parents[0].startswith("mid"))
    (task,) = fake.calls[groups.index(branch_sft)][1]
    assert "_" in task  # afterok on the one array task that is its branch, not the whole array
    assert [submission.jobs[n.id] for n in branch_sft][1].endswith("_1")


def test_a_cap_keeps_at_most_that_many_jobs_queued_and_finishes_the_grid(tmp_path):
    plan = build_plan(load_grid("smoke"))
    assert len(plan.nodes) >= 10
    fake = FakeSlurm(made_folders(plan, tmp_path))
    submission = slurm.submit_plan(plan, tmp_path, fake.submit, {}, cap=3)
    assert len(submission.submitted) == 3  # the cap, parents first: tokenizer, prepare, pretrain
    outcome = slurm.watch(
        plan, tmp_path, submission.jobs, poll_s=0, grace_s=0, read=fake.read,
        submission=submission,
    )  # fmt: skip
    assert len(outcome.done) == len(plan.nodes) and not outcome.failed and not outcome.skipped
    assert fake.most_queued == 3
    assert sum(len(ids) for ids, _ in fake.calls) == len(plan.nodes)  # nobody submitted twice
    assert any(len(ids) > 1 for ids, _ in fake.calls)  # arrays cut to fit, still arrays


def test_with_a_cap_a_rerun_submits_only_into_the_room_earlier_jobs_left(tmp_path):
    """--no-wait with a cap: each rerun adopts the live jobs and fills the room left."""
    plan = build_plan(load_grid("smoke"))
    fake = FakeSlurm(made_folders(plan, tmp_path))
    first = slurm.submit_plan(plan, tmp_path, fake.submit, {}, cap=3)
    again = slurm.submit_plan(plan, tmp_path, fake.submit, fake.queue(), cap=3)
    assert again.submitted == [] and again.jobs == first.jobs
    fake.read()  # the tokenizer's job ends: room for one, too little for an array of siblings
    again = slurm.submit_plan(plan, tmp_path, fake.submit, fake.queue(), cap=3)
    assert again.submitted == [] and len(fake.queued) == 2
    fake.read()  # the prepare job ends: room for the control's 2 SFT runs (the 3 branches wait)
    again = slurm.submit_plan(plan, tmp_path, fake.submit, fake.queue(), cap=3)
    control = [n.id for n in plan.nodes if n.kind == "sft" and n.parents[0].startswith("pre")]
    assert again.submitted == control and fake.calls[-1][0] == control  # one array
    assert len(fake.queued) == 3


def test_under_a_cap_a_failed_node_skips_its_unsubmitted_dependents(tmp_path, monkeypatch):
    plan = build_plan(load_grid("smoke"))
    pre = next(n for n in plan.nodes if n.kind == "pretrain")
    fake = FakeSlurm(made_folders(plan, tmp_path), failing={pre.id})
    monkeypatch.setattr(slurm, "cancel", lambda ids: None)
    submission = slurm.submit_plan(plan, tmp_path, fake.submit, {}, cap=2)
    outcome = slurm.watch(
        plan, tmp_path, submission.jobs, poll_s=0, grace_s=0, read=fake.read,
        submission=submission,
    )  # fmt: skip
    assert list(outcome.failed) == [pre.id] and len(outcome.done) == 2
    assert len(outcome.skipped) == len(plan.nodes) - 3
    assert len(submission.submitted) == 3  # nothing submitted after the failure


def test_dry_run_shows_each_kinds_slurm_job(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CLI, "train-grid", "paper-70m", "--dry-run", "--executor", "slurm",
         "--set", "slurm.partition=gpu"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {
        cells[0]: cells
        for line in done.stdout.splitlines()
        if (cells := [c.strip() for c in line.strip("│ ").split("│")])[0] in ("pretrain", "sft")
        and len(cells) == 9
    }
    # paper-70m: 5 seeds; pretraining on one 8-GPU node for 2 days, SFT on one GPU for 4 h
    assert rows["pretrain"][1:8] == ["5", "gpu", "2.0 d", "1", "8", "64", "(default)"]
    assert "torch.distributed.run --standalone --nnodes 1 --nproc-per-node 8" in rows["pretrain"][8]
    assert rows["pretrain"][8].endswith("--threads 8")
    assert rows["sft"][1:7] == ["1620", "gpu", "4.0 h", "1", "1", "8"]
    assert rows["sft"][8] == "-m proximity.training.grid.worker DIR/nodes/ID --threads 8"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--executor", "slurm"], "sbatch, squeue, scancel, srun not found on PATH"),
        (["--executor", "slurm", "--jobs", "2"], "--jobs is for --executor local"),
        (["--no-wait"], "--no-wait is for --executor slurm"),
        (["--max-queued", "2"], "--max-queued is for --executor slurm"),
        (["--executor", "slurm", "--max-queued", "0"], "--max-queued must be at least 1"),
    ],
)
def test_slurm_flag_errors_are_one_line(tmp_path, extra, message):
    done = subprocess.run(
        [sys.executable, "-c", CLI, "train-grid", "smoke", "--out", str(tmp_path / "g"), *extra],
        capture_output=True, text=True, env={**os.environ, "PATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


# ---- on a real one-node Slurm ---------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster(shared_data):
    """slurm-local, started here if needed (and then stopped again); skip where it cannot."""
    tool = shared_data.parent / "tools" / "slurm-local"
    if not tool.exists():
        pytest.skip(f"{tool} not found: no Slurm to test against")
    was_up = subprocess.run([str(tool), "status"], capture_output=True).returncode == 0
    started = subprocess.run([str(tool), "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        reason = " ".join(started.stderr.strip().splitlines()[-3:])
        pytest.skip(f"slurm-local could not start: {reason}")
    yield started.stdout.strip().splitlines()[-1]
    if not was_up:
        subprocess.run([str(tool), "stop"], capture_output=True, timeout=120)


def grid(spec: Path, out: Path, shared: Path, *extra: str, check: bool = True):
    done = subprocess.run(
        [sys.executable, "-c", CLI, "train-grid", str(spec), "--out", str(out),
         "--data-dir", str(shared), "--poll", "0.5", *extra],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def results(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv").drop(columns=VOLATILE)


def attempts(out: Path) -> dict[str, int]:
    return {
        f.parent.name: len(f.read_text().splitlines()) for f in out.glob("nodes/*/attempts.txt")
    }


def live_jobs(out: Path) -> list[str]:
    ids = {f.read_text().strip() for f in out.glob(f"nodes/*/{slurm.JOB_FILE}")}
    queue = slurm.read_queue()
    return [job for job in ids if queue.get(job, ("",))[0] in slurm.ALIVE]


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> Path:
    spec = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    spec.write_text(TINY + MIXTURE)
    return spec


@pytest.fixture(scope="module")
def local_run(shared_data, tiny_spec, tmp_path_factory) -> Path:
    """The reference: the local executor with one thread per node, as each Slurm job has."""
    out = tmp_path_factory.mktemp("local") / "g"
    grid(tiny_spec, out, shared_data, "--jobs", str(available_cores()))
    return out


@pytest.mark.slow
def test_slurm_grid_no_wait_then_watch_equals_the_local_run_and_rerun_submits_nothing(
    slurm_cluster, shared_data, tiny_spec, local_run, tmp_path
):
    out = tmp_path / "g"
    submitted = grid(tiny_spec, out, shared_data, "--executor", "slurm", "--no-wait")
    assert "submitted 6 jobs" in submitted.stdout and not (out / "results.csv").exists()
    done = grid(tiny_spec, out, shared_data, "--executor", "slurm")  # watches the same jobs
    assert "submitted 0 jobs" in done.stdout
    pd.testing.assert_frame_equal(results(out), results(local_run), check_exact=True)
    assert set(attempts(out).values()) == {1} and len(attempts(out)) == 6
    jobs = {f.read_text().strip() for f in out.glob(f"nodes/*/{slurm.JOB_FILE}")}
    assert len(jobs) == 6
    deadline = time.monotonic() + 60  # the last job may still be exiting after its result
    while live_jobs(out):
        assert time.monotonic() < deadline, f"jobs still queued: {live_jobs(out)}"
        time.sleep(0.5)
    again = grid(tiny_spec, out, shared_data, "--executor", "slurm")
    assert "submitted 0 jobs" in again.stdout and "6 nodes done before" in again.stdout
    assert set(attempts(out).values()) == {1}


def test_a_partition_sbatch_refuses_is_one_line_and_leaves_no_jobs(
    slurm_cluster, shared_data, tiny_spec, tmp_path
):
    out = tmp_path / "g"
    done = grid(
        tiny_spec, out, shared_data, "--executor", "slurm", "--set", "slurm.sft.partition=nope",
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and "sbatch refused node sft-" in done.stderr
    assert "Invalid partition" in done.stderr
    assert len(list(out.glob(f"nodes/*/{slurm.JOB_FILE}"))) == 4  # submitted, then cancelled
    deadline = time.monotonic() + 30
    while live_jobs(out):
        assert time.monotonic() < deadline, f"jobs left queued: {live_jobs(out)}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_cancelled_job_fails_its_node_skips_dependents_and_a_rerun_completes(
    slurm_cluster, shared_data, tiny_spec, local_run, tmp_path
):
    out = tmp_path / "g"
    command = [sys.executable, "-c", CLI, "train-grid", str(tiny_spec), "--out", str(out),
               "--data-dir", str(shared_data), "--poll", "0.5", "--executor", "slurm"]  # fmt: skip
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    pretrain = None
    while pretrain is None or not (pretrain / "attempts.txt").exists():
        assert watcher.poll() is None, watcher.stdout.read().decode()[-3000:]
        assert time.monotonic() < deadline, "the pretraining job never started"
        found = list(out.glob("nodes/pretrain-*"))
        pretrain = found[0] if found else None
        time.sleep(0.05)
    job = (pretrain / slurm.JOB_FILE).read_text().strip()
    subprocess.run(["scancel", job], check=True)
    output = watcher.communicate(timeout=120)[0].decode()  # never waits forever
    text = " ".join(output.split())
    assert watcher.returncode == 1, text[-3000:]
    assert not (pretrain / RESULT).exists(), "the job finished before it was cancelled"
    assert "1 failed, 3 skipped" in text
    assert (pretrain / "error.txt").read_text().startswith(f"job {job} ended without a result")
    assert not live_jobs(out)  # the dependents' jobs were cancelled, not left pending
    assert not (out / "results.csv").exists() or results(out).empty
    grid(tiny_spec, out, shared_data, "--executor", "slurm")
    pd.testing.assert_frame_equal(results(out), results(local_run), check_exact=True)
    assert attempts(out)[pretrain.name] == 2 and not (pretrain / "error.txt").exists()


@pytest.mark.slow
def test_a_torchrun_node_runs_under_slurm_with_two_cpu_ranks(
    slurm_cluster, shared_data, local_run, tmp_path
):
    spec = tmp_path / "ddp.yaml"
    spec.write_text(TINY + "slurm: {pretrain: {processes_per_node: 2, cpus_per_task: 2}}\n")
    out = tmp_path / "g"
    grid(spec, out, shared_data, "--executor", "slurm")
    (pretrain,) = out.glob("nodes/pretrain-*")
    log = (pretrain / "log.txt").read_text()
    assert "torch.distributed.run --standalone --nnodes 1 --nproc-per-node 2" in log
    assert attempts(out)[pretrain.name] == 1  # rank 0 alone owns the node's files
    # DDP over 2 ranks agrees with one process (the trainer's tests show it to rounding;
    # reductions over ranks change the last bits). The local run's pretraining also keeps a
    # start checkpoint for its mixture, which changes its id but not its numbers.
    ddp = json.loads((pretrain / RESULT).read_text())
    (local_pretrain,) = local_run.glob("nodes/pretrain-*")
    one = json.loads((local_pretrain / RESULT).read_text())
    assert ddp["tokens"] == one["tokens"] and ddp["end_step"] == one["end_step"] == 16
    assert ddp["val_end"].keys() == one["val_end"].keys()
    for name, loss in one["val_end"].items():
        assert ddp["val_end"][name] == pytest.approx(loss, rel=1e-5)
    ids = ["node_id", "branch_node_id", "pretrain_node_id"]
    table = results(out).drop(columns=ids)
    reference = results(local_run).drop(columns=ids)
    reference = reference[reference.branch_kind == "control"].reset_index(drop=True)
    pd.testing.assert_frame_equal(table, reference, check_exact=False, rtol=1e-5)


@pytest.mark.slow
def test_sibling_arrays_under_max_queued_2_give_the_local_runs_results(
    slurm_cluster, shared_data, local_run, tmp_path
):
    """Two SFT learning rates make each branch's SFT runs an array of 2; with --max-queued 2,
    squeue (polled throughout) never lists more than 2 of the grid's jobs, and the nodes the
    local reference also ran give its numbers bitwise."""
    spec = tmp_path / "arrays.yaml"
    spec.write_text(TINY.replace("lrs: [1.0e-3]", "lrs: [1.0e-3, 3.0e-3]") + MIXTURE)
    out = tmp_path / "g"
    seen: list[set[str]] = []
    stop = threading.Event()

    def poll_squeue() -> None:
        while not stop.is_set():
            queue = slurm.read_queue()
            seen.append({job for job, (state, _) in queue.items() if state in slurm.ALIVE})
            time.sleep(0.2)

    watcher = threading.Thread(target=poll_squeue, daemon=True)
    watcher.start()
    try:
        done = grid(spec, out, shared_data, "--executor", "slurm", "--max-queued", "2")
    finally:
        stop.set()
        watcher.join()
    ours = {f.read_text().strip() for f in out.glob(f"nodes/*/{slurm.JOB_FILE}")}
    assert len(ours) == 8 and len(seen) > 10
    assert max(len(jobs & ours) for jobs in seen) == 2
    assert sum("_" in job for job in ours) == 4  # both branches' SFT pairs ran as array tasks
    assert "6 nodes not submitted yet (--max-queued 2)" in " ".join(done.stdout.split())
    assert set(attempts(out).values()) == {1}
    table, reference = results(out), results(local_run)
    assert len(table) == 4
    same = table[table.node_id.isin(reference.node_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        same.drop(columns="selected"), reference.drop(columns="selected"), check_exact=True
    )
