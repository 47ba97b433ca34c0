"""The items of benchmarks/gpu_check.py; each runs in a process of its own, started by it.

An item records what it measures through a `Recorder` as it goes (a timed-out item keeps its
figures) and ends with one verdict: pass, fail or skipped, with the reason in words. The sizes
come from `Scale`: the real ones on a GPU, tiny ones for the CPU rehearsal (same code paths).
Everything trains through the project's own entry points (proximity.training.loop.train, the
`proximity train` CLI under torchrun, the grid's run_grid), so the check tests what a user runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proximity.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[1]
PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
NEEDS_CUDA = "needs CUDA"
PYTHIA = "pythia"  # the paper's tokenizer (50k): the output head is a quarter of 160M's FLOPs
SMALL_VOCAB = 512  # the rehearsal's: a 50k head would make every micro step 10x dearer on CPU
MFU_GOAL = 0.45  # at 160M; llm-foundry reports ~50% for small GPT models on A100/H100
BARE_GOAL = 0.97  # our loop's tokens/s over the bare loop's
DATA_GOAL = 5.0  # the data path's tokens/s over the GPU's consumption at 160M
H100_SXM = "NVIDIA H100 80GB HBM3"  # the reference GPU when this machine has none
# Losses of the DDP run against one process, relative: fp32 with TF32 off (NVIDIA_TF32_OVERRIDE)
# differs only in summation order (gradient all-reduce, per-rank GEMM shapes), ~1e-6 here;
# tests/test_ddp_cpu.py holds gloo to the same 1e-4.
DDP_RTOL = 1e-4


@dataclass(frozen=True)
class SpeedCase:
    preset: str
    seq_len: int
    batch_size: int
    micro_batch_size: int


@dataclass(frozen=True)
class Scale:
    """How big each item runs: on a GPU the paper's shapes, on the CPU rehearsal tiny ones."""

    device: str
    dtype: str
    compile: bool
    tokenizer: str  # pythia, or "small": a SMALL_VOCAB BPE trained on C4 once per check
    n_docs: int | None  # C4 documents in the one prepared build every item shares
    speed: tuple[SpeedCase, ...]
    speed_steps: int
    speed_skip: int
    run_preset: str  # resume and ddp
    run_seq_len: int
    run_batch: int
    run_steps: int
    grid_jobs: int
    grid_set: tuple[str, ...]
    data_steps: int = 40
    memory_configs: tuple[str, ...] = ("pythia-70m-paper.yaml", "pythia-160m-paper.yaml")
    memory_limit: int = 512  # the largest micro-batch tried at 160M


def scale_for(device: str) -> Scale:
    if device == "cuda":
        return Scale(
            device="cuda", dtype="bf16", compile=True, tokenizer=PYTHIA, n_docs=None,
            # 160M first: its figures carry the goals if the box runs out during 70M.
            speed=(SpeedCase("160m", 2048, 32, 8), SpeedCase("70m", 2048, 32, 16)),
            speed_steps=25, speed_skip=8,
            # Pythia-14M: its checkpoints (with AdamW) are ~170 MB, so four runs fit the box.
            run_preset="14m", run_seq_len=512, run_batch=8, run_steps=12,
            grid_jobs=4,
            # The paper grids' settings plus compile (determinism is the resume item's).
            grid_set=("train_set=[system.dtype=bf16, system.compile=true]",),
        )  # fmt: skip
    # The rehearsal: a grid with each node kind once (tokenizer, prepare, pretrain, midtrain,
    # SFT), fp32 without compile (inductor's C++ build takes minutes on 2 cores).
    return Scale(
        device="cpu", dtype="fp32", compile=False, tokenizer="small", n_docs=300,
        speed=(SpeedCase("micro-2l-64", 64, 8, 4),), speed_steps=6, speed_skip=2,
        run_preset="micro-2l-64", run_seq_len=64, run_batch=8, run_steps=6,
        grid_jobs=1,
        grid_set=(
            "control=false", "ablation.mixture=null", "sft.lrs=[1e-3]", "pretrain.steps=16",
            "mixtures=[{name: code, data: starcoder, weights: [0.2], start_steps: [12]}]",
        ),
    )  # fmt: skip


