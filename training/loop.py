"""The training loop: one visible loop for pretraining, midtraining and SFT of GPT-NeoX models.

Everything a phase changes lives in training/phases.py (its data) and training/starts.py (where
it starts); this file is the loop itself, in the spirit of nanoGPT's train.py. Read it from
`_train` down: `set_up` builds a `Run` (data, model, optimizer, schedule, batch geometry,
metrics file), the loop calls `train_step` once per optimizer step, logs through a
`ThroughputMeter` (training/throughput.py), evaluates and checkpoints through the `Run`, and
`_finish` evaluates the end.

Launch commands (the YAML files are in configs/; `--set key=value` overrides any field):

    # CPU, micro scale
    proximity train pretrain --config configs/micro-pretrain.yaml
    proximity train midtrain --config configs/micro-midtrain.yaml
    proximity train sft      --config configs/micro-sft.yaml
    # continue a run that was stopped or killed, exactly where its last checkpoint left it
    proximity train pretrain --config configs/micro-pretrain.yaml --resume

    # one GPU (bf16 autocast, fused AdamW and SDPA attention are automatic on CUDA)
    proximity train pretrain --config configs/pythia-70m-paper.yaml

    # 8 GPUs on one node (DDP; train.batch_size is the global batch)
    torchrun --standalone --nproc_per_node=8 -m proximity.training.cli pretrain \\
        --config configs/pythia-70m-paper.yaml
    # 2 nodes x 8 GPUs: run on each node, node_rank 0 and 1
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 -m proximity.training.cli pretrain \\
        --config configs/pythia-160m-paper.yaml
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from proximity.atomic import atomic_path
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training import distributed, phases, starts
from proximity.training.attention import use_causal_attention
from proximity.training.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from proximity.training.config import RunConfig
from proximity.training.data.batches import BatchPrefetcher
from proximity.training.evaluate import EvalSet, evaluate, evaluate_with_examples
from proximity.training.losses import IGNORE_INDEX, lm_loss, token_loss_sum
from proximity.training.memory import GIB, check_fits
from proximity.training.metrics_log import MetricsLog
from proximity.training.presets import flops_per_token, memory_shape
from proximity.training.schedule import CosineSchedule
from proximity.training.start_evals import StartEvalCache, evaluate_start
from proximity.training.throughput import ThroughputMeter, peak_flops_for


@dataclass
class RunResult:
    out_dir: Path
    step: int  # the global step reached
    total_steps: int
    train_loss: float  # the last step's training loss
    eval_losses: dict[str, float] = field(default_factory=dict)
    last_checkpoint: Path | None = None
    finished: bool = False  # False when max_steps_this_run stopped it early
    data_counts: dict[str, int] = field(default_factory=dict)  # SFT: examples kept, cut, ...


def configure_optimizer(
    model: torch.nn.Module, cfg: RunConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (as in nanoGPT and Pythia), fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.optim.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.optim.lr,
        betas=(cfg.optim.beta1, cfg.optim.beta2),
        eps=cfg.optim.eps,
        fused=device.type == "cuda",
    )


def uses_bf16(cfg: RunConfig, device: torch.device) -> bool:
    """bf16 autocast: when asked for, or with dtype auto on a GPU that has bf16 tensor cores
    (compute capability 8.0, Ampere, and later; older GPUs would fail or emulate it)."""
    if cfg.system.dtype == "auto":
        return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
    return cfg.system.dtype == "bf16"


def autocast_context(cfg: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if uses_bf16(cfg, device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_gpu_memory(
    cfg: RunConfig, model_config, micro: int, local_batch: int, ddp: bool, device_gib: float,
    device_name: str, bf16: bool,
) -> None:  # fmt: skip
    """Refuse, in one line naming train.micro_batch_size, a run whose estimated peak memory
    (training/memory.py) does not fit this GPU: better than an out-of-memory error after
    loading data and compiling."""
    check_fits(
        memory_shape(model_config), micro_batch=micro, per_rank_batch=local_batch,
        seq_len=cfg.model.seq_len, bf16=bf16, ddp=ddp, device_gib=device_gib,
        device=device_name,
    )  # fmt: skip


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_flops_for(torch.cuda.get_device_name(device))


def _params_finite(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _set_up_torch(cfg: RunConfig) -> None:
    if cfg.system.threads:
        torch.set_num_threads(cfg.system.threads)
    if cfg.system.deterministic:
        set_deterministic()
    # TF32 matmuls on Ampere+ for the fp32 parts; no effect on CPU.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def set_deterministic() -> None:
    """What bitwise-reproducible kernels need, CUDA included (PyTorch's reproducibility notes):
    cuBLAS needs a fixed workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts, so set
    before the first matmul on the GPU), cuDNN its deterministic algorithms without autotuning,
    and torch.use_deterministic_algorithms to refuse the nondeterministic kernels."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def load_optimizer_state(optimizer: torch.optim.AdamW, state: dict, device: torch.device) -> None:
    """Load AdamW state saved anywhere (CPU or GPU, fused or not) for THIS optimizer's kind.

    `load_state_dict` places each state tensor by the SAVED group's `fused` flag: a CPU
    checkpoint loaded into a fused CUDA AdamW would keep `step` on the CPU, which the fused
    kernel refuses. So the saved groups take this optimizer's flags before loading.
    """
    state = {**state, "param_groups": [dict(group) for group in state["param_groups"]]}
    for saved, current in zip(state["param_groups"], optimizer.param_groups, strict=True):
        for flag in ("fused", "foreach", "capturable"):
            if flag in current:
                saved[flag] = current[flag]
    optimizer.load_state_dict(state)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP without buffer broadcasts: GPT-NeoX's only buffers are its rotary frequencies,
    the same constants on every rank, so DDP's default (a broadcast before every forward,
    one extra NCCL call per micro-batch, inside no_sync too) would move nothing new."""
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        broadcast_buffers=False,
    )  # fmt: skip


@dataclass
class Run:
    """One phase set up and ready for its first step: what the loop, a step, an evaluation and
    a checkpoint read.

    `model` is what a step calls (DDP-wrapped and/or compiled); `raw_model` is what is saved and
    evaluated, never a wrapper. `resume` is the decision taken once for every rank: a resumed
    run neither evaluates nor checkpoints its first step again.
    """

    cfg: RunConfig
    info: distributed.DistInfo
    tokenizer: Tokenizer
    data: phases.TrainData
    start: starts.Start
    resume: bool
    model: torch.nn.Module
    raw_model: torch.nn.Module
    optimizer: torch.optim.AdamW
    schedule: CosineSchedule
    autocast: contextlib.AbstractContextManager
    total_steps: int  # the phase's final global step
    stop_step: int  # where this invocation stops (train.max_steps_this_run)
    micro: int  # rows per forward/backward
    accumulation: int  # micro-batches per optimizer step on this rank
    metrics: MetricsLog
    last_checkpoint: Path | None
    eval_losses: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.info.device

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def keep_steps(self) -> set[int]:
        """checkpoint.steps: saved whenever reached and never pruned."""
        return set(self.cfg.checkpoint.steps)

    def say(self, message: str) -> None:
        if self.info.is_main:
            print(message)

    def checkpoint_due(self, step: int) -> bool:
        every = self.cfg.checkpoint.every
        return (
            step in self.keep_steps or bool(every and step % every == 0) or step == self.stop_step
        )

    def evaluate_at(
        self, step: int, tokens: int, *, start: bool = False, examples: EvalSet | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Every held-out set's loss now, into eval_losses and metrics.jsonl. At the phase's
        `start` the losses may come from the start-evaluation cache (training/start_evals.py);
        with `examples`, that set's per-example losses too (returned), from the same pass when
        it is one of the eval sets."""
        scored = None
        if start:
            cache = StartEvalCache(phases.start_eval_dir(self.cfg))
            losses = evaluate_start(
                self.raw_model, self.data.eval_sets, cache,
                device=self.device, autocast=self.autocast, bf16=uses_bf16(self.cfg, self.device),
                write=self.info.is_main,
            )  # fmt: skip
        elif examples is not None:
            losses, scored = evaluate_with_examples(
                self.raw_model, self.data.eval_sets, examples, device=self.device,
                autocast=self.autocast,
            )  # fmt: skip
        else:
            losses = evaluate(
                self.raw_model, self.data.eval_sets, device=self.device, autocast=self.autocast
            )
        self.eval_losses.update(losses)
        for name, value in self.eval_losses.items():
            self.metrics.write(
                phase=self.cfg.phase, step=step, tokens=tokens, split="val", dataset=name,
                loss=value, lr=self.schedule.lr(min(step, self.total_steps - 1)),
            )  # fmt: skip
        return scored

    def checkpoint_at(self, step: int, tokens: int) -> None:
        """Weights, optimizer, schedule and every rank's generators, written by rank 0."""
        # Every rank checks (the weights are identical), so all of them stop together.
        if not _params_finite(self.raw_model):
            raise ProximityError(
                f"weights became non-finite at step {step}; stopped without saving. Last good "
                f"checkpoint: {self.last_checkpoint}. Lower optim.lr or raise optim.warmup_steps"
            )
        rng_per_rank = distributed.gather_objects(capture_rng(), self.info)
        if self.info.is_main:
            self.last_checkpoint = save_checkpoint(
                self.out_dir / "checkpoints",
                step,
                model=self.raw_model,
                optimizer=self.optimizer,
                state={
                    **starts.checkpoint_state(self.cfg, self.schedule, tokens),
                    "rng_per_rank": rng_per_rank,
                },
                config_yaml=self.cfg.to_yaml(),
                tokenizer=self.tokenizer,
                keep_last=self.cfg.checkpoint.keep_last,
                protected_steps=self.keep_steps,
            )
        distributed.barrier(self.info)


