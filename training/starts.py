"""What differs between pretraining, midtraining and SFT, part 2: where each phase starts.

| phase    | starts from                                                                     |
|----------|---------------------------------------------------------------------------------|
| pretrain | fresh weights (or `model.init_from`'s weights), step 0, new AdamW and schedule   |
| midtrain | a pretraining checkpoint: weights, AdamW moments, schedule, step and RNG, to the |
|          | same final step; its batch size, sequence length, seed and tokenizer are kept    |
| sft      | a checkpoint's weights (same tokenizer); fresh AdamW and schedule, step 0        |
| --resume | this run's own latest checkpoint, exactly                                        |

The phase's data is in training/phases.py.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tokenizers import Tokenizer
from transformers import GPTNeoXForCausalLM
from transformers.utils import logging as hf_logging

from proximity.errors import ProximityError
from proximity.training.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from proximity.training.config import RunConfig
from proximity.training.phases import TrainData
from proximity.training.presets import model_config, padded_vocab_size
from proximity.training.schedule import CosineSchedule, warmup_steps_for


@dataclass
class Start:
    model: GPTNeoXForCausalLM
    optimizer_state: dict | None
    schedule: CosineSchedule | None  # None: the loop builds it from optim.* and total_steps
    step: int
    tokens: int
    rng: dict | None
    description: str
    rng_per_rank: list[dict] | None = None  # every rank's generators, when the run saved them


def _load_model(path: str | Path, revision: str | None = None) -> GPTNeoXForCausalLM:
    hf_logging.disable_progress_bar()  # its per-load bar would clutter ours
    try:
        # fp32 master weights whatever the file holds (Pythia hub weights are fp16).
        return GPTNeoXForCausalLM.from_pretrained(
            str(path), revision=revision, dtype=torch.float32, attn_implementation="sdpa"
        )
    except OSError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ProximityError(
            f"model.init_from={path!s}: not a checkpoint, a model folder or a reachable hub id "
            f"({first})"
        ) from None


def fresh_model(cfg: RunConfig, tokenizer: Tokenizer) -> GPTNeoXForCausalLM:
    config = model_config(
        cfg.model.preset,
        vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
        max_position_embeddings=max(2048, cfg.model.seq_len),
    )
    # Seeded here so the initial weights depend on train.seed only, not on what ran before.
    torch.manual_seed(cfg.train.seed)
    return GPTNeoXForCausalLM(config)


def check_vocab(model: GPTNeoXForCausalLM, tokenizer: Tokenizer, source: str) -> None:
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    if model.config.vocab_size < n:
        raise ProximityError(
            f"{source} has {model.config.vocab_size} embedding rows but data.tokenizer has {n} "
            f"tokens; use the tokenizer the model was trained with (data.tokenizer)"
        )
    if model.config.max_position_embeddings < 1:
        raise ProximityError(f"{source}: invalid max_position_embeddings")


def check_same_run(cfg: RunConfig, checkpoint: Checkpoint, tokenizer: Tokenizer) -> None:
    """Resuming or midtraining continues the checkpoint's run: its batch size, sequence length,
    seed and tokenizer fix the data position and the token counts, so a differing value is
    refused (one line naming the key and the value to use) instead of silently changing them."""
    state = checkpoint.state
    saved_seed = state.get("seed")
    if saved_seed is None:  # checkpoints written before the seed was recorded in state.pt
        saved_seed = _saved_config(checkpoint).get("train", {}).get("seed")
    for key, value, saved in (
        ("train.batch_size", cfg.train.batch_size, state.get("batch_size")),
        ("model.seq_len", cfg.model.seq_len, state.get("seq_len")),
        ("train.seed", cfg.train.seed, saved_seed),
    ):
        if saved is not None and value != saved:
            raise ProximityError(
                f"{key}={value} differs from {checkpoint.path}'s {saved}; a {cfg.phase} run "
                f"continues that run and must keep it (set {key}={saved})"
            )
    check_tokenizer(cfg, checkpoint, tokenizer)


def check_tokenizer(cfg: RunConfig, checkpoint: Checkpoint, tokenizer: Tokenizer) -> None:
    """The tokenizer saved beside the weights must be data.tokenizer (same vocabulary + merges)."""
    saved = checkpoint.model_dir / "tokenizer.json"
    if saved.exists() and Tokenizer.from_file(str(saved)).to_str() != tokenizer.to_str():
        raise ProximityError(
            f"data.tokenizer={cfg.data.tokenizer} is not the tokenizer {checkpoint.path} was "
            f"trained with; set data.tokenizer={saved}"
        )


def _saved_config(checkpoint: Checkpoint) -> dict[str, Any]:
    path = checkpoint.path / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def resume_start(cfg: RunConfig, checkpoint: Checkpoint, tokenizer: Tokenizer) -> Start:
    """`--resume`: everything from this run's own latest checkpoint."""
    state = checkpoint.state
    if state.get("phase") != cfg.phase:
        raise ProximityError(
            f"{checkpoint.path} was written by a {state.get('phase')} run, not {cfg.phase}; "
            f"use another --out or the matching command"
        )
    check_same_run(cfg, checkpoint, tokenizer)
    return _continue_from(checkpoint, f"resumed from {checkpoint.path} at step {checkpoint.step}")


