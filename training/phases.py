"""What differs between pretraining, midtraining and SFT: their data and where they start.

The loop (training/loop.py) is the same for every phase. A phase supplies:

* `TrainData`: the batch for global step `step` (a pure function of the step, so a resumed run
  sees exactly the data an uninterrupted one would) and the held-out sets to evaluate;
* `Start`: the model, optimizer state, LR schedule, step and token count to start from.

| phase    | data                                 | starts from                                   |
|----------|--------------------------------------|-----------------------------------------------|
| pretrain | mixture sampler over `data.train`    | fresh weights (or `model.init_from`), step 0  |
| midtrain | the sampler over a *new* mixture     | a pretraining checkpoint: weights, AdamW      |
|          | (CPT: 100% specialised; control: C4) | moments, schedule and step, to the same end   |
| sft      | prompt/response pairs, epochs        | a checkpoint's weights; fresh AdamW, schedule |
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from transformers import GPTNeoXForCausalLM

from proximity.errors import ProximityError
from proximity.specs import parse_mixture
from training.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint
from training.config import RunConfig
from training.distributed import DistInfo
from training.evaluate import Batch, EvalSet, packed_batch, packed_eval_set, sft_batch, sft_eval_set
from training.presets import model_config, padded_vocab_size
from training.schedule import CosineSchedule, warmup_steps_for
from training.tokenized import SPLIT_SEED


@dataclass
class TrainData:
    batch: Callable[[int], Batch]  # global step -> this rank's (inputs, targets), on CPU
    eval_sets: list[EvalSet]
    steps_per_epoch: int | None = None  # SFT only
    description: str = ""


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


def cache_dir(cfg: RunConfig) -> Path:
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser()
    from proximity.cache import cache_dir as proximity_cache_dir

    return proximity_cache_dir() / "tokens"


def local_batch_size(cfg: RunConfig, info: DistInfo) -> int:
    if cfg.train.batch_size % info.world_size:
        raise ProximityError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by the number of "
            f"processes ({info.world_size})"
        )
    return cfg.train.batch_size // info.world_size


# ---- data -----------------------------------------------------------------------------------


def _tokenized(cfg: RunConfig, spec: str, tokenizer: Tokenizer, progress: bool, build: bool):
    """A dataset's build: rank 0 makes it if missing, the other ranks wait for its manifest."""
    from training.tokenized import tokenize_dataset

    return tokenize_dataset(
        spec,
        tokenizer,
        cache_dir=cache_dir(cfg),
        data_dir=Path(cfg.data.data_dir) if cfg.data.data_dir else None,
        n_docs=cfg.data.n_docs,
        max_chars=cfg.data.max_chars,
        val_fraction=cfg.data.val_fraction,
        seed=SPLIT_SEED,
        progress=progress,
        workers=cfg.data.prepare_workers,
        build=build,
    )


def substitute_notes(specs: list[str], data_dir: str | None) -> list[str]:
    """Local stand-ins for hub datasets (e.g. stdlib code for StarCoder): say so, once each."""
    from proximity.data import describe_source

    notes = []
    for spec in specs:
        for part in parse_mixture(spec).datasets:
            info = describe_source(part, data_dir=data_dir)
            if info.substitute:
                notes.append(f"{part}: {info.substitute}")
    return list(dict.fromkeys(notes))


def _packed_eval_sets(
    cfg: RunConfig,
    specs: list[str],
    tokenizer: Tokenizer,
    info: DistInfo,
    progress: bool,
    skip: set[str],
) -> list[EvalSet]:
    from training.sampler import PackedSequences

    sets = []
    for spec in specs:
        mixture = parse_mixture(spec)
        if mixture.is_mixture:
            raise ProximityError(
                f"eval.datasets: {spec!r} is a mixture; list its parts "
                f"({', '.join(str(part) for part in mixture.datasets)}) separately"
            )
        name = mixture.canonical()
        if name in skip:
            continue
        skip.add(name)
        build = _tokenized(cfg, name, tokenizer, progress, build=info.is_main)
        packed = PackedSequences(build.val, cfg.model.seq_len)
        if len(packed) == 0:
            raise ProximityError(
                f"{name}: its validation split is shorter than one sequence "
                f"(model.seq_len={cfg.model.seq_len}); raise data.val_fraction or data.n_docs"
            )
        sets.append(packed_eval_set(name, packed, cfg.eval.batch_size, cfg.eval.max_batches))
    return sets