def train(cfg: RunConfig, *, resume: bool | None = False) -> RunResult:
    """Run (or resume) one phase as `cfg` describes; returns where it ended.

    `resume=None` resumes when rank 0 finds a checkpoint and starts fresh otherwise (grid
    workers: a killed attempt's node carries on), decided once for every rank."""
    info = distributed.setup(cfg.system.device, cfg.system.timeout_minutes)
    try:
        return _train(cfg, info, resume)
    finally:
        distributed.cleanup(info)


def _train(cfg: RunConfig, info: distributed.DistInfo, resume: bool | None) -> RunResult:
    """Set up, then the loop: one optimizer step per global step, logging, evaluating and
    checkpointing on their schedules; the end is evaluated by `_finish`."""
    run = set_up(cfg, info, resume)
    step, tokens = run.start.step, run.start.tokens
    if not run.resume and cfg.eval.every:
        # Where the phase starts from: the reference for forgetting and gains.
        run.evaluate_at(step, tokens, start=True)
    if not run.resume and step in run.keep_steps:
        run.checkpoint_at(step, tokens)

    progress = tqdm(
        total=run.total_steps, initial=step, unit="step", dynamic_ncols=True,
        disable=not (cfg.system.progress and info.is_main), desc=cfg.phase,
    )  # fmt: skip
    batches = BatchPrefetcher(run.data.batch, step, run.stop_step, pin=run.device.type == "cuda")
    meter = ThroughputMeter(
        lambda width: flops_per_token(run.raw_model.config, width),
        peak_flops(run.device),
        info.world_size,
    )
    loss = math.nan  # the last logged step's training loss
    try:
        while step < run.stop_step:
            lr = run.schedule.lr(step)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            inputs, targets = batches.get(step)
            # The host waits for the GPU only on logged steps (train.log_every).
            logged = (step + 1) % cfg.train.log_every == 0 or step + 1 == run.stop_step
            step_loss, grad_norm = train_step(run, inputs, targets, step, logged)
            width = inputs.shape[1]
            step += 1
            tokens += cfg.train.batch_size * width
            meter.add(cfg.train.batch_size * width, width)
            progress.update(1)

            if logged:
                loss = step_loss
                _log_train_step(run, meter, progress, step, tokens, loss, lr, grad_norm)
            if cfg.eval.every and step % cfg.eval.every == 0 and step < run.total_steps:
                with meter.pause():
                    run.evaluate_at(step, tokens)
            if run.checkpoint_due(step):
                with meter.pause():
                    run.checkpoint_at(step, tokens)
    finally:
        batches.close()
        progress.close()
    return _finish(run, step, tokens, loss)