@dataclass
class Recorder:
    """An item's result file, rewritten after every figure so a killed item keeps them."""

    path: Path
    data: dict[str, Any] = field(default_factory=lambda: {"figures": {}, "rows": [], "notes": []})

    def save(self) -> None:
        write_text_atomic(self.path, json.dumps(self.data, indent=1, default=str) + "\n")

    def figure(self, name: str, value: Any) -> None:
        self.data["figures"][name] = value
        self.save()

    def row(self, **row: Any) -> None:
        self.data["rows"].append(row)
        self.save()

    def note(self, text: str) -> None:
        self.data["notes"].append(text)
        self.save()

    def verdict(self, verdict: str, reason: str) -> None:
        self.data.update(verdict=verdict, reason=reason)
        self.save()


@dataclass(frozen=True)
class Context:
    args: argparse.Namespace
    scale: Scale
    rec: Recorder
    work: Path  # this item's folder, emptied at its start

    @property
    def cache(self) -> Path:
        return self.args.out / "cache" / "tokens"  # one C4 build shared by the items

    @property
    def tokenizer(self) -> str:
        """The tokenizer the training items use (a path for the small one, trained if absent;
        items run one at a time, so no two processes write it)."""
        if self.scale.tokenizer != "small":
            return self.scale.tokenizer
        path = self.args.out / "cache" / f"tokenizer-{SMALL_VOCAB}" / "tokenizer.json"
        if not path.exists():
            from proximity.data import load_texts
            from proximity.training.tokenizer_training import save_tokenizer, train_tokenizer

            texts = load_texts("c4", n_docs=self.scale.n_docs, data_dir=self.args.data_dir)
            save_tokenizer(train_tokenizer(list(texts), SMALL_VOCAB), path.parent)
        return str(path)


