"""`proximity train-grid SPEC --out DIR` runs or resumes a grid; `train-grid status DIR` shows it.

proximity train-grid smoke --out runs/smoke
proximity train-grid micro --out runs/micro --seeds 0,1,2 --jobs 2
proximity train-grid paper-70m --out runs/p70 --dry-run
proximity train-grid my-grid.yaml --out runs/g --set sft.lrs=[1e-4,3e-4]
proximity train-grid status runs/micro
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from proximity.atomic import write_text_atomic
from proximity.data import resolve_data_dir
from proximity.errors import ProximityError
from proximity.training.grid.nodes import error_line, is_done, node_dir, node_state, read_result
from proximity.training.grid.progress import GridLog, LiveDisplay, snapshot, summary_lines
from proximity.training.grid.progress import fmt_seconds as _fmt_seconds
from proximity.training.grid.progress import fmt_tokens as _fmt_tokens
from proximity.training.memory import FIT_FRACTION

# The plan's modules (plan, spec, estimate, the executors, results) import torch, through
# proximity.training.presets: this module loads with every `proximity` plugin command and serves
# `train-grid status`, so the functions that run a plan import them themselves.

console = Console()
grid_app = typer.Typer(
    help="Run the paper's experiment grid as a resumable plan that shares work "
    "(`train-grid SPEC --out DIR`), or show a grid's state (`train-grid status DIR`).\n\n"
    "Writes into DIR: grid.yaml (the resolved spec), nodes/<node id>/ (one folder per node: "
    "its config, log, metrics and checkpoints), grid.log (each node's start/done line), "
    "results.csv and results.parquet (one row per SFT run; docs/RESULTS.md); with "
    "train_set log.tensorboard=true, tensorboard/<kind>/<node id>/. --dry-run and status "
    "write nothing.",
    no_args_is_help=True,
    add_completion=False,
    invoke_without_command=True,
    context_settings={"allow_interspersed_args": True},
    pretty_exceptions_enable=False,
)


def _plan_record(plan) -> dict:
    return {
        "name": plan.spec.name,
        "nodes": [
            {
                "id": n.id,
                "kind": n.kind,
                "label": n.label,
                "parents": list(n.parents),
                "tokens": n.tokens,
            }
            for n in plan.nodes
        ],
    }


def dry_run(plan, data_dir: str | None, jobs: int, out: Path | None = None) -> None:
    # torch, through proximity.training.presets (the note above `console`)
    from proximity.training.grid.estimate import (
        check_memory,
        estimate,
        memory_by_kind,
        naive_tokens,
        plan_gpu,
        vocab_size,
    )

    trained = None  # the grid's own tokenizer, when --out names a folder where it has run
    tokenizer_node = next((n for n in plan.nodes if n.kind == "tokenizer"), None)
    if out is not None and tokenizer_node is not None:
        path = node_dir(out.resolve(), tokenizer_node.id) / "tokenizer.json"
        trained = str(path) if path.exists() else None
    counts: dict = {}
    est = estimate(plan, data_dir, trained_tokenizer=trained, sft_counts=counts)
    table = Table(title=f"grid {plan.spec.name}: {len(plan.nodes)} nodes")
    for column in ("node", "kind", "what", "tokens", "FLOPs", "est. time"):
        table.add_column(column, justify="right" if column in ("tokens", "FLOPs") else "left")
    for node in plan.nodes:
        e = est[node.id]
        flops = f"{e.flops:.2e}" if e.flops is not None else "?"
        table.add_row(
            node.id, node.kind, node.label, _fmt_tokens(e.tokens), flops, _fmt_seconds(e.seconds)
        )
    console.print(table)
    known = [e for e in est.values() if e.tokens is not None]
    total = sum(e.tokens for e in known)
    flops = sum(e.flops or 0.0 for e in known)
    seconds = [e.seconds for e in est.values() if e.seconds is not None]
    naive = naive_tokens(plan, est)
    kinds = {
        k: sum(1 for n in plan.nodes if n.kind == k)
        for k in ("tokenizer", "prepare", "pretrain", "midtrain", "sft")
    }
    console.print(", ".join(f"{v} {k}" for k, v in kinds.items()) + " nodes")
    unknown = len(est) - len(known)
    console.print(
        f"tokens trained: {total:,}{f' (+{unknown} nodes unknown)' if unknown else ''}; "
        f"FLOPs {flops:.3g}"
    )
    if naive is not None:
        console.print(f"naive grid (no shared prefixes): {naive:,} tokens = {naive / total:.2f}x")
    for target, count in counts.items():
        n = "?" if count.examples is None else f"{count.examples:,}"
        source = f"; counted on a stand-in: {count.substitute}" if count.substitute else ""
        console.print(
            f"SFT {target}: {n} training examples after the length filter ({count.how}){source}",
            highlight=False,
        )
    if seconds:
        device = plan.spec.estimate
        how = (
            "measured CPU throughput, sequential"
            if device.device == "cpu"
            else f"{device.gpus} x {device.device} at {device.mfu:.0%} MFU"
        )
        console.print(
            f"estimated time: {_fmt_seconds(sum(seconds))} ({how}; ignores start-up and "
            f"evaluation; --jobs {jobs} divides it at best)"
        )
    gpu = plan_gpu(plan)
    if gpu is not None:
        memory = memory_by_kind(plan, vocab_size(plan, data_dir))
        memory_table(memory, *gpu)
        check_memory(plan, memory)  # after the table, so a refusal shows what did not fit


def memory_table(memory, gpu: str, gpu_gib: float) -> None:
    """Estimated peak GPU memory per node kind (training/memory.py), in GiB."""
    table = Table(title=f"estimated peak memory per GPU, GiB ({gpu}: {gpu_gib:.1f})")
    columns = ("kind", "model", "GPUs", "micro", "seq", "state", "act.", "logits", "peak", "fits")
    for column in columns:
        table.add_column(column, justify="left" if column in ("kind", "model") else "right")
    for m in memory:
        g = m.estimate.gib()
        state = g["weights"] + g["gradients"] + g["optimizer"] + g["ddp_buckets"]
        table.add_row(
            m.kind, m.model, str(m.gpus), str(m.micro_batch), str(m.seq_len), f"{state:.1f}",
            f"{g['activations'] + g['autocast_copies']:.1f}", f"{g['logits']:.1f}",
            f"{g['total']:.1f}", "yes" if m.estimate.fits(gpu_gib) else "NO",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"state: weights, gradients, AdamW (and DDP's buckets); act.: activations kept for "
        f"backward; logits: logits and loss. fits: peak <= {FIT_FRACTION:.0%} of the GPU "
        f"(the rest: CUDA context, workspaces, fragmentation)",
        highlight=False,
    )


def slurm_resources(plan) -> None:
    """What each node kind's Slurm job asks for and runs (the spec's slurm: section)."""
    from proximity.training.grid.slurm import (  # torch (the note above `console`)
        job_groups,
        launch_for,
        sbatch_memory,
    )

    table = Table(title="slurm jobs (one per node: a job, or a task of its siblings' array)")
    columns = ("kind", "jobs", "partition", "time", "nodes", "GPUs/node", "CPUs", "mem", "runs")
    for column in columns:
        table.add_column(column)
    for kind in ("tokenizer", "prepare", "pretrain", "midtrain", "sft"):
        count = sum(1 for n in plan.nodes if n.kind == kind)
        if not count:
            continue
        r = plan.spec.slurm.for_kind(kind)
        command = launch_for(r, Path("DIR/nodes/ID")).command(
            master="FIRST_HOST", job_id="JOBID", python="python"
        )
        table.add_row(
            kind,
            str(count),
            r.partition or "(default)",
            _fmt_seconds(r.time_minutes * 60),
            str(r.nodes),
            str(r.gpus_per_node),
            str(r.cpus_per_task),
            sbatch_memory(r.mem_gb) if r.mem_gb else "(default)",
            " ".join(command[1:]),
        )
    console.print(table)
    groups = job_groups(plan.nodes)
    arrays = [g for g in groups if len(g) > 1]
    cap = plan.spec.slurm.max_queued
    console.print(
        f"slurm: {len(plan.nodes):,} jobs (array tasks count one each) in {len(groups):,} "
        f"sbatch submissions: {len(arrays):,} job arrays ({sum(map(len, arrays)):,} tasks) and "
        f"{len(groups) - len(arrays):,} single job(s); "
        + (f"at most {cap:,} queued at once (--max-queued)" if cap else "no cap on queued jobs"),
        highlight=False,
    )


def show_status(out: Path) -> None:
    """The grid's state from its folder alone (plan.json and each node's files)."""
    record_path = out / "plan.json"
    if not record_path.exists():
        raise ProximityError(f"{out}: no plan.json; is this a train-grid --out folder?")
    record = json.loads(record_path.read_text())
    table = Table(title=f"grid {record['name']} in {out}")
    for column in ("node", "kind", "what", "state", "time"):
        table.add_column(column)
    counts: dict[str, int] = {}
    for node in record["nodes"]:
        folder = node_dir(out, node["id"])
        state = node_state(folder)
        counts[state] = counts.get(state, 0) + 1
        when = ""
        if state == "done":
            when = _fmt_seconds(read_result(folder).get("wall_time_s"))
        elif state == "running":
            when = f"{_fmt_seconds(time.time() - (folder / 'lock').stat().st_mtime)} so far"
        elif state == "failed":
            when = error_line(folder)[:80]
        elif (folder / "slurm_job.txt").exists():  # submitted by --executor slurm
            when = f"slurm job {(folder / 'slurm_job.txt').read_text().strip()}"
        style = {"done": "green", "running": "cyan", "failed": "red"}.get(state, "")
        table.add_row(
            node["id"],
            node["kind"],
            node["label"],
            f"[{style}]{state}[/]" if style else state,
            when,
        )
    console.print(table)
    console.print(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    for line in summary_lines(snapshot(out, record["nodes"])):
        console.print(line, highlight=False)


# train-grid's arguments and longer options, named here so that the command reads as a list
SpecArgument = Annotated[
    str,
    typer.Argument(
        help="A preset (smoke, micro, paper-70m, paper-160m) or a grid YAML file; or "
        "`status` followed by DIR."
    ),
]
WaitOption = Annotated[
    bool,
    typer.Option(
        "--wait/--no-wait",
        help="slurm: wait for the jobs and write results (--no-wait: submit and return; "
        "rerun the command later to watch and collect).",
    ),
]
VerboseOption = Annotated[
    bool,
    typer.Option(
        "--verbose",
        "-v",
        help="Also print each node's start/done line (always written to DIR/grid.log; "
        "printed anyway when the live display is off).",
    ),
]
MaxQueuedOption = Annotated[
    int | None,
    typer.Option(
        "--max-queued",
        help="slurm: at most N of the grid's jobs queued or running at once (an array task "
        "counts one); the rest are submitted as earlier ones finish (overrides the spec's "
        "slurm.max_queued; default: no cap).",
    ),
]
ProgressOption = Annotated[
    bool | None,
    typer.Option(
        "--progress/--no-progress",
        help="The live display (totals, time left, nodes running); default: on when "
        "stdout is a terminal.",
    ),
]


@grid_app.callback()
def train_grid(
    spec: SpecArgument,
    status_dir: Annotated[
        Path | None, typer.Argument(help="With `status`: the grid folder.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Grid folder.")] = None,
    dry_run_: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan, tokens, FLOPs and time; run nothing.")
    ] = False,
    jobs: Annotated[int, typer.Option(help="Nodes run at once (local); cores are split.")] = 1,
    executor: Annotated[
        str,
        typer.Option(
            help="local, or slurm: one job per node, siblings as one job array (the spec's "
            "slurm: section)."
        ),
    ] = "local",
    wait: WaitOption = True,
    poll: Annotated[float, typer.Option(help="slurm: seconds between squeue polls.")] = 10.0,
    max_queued: MaxQueuedOption = None,
    seeds: Annotated[
        str | None, typer.Option(help="Seeds, e.g. 0,1,2 (overrides the spec).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a grid field: section.key=value (repeatable)."),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Local data folder (else $PROXIMITY_DATA_DIR, else hub).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only this node and the nodes it needs (repeatable), e.g. one SFT run's "
            "chain with --set eval.every=40 --set eval.sft_every=4 for figure 6's curves; a "
            "node kind (pretrain, midtrain, sft) stands for every node of that kind."
        ),
    ] = None,
    verbose: VerboseOption = False,
    progress: ProgressOption = None,
) -> None:
    """Run (or resume) a grid: every node not done yet, sharing every common prefix."""
    if spec == "status":
        if status_dir is None:
            raise ProximityError("train-grid status needs the grid folder: train-grid status DIR")
        show_status(status_dir)
        return
    if status_dir is not None:
        raise ProximityError(f"unexpected argument {status_dir} (did you mean --out {status_dir}?)")
    check_executor_options(jobs, executor, wait, max_queued)
    plan, data = load_plan(spec, set_ or [], seeds, data_dir, check_memory=not dry_run_)
    if only:
        plan = plan.only(only)
    if max_queued is not None:
        plan.spec.slurm.max_queued = max_queued  # an execution setting: no node id changes
    if dry_run_:
        dry_run(plan, data, jobs, out)
        if executor == "slurm":
            slurm_resources(plan)
        return
    if out is None:
        raise ProximityError("--out DIR is required (the grid folder; rerun it to resume)")
    if poll <= 0:
        raise ProximityError("--poll must be a positive number of seconds")
    run_grid(
        plan,
        out.resolve(),
        data,
        jobs=jobs,
        executor=executor,
        wait=wait,
        poll_s=poll,
        verbose=verbose,
        live=progress,
    )


def check_executor_options(jobs: int, executor: str, wait: bool, max_queued: int | None) -> None:
    """Refuse, before anything is read, options that do not go together."""
    if jobs < 1:
        raise ProximityError("--jobs must be at least 1")
    if max_queued is not None and max_queued < 1:
        raise ProximityError("--max-queued must be at least 1")
    if max_queued is not None and executor != "slurm":
        raise ProximityError("--max-queued is for --executor slurm")
    if executor not in ("local", "slurm"):
        raise ProximityError(f"--executor must be local or slurm, got {executor!r}")
    if executor == "slurm" and jobs != 1:
        raise ProximityError("--jobs is for --executor local; Slurm runs every ready node at once")
    if executor == "local" and not wait:
        raise ProximityError("--no-wait is for --executor slurm (a local run is its processes)")


def load_plan(
    spec: str, overrides: list[str], seeds: str | None, data_dir: Path | None, check_memory: bool
):
    """(the plan, the data folder as a string or None): the spec read with its overrides, every
    dataset it names resolved, and (with `check_memory`, before anything runs or is submitted)
    the plan checked against the GPU it names."""
    # torch, through proximity.training.presets (the note above `console`)
    from proximity.training.grid.estimate import check_plan_memory
    from proximity.training.grid.plan import build_plan
    from proximity.training.grid.spec import check_datasets, load_grid

    grid = load_grid(spec, overrides, seeds)
    folder = resolve_data_dir(data_dir or grid.data.data_dir)
    data = str(folder.resolve()) if folder else None
    check_datasets(grid, data)
    plan = build_plan(grid)
    if check_memory:
        check_plan_memory(plan, data)
    return plan, data


def run_grid(
    plan,
    out: Path,
    data_dir: str | None,
    *,
    jobs: int = 1,
    executor: str = "local",
    wait: bool = True,
    poll_s: float = 10.0,
    verbose: bool = False,
    live: bool | None = None,
):
    """Run the plan's unfinished nodes in `out`. Per-node lines go to `out/grid.log`, and to
    the screen with `verbose` or when the live display is off (`live`: None = a terminal)."""
    # torch, through proximity.training.presets (the note above `console`); pandas
    from proximity.training.grid.ledger import write_node_files
    from proximity.training.grid.local import run_local
    from proximity.training.grid.results import (
        pretraining_table,
        refresh_results,
        write_pretraining,
    )

    out.mkdir(parents=True, exist_ok=True)
    resolved = plan.spec.to_dict()
    resolved["data"]["data_dir"] = data_dir
    write_text_atomic(out / "grid.yaml", yaml.safe_dump(resolved, sort_keys=False))
    write_text_atomic(out / "plan.json", json.dumps(_plan_record(plan), indent=1) + "\n")
    write_node_files(plan, out, data_dir)
    total = len(plan.nodes)
    started = time.time()
    live = console.is_terminal if live is None else live
    echo = partial(console.print, highlight=False) if verbose or not live else None
    results = partial(refresh_results, plan, out, data_dir)
    with GridLog(out, echo=echo, on_sft_done=results) as log:
        log.note(f"train-grid {plan.spec.name}: {total} nodes")
        with _live_display(out, plan, started, live):
            if executor == "slurm":
                outcome = _run_on_slurm(plan, out, log, wait=wait, poll_s=poll_s)
            else:
                outcome = run_local(plan, out, jobs=jobs, on_change=log)
    if outcome is None:
        return None
    paths = results()
    write_pretraining(pretraining_table(plan, out), out)
    console.print(
        f"{len(outcome.done)}/{total} nodes done ({len(outcome.ran)} now, "
        f"{time.time() - started:.0f} s), {len(outcome.failed)} failed, "
        f"{len(outcome.skipped)} skipped; results: {paths[0]}"
    )
    if outcome.failed:
        for nid, line in outcome.failed.items():
            console.print(f"[red]failed[/] {nid}: {line} (see {out / 'nodes' / nid / 'log.txt'})")
        # SystemExit, not typer.Exit: it ends the process with this status however the app
        # is invoked (a non-standalone click returns, rather than raises, Exit's code).
        raise SystemExit(1)
    return outcome


def _run_on_slurm(plan, out: Path, log: GridLog, *, wait: bool, poll_s: float):
    """Submit (at most slurm.max_queued jobs live), then (with `wait`) watch and submit the
    rest as jobs finish (the live display shows progress); None when not waiting."""
    from proximity.training.grid.slurm import submit_grid, watch  # torch (the note above `console`)

    cap = plan.spec.slurm.max_queued
    try:
        done_before = sum(1 for n in plan.nodes if is_done(node_dir(out, n.id)))
        submission = submit_grid(plan, out, cap=cap)
        jobs, submitted = submission.jobs, submission.submitted
        queued = len(jobs) - len(submitted)
        left = len(plan.nodes) - done_before - len(jobs)
        console.print(
            f"slurm: submitted {len(submitted)} jobs in {submission.calls} sbatch calls "
            f"({submission.arrays} job arrays)"
            + (f", {queued} already queued from an earlier call" if queued else "")
            + f"; {done_before} nodes done before"
            + (f"; {left} nodes not submitted yet (--max-queued {cap})" if left > 0 else ""),
            highlight=False,
        )
        if not wait:
            _say_not_waiting(out, bool(jobs), left, cap)
            return None
        return watch(plan, out, jobs, poll_s=poll_s, on_change=log, submission=submission)
    except KeyboardInterrupt:
        console.print(
            "stopped waiting; the jobs keep running in Slurm. Rerun the same command to "
            "wait for them (it submits nothing twice), or scancel them."
        )
        raise SystemExit(130) from None


def _say_not_waiting(out: Path, any_jobs: bool, left: int, cap: int | None) -> None:
    """What --no-wait leaves to the user: watching, and with a cap the nodes not submitted."""
    if left > 0:
        console.print(
            f"not waiting (--no-wait): {left} nodes are left to submit (at most {cap} jobs "
            "queued at once). Rerun this same command to submit the rest as these finish "
            "(done nodes and queued jobs are never submitted twice), or rerun it without "
            "--no-wait to submit them all as room frees up and write results.csv",
            highlight=False,
        )
    elif any_jobs:
        console.print(
            f"not waiting (--no-wait): `proximity train-grid status {out}` shows "
            "progress; rerun this command (without --no-wait) to wait and write "
            "results.csv"
        )


@contextmanager
def _live_display(out: Path, plan, started: float, on: bool):
    """The live progress view while the grid runs (nothing when `on` is false). Forced on
    (`--progress`) where stdout is not a terminal, it still draws: a test reads its frames."""
    if not on:
        yield
        return
    display = LiveDisplay(out, _plan_record(plan)["nodes"], started)
    screen = console if console.is_terminal else Console(force_terminal=True)
    with Live(get_renderable=display.render, console=screen, refresh_per_second=1):
        yield