# ---- set-up -------------------------------------------------------------------------------------


def set_up(cfg: RunConfig, info: distributed.DistInfo, resume: bool | None) -> Run:
    """Data, model, optimizer, schedule, batch geometry and metrics file of one phase.

    The order is part of the results: the model is built (seeded) before the optimizer, and a
    resumed run restores its generators after both, right before the wrappers.
    """
    _set_up_torch(cfg)
    tokenizer = load_tokenizer(cfg.data.tokenizer, data_dir=cfg.data.data_dir)
    data = _load_data(cfg, info, tokenizer)
    start, existing, resume = _starting_point(cfg, info, tokenizer, resume)
    model = start.model
    starts.check_vocab(model, tokenizer, cfg.model.init_from or cfg.model.preset)
    use_causal_attention(model)  # no mask, is_causal=True: eager and compiled alike
    model.to(info.device)
    model.train()
    total_steps = starts.total_steps(cfg, data, start)
    if not resume and start.step >= total_steps:
        raise ProximityError(
            f"model.init_from={cfg.model.init_from} is at step {start.step}, the run's final step "
            f"is {total_steps}: nothing left to train; start from an earlier checkpoint (e.g. one "
            f"of checkpoint.steps)"
        )
    schedule = start.schedule or starts.new_schedule(cfg, total_steps)
    optimizer = configure_optimizer(model, cfg, info.device)
    if start.optimizer_state is not None:
        load_optimizer_state(optimizer, start.optimizer_state, info.device)
    _restore_generators(start, info)
    wrapped = _wrap_for_training(model, cfg, info)
    autocast = autocast_context(cfg, info.device)
    if info.is_main:
        print(f"[{cfg.phase}] {start.description}; steps {start.step} -> {total_steps}")
    micro, accumulation = _micro_batches(cfg, info, model)
    resumed = resume and existing is not None
    metrics = _open_metrics(cfg, info, start.step, total_steps, resumed)
    stop_step = total_steps
    if cfg.train.max_steps_this_run is not None:
        stop_step = min(total_steps, start.step + cfg.train.max_steps_this_run)
    return Run(
        cfg=cfg, info=info, tokenizer=tokenizer, data=data, start=start, resume=resume,
        model=wrapped, raw_model=model, optimizer=optimizer, schedule=schedule,
        autocast=autocast, total_steps=total_steps, stop_step=stop_step, micro=micro,
        accumulation=accumulation, metrics=metrics,
        last_checkpoint=existing if resume else None,
    )  # fmt: skip