def pretraining_data(
    cfg: RunConfig, tokenizer: Tokenizer, info: DistInfo, progress: bool
) -> TrainData:
    """Pretrain and midtrain: packed sequences mixed by weight, deterministic in (seed, step)."""
    from training.sampler import MixtureSampler, PackedSequences

    mixture = parse_mixture(cfg.data.train)
    components = [(part.canonical(), weight) for part, weight in mixture.components]
    sources = []
    for spec, _ in components:
        tokens = _tokenized(cfg, spec, tokenizer, progress, build=info.is_main).train
        packed = PackedSequences(tokens, cfg.model.seq_len)
        if len(packed) == 0:
            raise ProximityError(
                f"{spec}: fewer tokens than one sequence (model.seq_len={cfg.model.seq_len}); "
                f"raise data.n_docs or lower model.seq_len"
            )
        sources.append(packed)
    sampler = MixtureSampler(sources, [w for _, w in components], seed=cfg.train.seed)
    batch_size = cfg.train.batch_size

    def batch(step: int) -> Batch:
        rows = sampler.batch(step, batch_size, rank=info.rank, world_size=info.world_size)
        return packed_batch(torch.as_tensor(rows, dtype=torch.long))

    own = [spec for spec, _ in components]
    eval_sets = _packed_eval_sets(cfg, own + cfg.eval.datasets, tokenizer, info, progress, set())
    sizes = ", ".join(
        f"{spec} ({len(s):,} seq)" for (spec, _), s in zip(components, sources, strict=True)
    )
    return TrainData(batch=batch, eval_sets=eval_sets, description=sizes)


def _mask_prompt_default(spec: str, data_dir: str | None) -> bool:
    """The registry says which targets mask their prompt (the paper: GSM8K)."""
    from proximity.data import describe_source

    return describe_source(spec, data_dir=data_dir).mask_prompt


class _EpochBatches:
    """SFT batches by global step: epoch = step // steps_per_epoch, reshuffled per epoch.

    Keeps the current epoch's iterator so consecutive steps cost one `next()`; a jump (resume)
    rebuilds the iterator and skips ahead, which is what makes resuming exact.
    """

    def __init__(self, split, batch_size: int, seed: int, steps_per_epoch: int, info: DistInfo):
        self.split, self.batch_size, self.seed = split, batch_size, seed
        self.steps_per_epoch, self.info = steps_per_epoch, info
        self._iterator: Iterator | None = None
        self._next_step = -1

    def __call__(self, step: int) -> Batch:
        if step != self._next_step or self._iterator is None:
            epoch, index = divmod(step, self.steps_per_epoch)
            self._iterator = iter(self.split.batches(self.batch_size, epoch=epoch, seed=self.seed))
            for _ in range(index):
                next(self._iterator)
        input_ids, labels = next(self._iterator)
        self._next_step = step + 1
        if (step + 1) % self.steps_per_epoch == 0:
            self._iterator = None  # the next step starts a new epoch (a new shuffle)
        # Every rank draws the same global batch and keeps its own slice.
        per_rank = self.batch_size // self.info.world_size
        rows = slice(self.info.rank * per_rank, (self.info.rank + 1) * per_rank)
        return sft_batch(
            torch.as_tensor(input_ids[rows], dtype=torch.long),
            torch.as_tensor(labels[rows], dtype=torch.long),
        )


def sft_data(cfg: RunConfig, tokenizer: Tokenizer, info: DistInfo, progress: bool) -> TrainData:
    from training.sft_data import build_sft_data

    target = cfg.data.train
    if parse_mixture(target).is_mixture:
        raise ProximityError(f"data.train={target!r}: SFT takes one target dataset, not a mixture")
    mask_prompt = cfg.data.mask_prompt
    if mask_prompt is None:
        mask_prompt = _mask_prompt_default(target, cfg.data.data_dir)
    train, val = build_sft_data(
        target,
        tokenizer,
        seq_len=cfg.model.seq_len,
        mask_prompt=mask_prompt,
        data_dir=Path(cfg.data.data_dir) if cfg.data.data_dir else None,
        n_docs=cfg.data.n_docs,
        val_fraction=cfg.data.sft_val_fraction,
        seed=SPLIT_SEED,
    )
    n_train = len(train)
    steps_per_epoch = n_train // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise ProximityError(
            f"{target}: {n_train} training examples is fewer than train.batch_size="
            f"{cfg.train.batch_size}; lower train.batch_size or raise data.n_docs"
        )
    if len(val) == 0:
        raise ProximityError(f"{target}: empty validation split; raise data.n_docs")
    local_batch_size(cfg, info)
    target_eval = sft_eval_set(target, val, cfg.eval.batch_size, cfg.eval.max_batches)
    # A forgetting set with the target's own name would collide with the SFT split above.
    others = _packed_eval_sets(cfg, cfg.eval.datasets, tokenizer, info, progress, skip={target})
    return TrainData(
        batch=_EpochBatches(train, cfg.train.batch_size, cfg.train.seed, steps_per_epoch, info),
        eval_sets=[target_eval, *others],
        steps_per_epoch=steps_per_epoch,
        description=f"{target} ({n_train:,} train / {len(val):,} val examples, "
        f"prompt {'masked' if mask_prompt else 'in the loss'})",
    )


# ---- where a phase starts ------------------------------------------------------------------


def _load_model(path: str | Path, revision: str | None = None) -> GPTNeoXForCausalLM:
    from transformers.utils import logging as hf_logging

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
    import yaml

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
