"""The training loop: one visible loop for pretraining, midtraining and SFT of GPT-NeoX models.

Everything a phase changes lives in training/phases.py (its data) and training/starts.py (where
it starts); this file is the loop itself, in the spirit of nanoGPT's train.py.

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
    torchrun --standalone --nproc_per_node=8 -m training.cli pretrain \\
        --config configs/pythia-70m-paper.yaml
    # 2 nodes x 8 GPUs: run on each node, node_rank 0 and 1
    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \\
        --rdzv_endpoint=HOST:29500 -m training.cli pretrain \\
        --config configs/pythia-160m-paper.yaml
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from proximity.atomic import atomic_path
from proximity.errors import ProximityError
from training import distributed, phases, starts
from training.attention import use_causal_attention
from training.batches import BatchPrefetcher
from training.checkpoint import (
    capture_rng,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from training.config import RunConfig
from training.evaluate import evaluate, example_losses
from training.hardware import peak_flops_for
from training.losses import IGNORE_INDEX, lm_loss, token_loss_sum
from training.memory import GIB, check_fits
from training.metrics_log import MetricsLog
from training.presets import flops_per_token, memory_shape


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


def mfu(flops_per_token: float, tokens_per_s: float, world_size: int, peak: float) -> float:
    """Model FLOPs utilisation of ONE GPU: the global throughput shared over world_size GPUs."""
    return flops_per_token * tokens_per_s / world_size / peak


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
    import os

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
    from proximity.tokenizer import load_tokenizer

    _set_up_torch(cfg)
    device, main = info.device, info.is_main
    out_dir = Path(cfg.out_dir)
    ckpt_root = out_dir / "checkpoints"
    say = print if main else (lambda *a, **k: None)

    # ---- data: prepared builds; a missing one is built by rank 0 while the others wait for its
    # manifest file (no collective, so no process-group timeout during tokenisation) -----------
    tokenizer = load_tokenizer(cfg.data.tokenizer, data_dir=cfg.data.data_dir)
    prepare = phases.sft_data if cfg.phase == "sft" else phases.pretraining_data
    data = prepare(cfg, tokenizer, info, progress=cfg.system.progress and main)
    say(f"[{cfg.phase}] data: {data.description}; vocabulary {starts.describe_vocab(tokenizer)}")
    if main:
        for note in phases.substitute_notes(
            [cfg.data.train, *cfg.eval.datasets], cfg.data.data_dir
        ):
            say(f"[{cfg.phase}] note: {note}")

    # ---- model, optimizer, schedule: fresh, from init_from, or resumed --------------------------
    # Rank 0 alone looks at the folder and every rank follows its decision: on several nodes a
    # rank must never start fresh while another resumes (a shared filesystem may lag).
    existing = distributed.broadcast_object(latest_checkpoint(ckpt_root) if main else None, info)
    if resume is None:
        resume = existing is not None
    if resume and existing is not None:
        start = starts.resume_start(cfg, load_checkpoint(existing), tokenizer)
    else:
        if not resume and existing is not None:
            raise ProximityError(
                f"{out_dir} already has checkpoints; pass --resume to continue it, or --out "
                f"elsewhere"
            )
        start = starts.initial_start(cfg, tokenizer)
    model = start.model
    starts.check_vocab(model, tokenizer, cfg.model.init_from or cfg.model.preset)
    use_causal_attention(model)  # no mask, is_causal=True: eager and compiled alike
    model.to(device)
    model.train()
    total_steps = starts.total_steps(cfg, data, start)
    if not resume and start.step >= total_steps:
        raise ProximityError(
            f"model.init_from={cfg.model.init_from} is at step {start.step}, the run's final step "
            f"is {total_steps}: nothing left to train; start from an earlier checkpoint (e.g. one "
            f"of checkpoint.steps)"
        )
    schedule = start.schedule or starts.new_schedule(cfg, total_steps)
    optimizer = configure_optimizer(model, cfg, device)
    if start.optimizer_state is not None:
        load_optimizer_state(optimizer, start.optimizer_state, device)
    rng = start.rng
    if start.rng_per_rank and len(start.rng_per_rank) == info.world_size:
        rng = start.rng_per_rank[info.rank]  # each rank carries on its own generators
    if rng is not None:
        restore_rng(rng)
    raw_model = model  # what we save and evaluate: never the compiled or DDP wrapper
    if info.enabled:
        model = wrap_ddp(model, device)
    if cfg.system.compile:
        # Compile the DDP-wrapped model (PyTorch's recommended order): DDPOptimizer then splits
        # the graph at bucket boundaries so gradient all-reduce overlaps the backward pass.
        model = torch.compile(model)
    autocast = autocast_context(cfg, device)
    say(f"[{cfg.phase}] {start.description}; steps {start.step} -> {total_steps}")

    # ---- batch geometry: global batch = world size x accumulation x micro-batch --------------
    local_batch = phases.local_batch_size(cfg, info)
    # A micro-batch is a memory cap: one larger than this rank's share is the whole share
    # (e.g. the SFT config's 8 on 16 GPUs, 4 rows each).
    micro = min(cfg.train.micro_batch_size or local_batch, local_batch)
    if local_batch % micro:
        raise ProximityError(
            f"train.micro_batch_size={micro} must divide the per-process batch {local_batch} "
            f"(train.batch_size / processes)"
        )
    accumulation = local_batch // micro
    if device.type == "cuda":
        check_gpu_memory(
            cfg, raw_model.config, micro, local_batch, info.enabled,
            torch.cuda.get_device_properties(device).total_memory / GIB,
            torch.cuda.get_device_name(device), uses_bf16(cfg, device),
        )  # fmt: skip
    # Tokens (and FLOPs) a step processes follow the batch's width: seq_len for packed
    # pretraining batches, the longest example (rounded up) for SFT batches.
    step_flops_per_token = functools.cache(lambda width: flops_per_token(raw_model.config, width))

    peak = peak_flops(device)
    # SFT: loss = sum of token losses / trained tokens of the GLOBAL batch (see step_loss).
    token_mean_over_global_batch = cfg.phase == "sft"

    # ---- bookkeeping -----------------------------------------------------------------------
    metrics = MetricsLog(out_dir / "metrics.jsonl", enabled=main, tracking=cfg)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        if resume and existing is not None:
            metrics.truncate_after(
                cfg.phase, start.step, redo_evals_at_step=start.step >= total_steps
            )
        else:
            metrics.truncate_after(cfg.phase, start.step - 1)
    step, tokens = start.step, start.tokens
    stop_step = total_steps
    if cfg.train.max_steps_this_run is not None:
        stop_step = min(total_steps, step + cfg.train.max_steps_this_run)
    keep_steps = set(cfg.checkpoint.steps)
    last_checkpoint = existing if resume else None
    eval_losses: dict[str, float] = {}
    loss_value = math.nan
    paused = 0.0  # seconds of evaluation and checkpointing in the current throughput window

    def run_eval() -> None:
        nonlocal paused
        began = time.perf_counter()
        eval_losses.update(evaluate(raw_model, data.eval_sets, device=device, autocast=autocast))
        for name, value in eval_losses.items():
            metrics.write(
                phase=cfg.phase, step=step, tokens=tokens, split="val", dataset=name,
                loss=value, lr=schedule.lr(min(step, total_steps - 1)),
            )  # fmt: skip
        paused += time.perf_counter() - began

    def checkpoint() -> None:
        nonlocal last_checkpoint, paused
        began = time.perf_counter()
        # Every rank checks (the weights are identical), so all of them stop together.
        if not _params_finite(raw_model):
            raise ProximityError(
                f"weights became non-finite at step {step}; stopped without saving. Last good "
                f"checkpoint: {last_checkpoint}. Lower optim.lr or raise optim.warmup_steps"
            )
        rng_per_rank = distributed.gather_objects(capture_rng(), info)
        if main:
            last_checkpoint = save_checkpoint(
                ckpt_root,
                step,
                model=raw_model,
                optimizer=optimizer,
                state={
                    **starts.checkpoint_state(cfg, schedule, tokens),
                    "rng_per_rank": rng_per_rank,
                },
                config_yaml=cfg.to_yaml(),
                tokenizer=tokenizer,
                keep_last=cfg.checkpoint.keep_last,
                protected_steps=keep_steps,
            )
        distributed.barrier(info)
        paused += time.perf_counter() - began

    if not resume and step == start.step and cfg.eval.every:
        run_eval()  # where the phase starts from: the reference for forgetting and gains
    if not resume and step in keep_steps:
        checkpoint()

    progress = tqdm(
        total=total_steps, initial=step, unit="step", dynamic_ncols=True,
        disable=not (cfg.system.progress and main), desc=cfg.phase,
    )  # fmt: skip
    batches = BatchPrefetcher(data.batch, step, stop_step, pin=device.type == "cuda")
    window_start, window_tokens, window_flops, paused = time.perf_counter(), 0, 0.0, 0.0

    # ---- the loop ------------------------------------------------------------------------------
    try:
        while step < stop_step:
            lr = schedule.lr(step)
            for group in optimizer.param_groups:
                group["lr"] = lr

            inputs, targets = batches.get(step)
            width = inputs.shape[1]
            step_tokens = cfg.train.batch_size * width
            # One asynchronous copy of this rank's rows (pinned on CUDA); micro-batches are
            # slices on the device, and the trained-token count below never waits for the GPU.
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if token_mean_over_global_batch:
                # DDP averages gradients over ranks, hence x world_size: the update is then
                # d(sum of token losses of the global batch) / (its trained tokens).
                trained = (targets != IGNORE_INDEX).sum()
                global_trained = distributed.all_reduce_sum(trained, info).clamp(min=1)
                scale = info.world_size / global_trained
            loss_sum = torch.zeros((), device=device)
            for i in range(accumulation):
                rows = slice(i * micro, (i + 1) * micro)
                x, y = inputs[rows], targets[rows]
                # DDP would all-reduce gradients after every backward; only the last one needs it.
                sync = not info.enabled or i == accumulation - 1
                with contextlib.nullcontext() if sync else model.no_sync(), autocast:
                    if token_mean_over_global_batch:
                        loss = token_loss_sum(model, x, y) * scale
                    else:
                        loss = lm_loss(model, x, y) / accumulation
                loss.backward()
                loss_sum += loss.detach()

            # The host waits for the GPU only on logged steps (train.log_every); there the loss
            # is checked before the update, so a bad step found there never touches the
            # weights. Between logged steps, a non-finite loss shows up at the next logged step
            # and the finite-weights check keeps it out of every checkpoint.
            logged = (step + 1) % cfg.train.log_every == 0 or step + 1 == stop_step
            if logged:
                loss_value = float(distributed.all_reduce_mean(loss_sum, info))
                if not math.isfinite(loss_value):
                    raise ProximityError(
                        f"loss is {loss_value} at step {step + 1}: stopped. Last good "
                        f"checkpoint: {last_checkpoint or 'none'}. Lower optim.lr or raise "
                        f"optim.warmup_steps, then --resume"
                    )
            if cfg.optim.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += step_tokens
            window_tokens += step_tokens
            window_flops += step_tokens * step_flops_per_token(width)
            progress.update(1)

            if logged:
                # Throughput and MFU count training time only: evaluation and checkpoint
                # saving inside the window are subtracted.
                elapsed = time.perf_counter() - window_start - paused
                tokens_per_s = window_tokens / elapsed if elapsed > 0 else 0.0
                record = dict(
                    phase=cfg.phase, step=step, tokens=tokens, split="train",
                    dataset=cfg.data.train, loss=loss_value, lr=lr,
                    tokens_per_s=round(tokens_per_s, 1),
                )  # fmt: skip
                if cfg.optim.grad_clip > 0:  # before clipping; read on logged steps only
                    record["grad_norm"] = round(float(norm), 4)
                if peak and window_tokens:
                    mean_flops_per_token = window_flops / window_tokens
                    record["mfu"] = round(
                        mfu(mean_flops_per_token, tokens_per_s, info.world_size, peak), 4
                    )
                metrics.write(**record)
                progress.set_postfix(
                    loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_s:,.0f}", lr=f"{lr:.2e}"
                )
                window_start, window_tokens, window_flops = time.perf_counter(), 0, 0.0
                paused = 0.0

            if cfg.eval.every and step % cfg.eval.every == 0 and step < total_steps:
                run_eval()
            every = cfg.checkpoint.every
            if step in keep_steps or (every and step % every == 0) or step == stop_step:
                checkpoint()
    finally:
        batches.close()
        progress.close()

    finished = step >= total_steps
    if finished:
        run_eval()
        if main and data.example_eval is not None:
            _write_example_losses(out_dir, raw_model, data.example_eval, device, autocast)
        say(
            f"[{cfg.phase}] done at step {step}: "
            + ", ".join(f"{name} val loss {value:.4f}" for name, value in eval_losses.items())
        )
    else:
        say(f"[{cfg.phase}] stopped at step {step}/{total_steps}; continue with --resume")
    metrics.close()  # trackers: after the final evaluation (an exception leaves W&B to atexit)
    return RunResult(
        out_dir=out_dir,
        step=step,
        total_steps=total_steps,
        train_loss=loss_value,
        eval_losses=dict(eval_losses),
        last_checkpoint=last_checkpoint,
        finished=finished,
        data_counts=dict(data.counts),
    )


def _write_example_losses(out_dir: Path, model, eval_set, device, autocast) -> None:
    """val_examples.npz: the final model's loss per validation example (atomic), so the
    analysis can bootstrap the outcome over examples."""
    sums, counts = example_losses(model, eval_set, device=device, autocast=autocast)
    with atomic_path(out_dir / "val_examples.npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, loss_sum=sums, tokens=counts)