def _load_data(
    cfg: RunConfig, info: distributed.DistInfo, tokenizer: Tokenizer
) -> phases.TrainData:
    """The phase's prepared builds: a missing one is built by rank 0 while the others wait for
    its manifest file (no collective, so no process-group timeout during tokenisation)."""
    prepare = phases.sft_data if cfg.phase == "sft" else phases.pretraining_data
    data = prepare(cfg, tokenizer, info, progress=cfg.system.progress and info.is_main)
    if info.is_main:
        print(
            f"[{cfg.phase}] data: {data.description}; vocabulary {starts.describe_vocab(tokenizer)}"
        )
        for note in phases.substitute_notes(
            [cfg.data.train, *cfg.eval.datasets], cfg.data.data_dir
        ):
            print(f"[{cfg.phase}] note: {note}")
    return data


def _starting_point(
    cfg: RunConfig, info: distributed.DistInfo, tokenizer: Tokenizer, resume: bool | None
) -> tuple[starts.Start, Path | None, bool]:
    """(where the phase starts, the latest checkpoint in out_dir, whether it resumes).

    Rank 0 alone looks at the folder and every rank follows its decision: on several nodes a
    rank must never start fresh while another resumes (a shared filesystem may lag).
    """
    ckpt_root = Path(cfg.out_dir) / "checkpoints"
    existing = distributed.broadcast_object(
        latest_checkpoint(ckpt_root) if info.is_main else None, info
    )
    if resume is None:
        resume = existing is not None
    if resume and existing is not None:
        return starts.resume_start(cfg, load_checkpoint(existing), tokenizer), existing, resume
    if not resume and existing is not None:
        raise ProximityError(
            f"{cfg.out_dir} already has checkpoints; pass --resume to continue it, or --out "
            f"elsewhere"
        )
    return starts.initial_start(cfg, tokenizer), existing, resume