def run_config(ctx: Context, out_dir: Path, tokenizer: str | None = None, **sections: dict) -> Any:
    """A pretraining RunConfig at this scale on the shared C4 build; `sections` update it."""
    from proximity.training.config import RunConfig

    s = ctx.scale
    base: dict[str, dict] = {
        "model": {"preset": s.run_preset, "seq_len": s.run_seq_len},
        "data": {
            "train": "c4",
            "tokenizer": tokenizer or ctx.tokenizer,
            "data_dir": ctx.args.data_dir,
            "cache_dir": str(ctx.cache),
            "n_docs": s.n_docs,
        },
        "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 2},
        "train": {"steps": s.run_steps, "batch_size": s.run_batch, "log_every": 1},
        "eval": {"every": 0, "batch_size": s.run_batch, "max_batches": 2},
        "checkpoint": {"every": 0},
        "system": {"device": s.device, "dtype": s.dtype, "progress": False},
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return RunConfig.from_dict({"phase": "pretrain", "out_dir": str(out_dir), **base})


def train_losses(out: Path) -> list[tuple[int, float]]:
    from proximity.training.metrics_log import read_metrics

    return [
        (m["step"], m["loss"]) for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"
    ]


# ---- 1. end to end: the smoke grid ------------------------------------------------------------

NODE_KINDS = ("tokenizer", "prepare", "pretrain", "midtrain", "sft")


def item_e2e(ctx: Context) -> None:
    """The smoke grid with the GPU's settings (bf16, compile) through run_grid, as
    `proximity train-grid smoke --set ...` runs it: every node kind must finish."""
    import pandas as pd

    from proximity.training.grid.cli import run_grid
    from proximity.training.grid.nodes import error_line, node_dir, node_state
    from proximity.training.grid.plan import build_plan
    from proximity.training.grid.spec import check_datasets, load_grid

    overrides = list(ctx.scale.grid_set)
    ctx.rec.figure("command", f"proximity train-grid smoke --jobs {ctx.scale.grid_jobs} "
                   + " ".join(f"--set '{o}'" for o in overrides))  # fmt: skip
    grid = load_grid("smoke", overrides)
    check_datasets(grid, ctx.args.data_dir)
    plan = build_plan(grid)
    out = ctx.work / "grid"
    with contextlib.suppress(SystemExit):  # failed nodes: counted below from their folders
        run_grid(plan, out, ctx.args.data_dir, jobs=ctx.scale.grid_jobs)
    states = {n.id: node_state(node_dir(out, n.id)) for n in plan.nodes}
    kinds = {n.id: n.kind for n in plan.nodes}
    for kind in NODE_KINDS:
        ids = [nid for nid, k in kinds.items() if k == kind]
        ctx.rec.row(kind=kind, nodes=len(ids), done=sum(states[nid] == "done" for nid in ids))
    for nid in [nid for nid in kinds if states[nid] != "done"][:3]:
        ctx.rec.note(f"{nid} {states[nid]}: {error_line(node_dir(out, nid))[:200]}")
    results = out / "results.csv"
    table = pd.read_csv(results) if results.exists() else pd.DataFrame()
    ctx.rec.figure("results.csv rows", len(table))
    ctx.rec.verdict(*grid_verdict(kinds, states, table))


def grid_verdict(kinds: dict[str, str], states: dict[str, str], table: Any) -> tuple[str, str]:
    """Pass when every node (id -> kind) is done, every kind ran, and results.csv has one row
    with a finite SFT loss per SFT node."""
    failed = [nid for nid in kinds if states[nid] != "done"]
    summary = f"{len(kinds) - len(failed)}/{len(kinds)} nodes done"
    if failed:
        first = failed[0]
        return FAIL, f"{summary}; first failure: {kinds[first]} {first} ({states[first]})"
    missing = set(NODE_KINDS) - set(kinds.values())
    if missing:
        return FAIL, f"{summary}, but the grid has no {', '.join(sorted(missing))} node"
    n_sft = sum(kind == "sft" for kind in kinds.values())
    finite = bool(len(table)) and bool(table["sft_val_loss"].map(math.isfinite).all())
    if len(table) != n_sft or not finite:
        return FAIL, (f"{summary}; results.csv has {len(table)} rows for {n_sft} SFT nodes "
                      f"(finite losses: {finite})")  # fmt: skip
    return PASS, f"{summary} (every kind); results.csv {len(table)} rows, finite"


# ---- 2. exact resume ----------------------------------------------------------------------------


def item_resume(ctx: Context) -> None:
    """Stop a run halfway (train.max_steps_this_run), resume it in a FRESH process with
    `proximity train pretrain --resume` (so every state must come from the checkpoint: weights,
    AdamW, schedule, RNG, data position), and compare with the uninterrupted run, bitwise.

    A second uninterrupted run is the control: if even it differs from the first, the kernels
    are not deterministic despite system.deterministic, and the resume is held to that noise.
    """
    from proximity.training.loop import train

    steps = ctx.scale.run_steps
    settings = {"system": {"deterministic": True}}
    ctx.rec.figure("settings", f"{ctx.scale.run_preset}, batch {ctx.scale.run_batch}x"
                   f"{ctx.scale.run_seq_len}, {steps} steps, {ctx.scale.dtype}, "
                   "system.deterministic=true; stopped at step " + str(steps // 2))  # fmt: skip
    for name in ("whole", "again"):
        train(run_config(ctx, ctx.work / name, **settings))
    split = ctx.work / "split"
    stopped = train(run_config(ctx, split, train={"max_steps_this_run": steps // 2}, **settings))
    if stopped.finished or stopped.step != steps // 2:
        ctx.rec.verdict(FAIL, f"the stopped run ended at step {stopped.step}, not {steps // 2}")
        return
    config = ctx.work / "resume.yaml"
    run_config(ctx, split, **settings).save(config)
    resumed = subprocess.run(
        [sys.executable, "-m", "proximity.training.cli", "pretrain", "--config", str(config),
         "--resume"],
        capture_output=True, text=True,
    )  # fmt: skip
    if resumed.returncode != 0:
        ctx.rec.verdict(FAIL, f"--resume exited {resumed.returncode}: "
                        f"{(resumed.stderr.strip().splitlines() or ['?'])[-1]}")  # fmt: skip
        return
    control = compare_runs(ctx.work / "whole", ctx.work / "again")
    resume = compare_runs(ctx.work / "whole", split)
    for name, value in resume.items():
        ctx.rec.row(compared=name, resumed_vs_uninterrupted=value, control_two_runs=control[name])
    if resume["final steps"] != f"{steps} / {steps}" or resume["losses logged"] != (
        f"{steps} / {steps}"
    ):
        ctx.rec.verdict(FAIL, f"steps {resume['final steps']}, losses {resume['losses logged']}")
    elif resume["bitwise equal"] is True:
        ctx.rec.verdict(PASS, f"bitwise equal after {steps} steps (weights, AdamW, each loss)")
    elif control["bitwise equal"] is True:
        # No tolerance: two runs agree to the bit, so the same inputs give the same bits and
        # any difference is state the checkpoint did not carry.
        ctx.rec.verdict(FAIL, f"not bitwise equal, though two uninterrupted runs are: max "
                        f"|dloss| {resume['max abs loss difference']:.3g}, max |dw| "
                        f"{resume['max abs weight difference']:.3g}")  # fmt: skip
    else:
        # Nondeterministic kernels: the resume may differ as much as two plain runs do (x4).
        noise = 4 * control["max abs loss difference"]
        within = resume["max abs loss difference"] <= noise
        ctx.rec.verdict(PASS if within else FAIL, f"kernels not deterministic (two plain runs "
                        f"differ by {control['max abs loss difference']:.3g} in loss); resume "
                        f"differs by {resume['max abs loss difference']:.3g}, tolerance 4x that "
                        "noise")  # fmt: skip


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """Two run folders' final checkpoints and logged training losses, bit for bit."""
    import torch

    from proximity.training.checkpoint import latest_checkpoint, load_checkpoint

    ca = load_checkpoint(latest_checkpoint(a / "checkpoints"))
    cb = load_checkpoint(latest_checkpoint(b / "checkpoints"))
    wa, wb = _weights(ca.model_dir), _weights(cb.model_dir)
    la, lb = train_losses(a), train_losses(b)
    same_weights = wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    same_adam = _same_tensors(ca.optimizer_state(), cb.optimizer_state())
    return {
        "final steps": f"{ca.step} / {cb.step}",
        "losses logged": f"{len(la)} / {len(lb)}",
        "bitwise equal": same_weights and same_adam and la == lb,
        "weights bitwise equal": same_weights,
        "AdamW state bitwise equal": same_adam,
        "max abs weight difference": max(
            (wa[k].double() - wb[k].double()).abs().max().item() for k in wa
        ),
        "max abs loss difference": max(
            (abs(x - y) for (_, x), (_, y) in zip(la, lb, strict=False)), default=math.nan
        ),
    }


def _weights(model_dir: Path) -> dict:
    from transformers import GPTNeoXForCausalLM

    return GPTNeoXForCausalLM.from_pretrained(model_dir).state_dict()


def _same_tensors(a: Any, b: Any) -> bool:
    """Nested optimizer states equal, tensors bitwise."""
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b, strict=True))
    return a == b


# ---- 3. speed -----------------------------------------------------------------------------------


def peak_of_device(device: str) -> float | None:
    import torch

    from proximity.training.throughput import peak_flops_for

    return peak_flops_for(torch.cuda.get_device_name()) if device == "cuda" else None


def item_speed(ctx: Context) -> None:
    """Ours, transformers.Trainer and a bare loop on the same model, batches and optimiser
    (benchmarks/bench_trainer.py's three loops), one after another on this device."""
    import importlib.util

    import bench_trainer as bt

    from proximity.tokenizer import load_tokenizer
    from proximity.training.presets import flops_per_token, model_config

    s = ctx.scale
    peak = peak_of_device(s.device)
    vocab = load_tokenizer(ctx.tokenizer, data_dir=ctx.args.data_dir).get_vocab_size()
    ctx.rec.figure("dense bf16 peak (TFLOP/s)", peak / 1e12 if peak else "unknown")
    has_accelerate = importlib.util.find_spec("accelerate") is not None
    loops: dict[str, Callable] = {"bare": bt.run_bare, "ours": bt.run_ours}
    loops["Trainer"] = bt.run_trainer
    measured: dict[tuple[str, str], float] = {}
    for case in s.speed:
        bench = bt.Bench(
            preset=case.preset, seq_len=case.seq_len, batch_size=case.batch_size,
            steps=s.speed_steps, skip=s.speed_skip, tokenizer=ctx.tokenizer,
            data_dir=ctx.args.data_dir, cache=ctx.cache, n_docs=s.n_docs,
            micro_batch_size=case.micro_batch_size, device=s.device, dtype=s.dtype,
            compile=s.compile,
        )  # fmt: skip
        fpt = flops_per_token(model_config(case.preset, vocab_size=vocab), case.seq_len)
        for name, run in loops.items():
            row = {
                "model": case.preset,
                "loop": name,
                "batch": f"{case.batch_size}x{case.seq_len} (micro {case.micro_batch_size})",
            }
            if name == "Trainer" and not has_accelerate:
                ctx.rec.row(**row, error="skipped: transformers.Trainer needs accelerate "
                            "(pip install -e '.[dev]')")  # fmt: skip
                continue
            try:
                seconds, peak_bytes = _timed(run, bench)
            except Exception as error:  # one loop failing must not hide the others' figures
                traceback.print_exc()
                ctx.rec.row(**row, error=f"{type(error).__name__}: {str(error)[:200]}")
                continue
            tokens_per_s = bench.step_tokens / statistics.median(seconds)
            measured[case.preset, name] = tokens_per_s
            ctx.rec.row(
                **row, tokens_per_s=round(tokens_per_s), step_ms=round(1e3 * statistics.median(
                    seconds), 1), mfu=round(fpt * tokens_per_s / peak, 4) if peak else "n/a",
                steps_timed=len(seconds),
                peak_gib=round(peak_bytes / 2**30, 2) if peak_bytes else "n/a",
            )  # fmt: skip
        for other in ("bare", "Trainer"):
            if (case.preset, "ours") in measured and (case.preset, other) in measured:
                ratio = measured[case.preset, "ours"] / measured[case.preset, other]
                ctx.rec.figure(f"{case.preset}: ours / {other}", round(ratio, 3))
    _speed_verdict(ctx, measured, peak, vocab)


def _timed(run: Callable, bench: Any) -> tuple[list[float], int | None]:
    """Seconds per step of one loop, and its peak GPU memory (None on CPU)."""
    import torch

    cuda = bench.device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        seconds = run(bench)
        return seconds, torch.cuda.max_memory_allocated() if cuda else None
    finally:
        torch._dynamo.reset()  # free the compiled graphs (and their memory) before the next


def _speed_verdict(ctx: Context, measured: dict, peak: float | None, vocab: int) -> None:
    from proximity.training.presets import flops_per_token, model_config

    if ctx.scale.device != "cuda":
        ctx.rec.verdict(SKIPPED, f"{NEEDS_CUDA}: the goals are GPU goals (the three loops ran "
                        "at micro size on CPU to rehearse the code)")  # fmt: skip
        return
    missing = [name for name in ("bare", "ours") if ("160m", name) not in measured]
    if missing:
        ctx.rec.verdict(FAIL, f"160m: no figure for {', '.join(missing)} (see the rows)")
        return
    ours = measured["160m", "ours"]
    ratio = ours / measured["160m", "bare"]
    misses = []
    if peak is None:
        ctx.rec.note("this GPU's peak is not in training/throughput.py PEAK_FLOPS: MFU not judged")
    else:
        mfu = flops_per_token(model_config("160m", vocab_size=vocab), 2048) * ours / peak
        if mfu < MFU_GOAL:
            misses.append(f"MFU {mfu:.1%} < {MFU_GOAL:.0%}")
    if ratio < BARE_GOAL:
        misses.append(f"ours / bare {ratio:.3f} < {BARE_GOAL}")
    text = f"160m: {ours:,.0f} tokens/s, {ratio:.3f}x the bare loop"
    ctx.rec.verdict(FAIL if misses else PASS, f"{text}; missed: {', '.join(misses)}"
                    if misses else f"{text}: goals met")  # fmt: skip


# ---- 4. the data path ---------------------------------------------------------------------------


def item_data(ctx: Context) -> None:
    """Read prepared shards and build batches (the loop's BatchPrefetcher, pinned on CUDA) as
    fast as they come, against what the GPU consumes at 160M."""
    import torch

    from proximity.tokenizer import load_tokenizer
    from proximity.training import phases
    from proximity.training.data.batches import BatchPrefetcher
    from proximity.training.distributed import DistInfo

    seq_len, batch, steps = 2048, 32, ctx.scale.data_steps
    cfg = run_config(ctx, ctx.work, PYTHIA, model={"preset": "160m", "seq_len": seq_len},
                     train={"batch_size": batch, "steps": steps})  # fmt: skip
    tokenizer = load_tokenizer(PYTHIA, data_dir=ctx.args.data_dir)
    cpu = DistInfo(0, 0, 1, torch.device("cpu"))
    data = phases.pretraining_data(cfg, tokenizer, cpu, progress=False)  # builds if missing
    pin = ctx.scale.device == "cuda"
    prefetcher = BatchPrefetcher(data.batch, 0, steps, pin=pin)
    started = time.perf_counter()
    for step in range(steps):
        prefetcher.get(step)
    elapsed = time.perf_counter() - started
    prefetcher.close()
    supply = steps * batch * seq_len / elapsed
    demand, source = gpu_demand(ctx, tokenizer.get_vocab_size())
    ratio = supply / demand
    ctx.rec.figure("batches", f"{steps} x {batch}x{seq_len} tokens, pinned: {pin}")
    ctx.rec.figure("data path (tokens/s)", round(supply))
    ctx.rec.figure("GPU consumption at 160M (tokens/s)", round(demand))
    ctx.rec.figure("consumption from", source)
    ctx.rec.figure("ratio", round(ratio, 2))
    ctx.rec.note("the build was just written, so it is read from the page cache; a cold read "
                 "from a network filesystem is slower")  # fmt: skip
    verdict = PASS if ratio >= DATA_GOAL else FAIL
    ctx.rec.verdict(verdict, f"{supply:,.0f} tokens/s = {ratio:.1f}x the GPU's {demand:,.0f} "
                    f"at 160M (goal >= {DATA_GOAL:.0f}x)")  # fmt: skip


def gpu_demand(ctx: Context, vocab: int) -> tuple[float, str]:
    """Tokens/s the GPU trains 160M at: the speed item's measurement when it ran on this GPU,
    else what an H100 SXM (or this GPU) at the 45% MFU goal would take."""
    from proximity.training.presets import flops_per_token, model_config
    from proximity.training.throughput import peak_flops_for

    speed = ctx.args.out / "items" / "speed.json"
    if ctx.scale.device == "cuda" and speed.exists():
        for row in json.loads(speed.read_text()).get("rows", []):
            if row.get("model") == "160m" and row.get("loop") == "ours" and "tokens_per_s" in row:
                return float(row["tokens_per_s"]), "measured by the speed item (ours, 160m)"
    name = H100_SXM
    if ctx.scale.device == "cuda" and peak_of_device("cuda"):
        import torch

        name = torch.cuda.get_device_name()
    peak = peak_flops_for(name)
    fpt = flops_per_token(model_config("160m", vocab_size=vocab), 2048)
    return peak * MFU_GOAL / fpt, f"{name} at {MFU_GOAL:.0%} MFU (its bf16 peak / FLOPs per token)"


# ---- 5. DDP under torchrun ----------------------------------------------------------------------


def item_ddp(ctx: Context) -> None:
    """The documented launch, `torchrun -m proximity.training.cli pretrain`, with one rank per GPU
    (NCCL; gloo on CPU), against one process on the same global batch."""
    import torch

    from proximity.training.loop import train

    cuda = ctx.scale.device == "cuda"
    ranks = ctx.args.ddp_procs or (torch.cuda.device_count() if cuda else 2)
    steps = 8
    # fp32 without TF32, deterministic: the two runs may differ only in summation order.
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    # A global batch every rank count divides; compile only where DDP wraps the model (the
    # GPU recipe: DDP, then torch.compile), since one rank runs the plain loop.
    batch = ranks * max(1, ctx.scale.run_batch // ranks)
    compiled = ctx.scale.compile and ranks > 1
    settings = {
        "train": {"steps": steps, "batch_size": batch},
        "system": {"dtype": "fp32", "deterministic": True, "compile": compiled},
    }
    shape = f"{ctx.scale.run_preset}, batch {batch}x{ctx.scale.run_seq_len}, {steps} steps"
    ctx.rec.figure("settings", f"{shape}, fp32 (TF32 off), deterministic, compile {compiled}")
    config = ctx.work / "ddp.yaml"
    run_config(ctx, ctx.work / "ddp", **settings).save(config)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={ranks}", "-m", "proximity.training.cli", "pretrain", "--config",
               str(config)]  # fmt: skip
    ctx.rec.figure("command", "torchrun " + " ".join(command[3:]))
    ctx.rec.figure("ranks (backend)", f"{ranks} ({'nccl' if cuda else 'gloo'})")
    if ranks == 1:
        ctx.rec.note("one rank: the loop neither wraps the model in DDP nor all-reduces "
                     "(DistInfo.enabled is False), so this checks the torchrun launch and the "
                     "process group start only")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    sys.stdout.write(run.stdout[-4000:] + run.stderr[-4000:])
    if run.returncode != 0:
        lines = [line for line in run.stderr.splitlines() if "rror" in line] or ["?"]
        ctx.rec.verdict(FAIL, f"torchrun exited {run.returncode}: {lines[-1].strip()[:200]}")
        return
    train(run_config(ctx, ctx.work / "one", **settings))
    ddp, one = train_losses(ctx.work / "ddp"), train_losses(ctx.work / "one")
    if [s for s, _ in ddp] != [s for s, _ in one] or len(one) != steps:
        ctx.rec.verdict(FAIL, f"logged steps differ: {len(ddp)} under torchrun, {len(one)} alone")
        return
    worst = max(abs(a - b) / abs(b) for (_, a), (_, b) in zip(ddp, one, strict=True))
    for (step, a), (_, b) in zip(ddp, one, strict=True):
        ctx.rec.row(step=step, loss_ddp=a, loss_one_process=b)
    ctx.rec.figure("max relative loss difference", worst)
    ctx.rec.figure("tolerance", f"{DDP_RTOL:g} (fp32, TF32 off: summation order only)")
    verdict = PASS if worst <= DDP_RTOL else FAIL
    ctx.rec.verdict(verdict, f"{ranks} rank(s): {steps} losses within {worst:.2g} relative "
                    f"of one process (tolerance {DDP_RTOL:g})")  # fmt: skip


# ---- 6. memory ----------------------------------------------------------------------------------


def largest_fitting(fits: Callable[[int], bool], start: int, limit: int) -> int:
    """The largest n in [start, limit] with fits(n), for fits monotone (true up to a point):
    doubling from `start`, then bisection. 0 when even `start` does not fit."""
    if not fits(start):
        return 0
    good, bad = start, None
    while bad is None:
        trial = min(2 * good, limit)
        if trial == good:
            return good
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if fits(middle) else (good, middle)
    return good


def step_peak_bytes(preset: str, micro: int, seq_len: int, vocab: int) -> int | None:
    """Peak GPU memory of two training steps of our loop's step (bf16 autocast, lm_loss, fused
    AdamW, eager), or None when it does not fit. Two steps: AdamW's moments appear in the first."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from proximity.training.config import RunConfig
    from proximity.training.loop import configure_optimizer
    from proximity.training.losses import lm_loss
    from proximity.training.presets import model_config

    device = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model = optimizer = None
    try:
        with device:  # initialised on the GPU: seconds faster per trial than on the CPU
            model = GPTNeoXForCausalLM(model_config(preset, vocab_size=vocab)).train()
        optimizer = configure_optimizer(model, RunConfig(), device)
        batch = torch.randint(0, vocab, (micro, seq_len + 1), device=device)
        for _ in range(2):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = lm_loss(model, batch[:, :-1], batch[:, 1:])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    except torch.OutOfMemoryError:
        return None
    finally:
        del model, optimizer
        torch.cuda.empty_cache()


def item_memory(ctx: Context) -> None:
    import torch

    from proximity.tokenizer import load_tokenizer
    from proximity.training.config import RunConfig

    vocab = load_tokenizer(PYTHIA, data_dir=ctx.args.data_dir).get_vocab_size()
    total = torch.cuda.get_device_properties(0).total_memory
    ctx.rec.figure("GPU memory (GiB)", round(total / 2**30, 1))
    too_big = []
    for name in ctx.scale.memory_configs:  # each size at its config's micro-batch per GPU
        cfg = RunConfig.from_yaml(REPO / "configs" / name)
        preset, micro = cfg.model.preset, cfg.train.micro_batch_size or cfg.train.batch_size
        peak = step_peak_bytes(preset, micro, cfg.model.seq_len, vocab)
        ctx.rec.row(model=preset, micro_batch=micro, seq_len=cfg.model.seq_len,
                    peak_gib=round(peak / 2**30, 2) if peak else "out of memory")  # fmt: skip
        if peak is None:
            too_big.append(f"{preset} at micro-batch {micro}")
    largest = largest_fitting(
        lambda m: step_peak_bytes("160m", m, 2048, vocab) is not None, 8, ctx.scale.memory_limit
    )
    ctx.rec.figure("largest micro-batch at 160M (seq 2048, eager)", largest)
    ctx.rec.note("eager, not compiled (compiling every trial size takes minutes); the configs' "
                 "micro_batch_size is per GPU (configs/pythia-*-paper.yaml)")  # fmt: skip
    if too_big:
        ctx.rec.verdict(FAIL, f"the paper configs' micro-batch does not fit: {', '.join(too_big)}")
    else:
        ctx.rec.verdict(
            PASS,
            f"the configs' micro-batches fit; 160M fits up to {largest} "
            f"sequences of 2,048 (tried up to {ctx.scale.memory_limit})",
        )


# ---- a child process: one item --------------------------------------------------------------

ITEM_FUNCTIONS: dict[str, Callable[[Context], None]] = {
    "e2e": item_e2e,
    "resume": item_resume,
    "speed": item_speed,
    "data": item_data,
    "ddp": item_ddp,
    "memory": item_memory,
}


def environment(device: str) -> dict[str, Any]:
    import torch
    import transformers

    env: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                           "cuda": torch.version.cuda, "gpu_count": 0}  # fmt: skip
    if device == "cuda":
        from proximity.training.throughput import peak_flops_for

        env["gpu_count"] = torch.cuda.device_count()
        env["gpu_name"] = torch.cuda.get_device_name()
        peak = peak_flops_for(env["gpu_name"])
        env["bf16_peak_tflops"] = peak / 1e12 if peak else None
    return env


def run_child(args: argparse.Namespace) -> int:
    """Run one item; any error becomes its `fail` verdict with the error's first line."""
    rec = Recorder(args.out / "items" / f"{args.child}.json")
    work = args.out / "work" / args.child
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ctx = Context(args, scale_for(args.device), rec, work)
    try:
        ITEM_FUNCTIONS[args.child](ctx)
    except Exception as error:
        traceback.print_exc()
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        rec.verdict(FAIL, f"{type(error).__name__}: {first[:300]}")
    if "transformers" in sys.modules:  # else another item reports it (importing costs seconds)
        rec.data["environment"] = environment(args.device)
        rec.save()
    return 0