def _continue_from(checkpoint: Checkpoint, description: str) -> Start:
    """Carry on a run exactly: weights, AdamW moments, LR schedule, step, tokens and RNG."""
    state = checkpoint.state
    return Start(
        model=_load_model(checkpoint.model_dir),
        optimizer_state=checkpoint.optimizer_state(),
        schedule=CosineSchedule.from_state_dict(state["schedule"]),
        step=checkpoint.step,
        tokens=int(state.get("tokens", 0)),
        rng=state.get("rng"),
        description=description,
        rng_per_rank=state.get("rng_per_rank"),
    )


def initial_start(cfg: RunConfig, tokenizer: Tokenizer) -> Start:
    """The start of a phase that is not being resumed."""
    init_from = cfg.model.init_from
    ours = resolve_checkpoint(init_from) if init_from else None
    if cfg.phase == "midtrain":
        if ours is not None:
            checkpoint = load_checkpoint(ours)
            state = checkpoint.state
            if state.get("phase") not in ("pretrain", "midtrain"):
                raise ProximityError(
                    f"model.init_from={init_from}: midtraining continues a pretraining "
                    f"checkpoint, this one is from {state.get('phase')}"
                )
            check_same_run(cfg, checkpoint, tokenizer)
            # The paper's protocol: same weights, AdamW moments, LR schedule and final step.
            return _continue_from(
                checkpoint, f"midtraining from {checkpoint.path} (step {checkpoint.step})"
            )
        if init_from is None:
            raise ProximityError(
                "midtraining needs model.init_from: a pretraining checkpoint folder "
                "(e.g. runs/pretrain/checkpoints/step-000200) or a hub model"
            )
        if cfg.train.start_step is None or cfg.train.steps is None:
            raise ProximityError(
                f"model.init_from={init_from} has no optimizer state or step: set "
                f"train.start_step (e.g. 3000 for revision step3000) and train.steps (final step)"
            )
        # A hub checkpoint (e.g. EleutherAI/pythia-70m @ step3000): weights only; the
        # schedule is rebuilt from optim.* and the AdamW moments start at zero.
        return Start(
            model=_load_model(init_from, cfg.model.revision),
            optimizer_state=None,
            schedule=None,
            step=cfg.train.start_step,
            tokens=cfg.train.start_step * cfg.train.batch_size * cfg.model.seq_len,
            rng=None,
            description=f"midtraining from {init_from}@{cfg.model.revision} "
            f"(step {cfg.train.start_step}, fresh optimizer)",
        )
    # pretrain / sft: weights only (or fresh), step 0, new optimizer and schedule.
    if init_from is None:
        if cfg.phase == "sft":
            print("note: sft without model.init_from trains a freshly initialised model")
        return Start(fresh_model(cfg, tokenizer), None, None, 0, 0, None, "fresh weights")
    if ours is not None:
        check_tokenizer(cfg, load_checkpoint(ours), tokenizer)
    model_dir = load_checkpoint(ours).model_dir if ours is not None else init_from
    return Start(
        model=_load_model(model_dir, None if ours else cfg.model.revision),
        optimizer_state=None,
        schedule=None,
        step=0,
        tokens=0,
        rng=None,
        description=f"weights from {model_dir}",
    )


def total_steps(cfg: RunConfig, data: TrainData, start: Start) -> int:
    """The last step of the run: fixed by the pretraining config and kept by midtraining."""
    if start.schedule is not None:
        total = start.schedule.total_steps
        if cfg.phase != "sft" and cfg.train.steps is not None and cfg.train.steps != total:
            raise ProximityError(
                f"train.steps={cfg.train.steps} but the checkpoint's run ends at step {total}; "
                f"midtraining keeps the final step (remove train.steps)"
            )
        return total
    if cfg.phase == "sft":
        return cfg.train.epochs * (data.steps_per_epoch or 0)
    if cfg.train.steps is not None:
        return cfg.train.steps
    if cfg.train.tokens is None:
        raise ProximityError(f"{cfg.phase} needs a length: set train.tokens or train.steps")
    return math.ceil(cfg.train.tokens / (cfg.train.batch_size * cfg.model.seq_len))


def new_schedule(cfg: RunConfig, total: int) -> CosineSchedule:
    warmup = warmup_steps_for(
        total, warmup_steps=cfg.optim.warmup_steps, warmup_fraction=cfg.optim.warmup_fraction
    )
    return CosineSchedule(cfg.optim.lr, cfg.optim.min_lr, warmup, total)


def describe_vocab(tokenizer: Tokenizer) -> str:
    n = tokenizer.get_vocab_size(with_added_tokens=True)
    return f"{n:,} tokens (model rows {padded_vocab_size(n):,})"


def checkpoint_state(cfg: RunConfig, schedule: CosineSchedule, tokens: int) -> dict[str, Any]:
    """What state.pt records besides the step and RNG (see training/checkpoint.py)."""
    return {
        "phase": cfg.phase,
        "tokens": tokens,
        "schedule": schedule.state_dict(),
        "batch_size": cfg.train.batch_size,
        "seq_len": cfg.model.seq_len,
        "seed": cfg.train.seed,
        "data": cfg.data.train,
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
    }