def _restore_generators(start: starts.Start, info: distributed.DistInfo) -> None:
    rng = start.rng
    if start.rng_per_rank and len(start.rng_per_rank) == info.world_size:
        rng = start.rng_per_rank[info.rank]  # each rank carries on its own generators
    if rng is not None:
        restore_rng(rng)


def _wrap_for_training(
    model: torch.nn.Module, cfg: RunConfig, info: distributed.DistInfo
) -> torch.nn.Module:
    if info.enabled:
        model = wrap_ddp(model, info.device)
    if cfg.system.compile:
        # Compile the DDP-wrapped model (PyTorch's recommended order): DDPOptimizer then splits
        # the graph at bucket boundaries so gradient all-reduce overlaps the backward pass.
        model = torch.compile(model)
    return model


def _micro_batches(
    cfg: RunConfig, info: distributed.DistInfo, model: torch.nn.Module
) -> tuple[int, int]:
    """(rows per micro-batch, micro-batches per step): global batch = world size x
    accumulation x micro-batch. On a GPU, refused here when the estimate does not fit."""
    local_batch = phases.local_batch_size(cfg, info)
    # A micro-batch is a memory cap: one larger than this rank's share is the whole share
    # (e.g. the SFT config's 8 on 16 GPUs, 4 rows each).
    micro = min(cfg.train.micro_batch_size or local_batch, local_batch)
    if local_batch % micro:
        raise ProximityError(
            f"train.micro_batch_size={micro} must divide the per-process batch {local_batch} "
            f"(train.batch_size / processes)"
        )
    device = info.device
    if device.type == "cuda":
        check_gpu_memory(
            cfg, model.config, micro, local_batch, info.enabled,
            torch.cuda.get_device_properties(device).total_memory / GIB,
            torch.cuda.get_device_name(device), uses_bf16(cfg, device),
        )  # fmt: skip
    return micro, local_batch // micro


def _open_metrics(
    cfg: RunConfig, info: distributed.DistInfo, start_step: int, total_steps: int, resumed: bool
) -> MetricsLog:
    """metrics.jsonl (rank 0 writes), cut to what this run will not write again, and the
    run's config.yaml beside it."""
    out_dir = Path(cfg.out_dir)
    metrics = MetricsLog(out_dir / "metrics.jsonl", enabled=info.is_main, tracking=cfg)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        if resumed:
            metrics.truncate_after(
                cfg.phase, start_step, redo_evals_at_step=start_step >= total_steps
            )
        else:
            metrics.truncate_after(cfg.phase, start_step - 1)
    return metrics


# ---- one step -----------------------------------------------------------------------------------


def train_step(
    run: Run, inputs: torch.Tensor, targets: torch.Tensor, step: int, logged: bool
) -> tuple[float, torch.Tensor | None]:
    """One optimizer step on this rank's rows of the global batch, in `run.accumulation`
    micro-batches; the learning rate is already set.

    Returns the loss averaged over ranks on logged steps (nan on the others, where reading it
    would make the host wait for the GPU) and the gradient norm before clipping (None without
    clipping; a device tensor, read only on logged steps).
    """
    cfg, info, device = run.cfg, run.info, run.device
    # One asynchronous copy of this rank's rows (pinned on CUDA); micro-batches are slices on
    # the device, and the trained-token count below never waits for the GPU.
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    # SFT: loss = sum of token losses / trained tokens of the GLOBAL batch. DDP averages
    # gradients over ranks, hence x world_size: the update is then
    # d(sum of token losses of the global batch) / (its trained tokens).
    token_mean_over_global_batch = cfg.phase == "sft"
    if token_mean_over_global_batch:
        trained = (targets != IGNORE_INDEX).sum()
        scale = info.world_size / distributed.all_reduce_sum(trained, info).clamp(min=1)
    loss_sum = torch.zeros((), device=device)
    for i in range(run.accumulation):
        rows = slice(i * run.micro, (i + 1) * run.micro)
        x, y = inputs[rows], targets[rows]
        # DDP would all-reduce gradients after every backward; only the last one needs it.
        sync = not info.enabled or i == run.accumulation - 1
        with contextlib.nullcontext() if sync else run.model.no_sync(), run.autocast:
            if token_mean_over_global_batch:
                loss = token_loss_sum(run.model, x, y) * scale
            else:
                loss = lm_loss(run.model, x, y) / run.accumulation
        loss.backward()
        loss_sum += loss.detach()

    # On logged steps the loss is checked before the update, so a bad step found there never
    # touches the weights. Between logged steps, a non-finite loss shows up at the next logged
    # step and the finite-weights check keeps it out of every checkpoint.
    loss_value = math.nan
    if logged:
        loss_value = float(distributed.all_reduce_mean(loss_sum, info))
        if not math.isfinite(loss_value):
            raise ProximityError(
                f"loss is {loss_value} at step {step + 1}: stopped. Last good checkpoint: "
                f"{run.last_checkpoint or 'none'}. Lower optim.lr or raise optim.warmup_steps, "
                f"then --resume"
            )
    norm = None
    if cfg.optim.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(run.raw_model.parameters(), cfg.optim.grad_clip)
    run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    return loss_value, norm


def _log_train_step(
    run: Run, meter: ThroughputMeter, progress: tqdm, step: int, tokens: int, loss: float,
    lr: float, grad_norm: torch.Tensor | None,
) -> None:  # fmt: skip
    """One training line in metrics.jsonl (and the progress bar), then a new meter window."""
    tokens_per_s, utilisation = meter.read()
    record = dict(
        phase=run.cfg.phase, step=step, tokens=tokens, split="train",
        dataset=run.cfg.data.train, loss=loss, lr=lr, tokens_per_s=round(tokens_per_s, 1),
    )  # fmt: skip
    if grad_norm is not None:  # before clipping
        record["grad_norm"] = round(float(grad_norm), 4)
    if utilisation is not None:
        record["mfu"] = round(utilisation, 4)
    run.metrics.write(**record)
    progress.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}")
    meter.restart()


def _finish(run: Run, step: int, tokens: int, loss: float) -> RunResult:
    """The final evaluation when the phase is done (and the per-example losses of SFT's
    target), then what the run reached."""
    finished = step >= run.total_steps
    if finished:
        examples = run.data.example_eval if run.info.is_main else None
        scored = run.evaluate_at(step, tokens, examples=examples)
        if scored is not None:
            _write_example_losses(run, *scored)
        run.say(
            f"[{run.cfg.phase}] done at step {step}: "
            + ", ".join(f"{name} val loss {value:.4f}" for name, value in run.eval_losses.items())
        )
    else:
        run.say(
            f"[{run.cfg.phase}] stopped at step {step}/{run.total_steps}; continue with --resume"
        )
    run.metrics.close()  # trackers: after the final evaluation (an exception leaves W&B to atexit)
    return RunResult(
        out_dir=run.out_dir,
        step=step,
        total_steps=run.total_steps,
        train_loss=loss,
        eval_losses=dict(run.eval_losses),
        last_checkpoint=run.last_checkpoint,
        finished=finished,
        data_counts=dict(run.data.counts),
    )


def _write_example_losses(run: Run, sums: np.ndarray, counts: np.ndarray) -> None:
    """val_examples.npz: the final model's loss per validation example (atomic), so the
    analysis can bootstrap the outcome over examples."""
    with atomic_path(run.out_dir / "val_examples.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, loss_sum=sums, tokens=counts)
