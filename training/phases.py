"""What differs between pretraining, midtraining and SFT, part 1: their data.

The loop (training/loop.py) is the same for every phase. A phase supplies:

* `TrainData` (here): the batch for global step `step` (a pure function of the step, so a
  resumed run sees exactly the data an uninterrupted one would) and the held-out sets to
  evaluate;
* `Start` (training/starts.py): the model, optimizer state, LR schedule, step and token count
  to start from, checked against the checkpoint it continues.

| phase    | data                                 | starts from                                   |
|----------|--------------------------------------|-----------------------------------------------|
| pretrain | mixture sampler over `data.train`    | fresh weights (or `model.init_from`), step 0  |
| midtrain | the sampler over a *new* mixture     | a pretraining checkpoint: weights, AdamW      |
|          | (CPT: 100% specialised; control: C4) | moments, schedule and step, to the same end   |
| sft      | prompt/response pairs, epochs        | a checkpoint's weights; fresh AdamW, schedule |
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer

from proximity.cache import cache_dir as proximity_cache_dir
from proximity.data import resolve
from proximity.errors import ProximityError
from proximity.specs import parse_mixture
from proximity.training.config import RunConfig
from proximity.training.data.sampler import MixtureSampler, PackedSequences
from proximity.training.data.sft_prepared import prepare_sft
from proximity.training.data.tokenized import SPLIT_SEED, tokenize_dataset
from proximity.training.distributed import DistInfo
from proximity.training.evaluate import EvalSet, packed_eval_set, sft_eval_set
from proximity.training.losses import Batch, packed_batch, sft_batch


@dataclass
class TrainData:
    batch: Callable[[int], Batch]  # global step -> this rank's (inputs, targets), on CPU
    eval_sets: list[EvalSet]
    steps_per_epoch: int | None = None  # SFT only
    description: str = ""
    # SFT only: example counts of the target (kept, truncated, dropped) for results.csv, and
    # the target's validation set, scored per example at the end (val_examples.npz).
    counts: dict[str, int] = field(default_factory=dict)
    example_eval: EvalSet | None = None


def cache_dir(cfg: RunConfig) -> Path:
    if cfg.data.cache_dir:
        return Path(cfg.data.cache_dir).expanduser()
    return proximity_cache_dir() / "tokens"


def start_eval_dir(cfg: RunConfig) -> Path:
    """Where start-of-phase losses are remembered (training/start_evals.py): beside the token
    cache, so a grid's runs share them (a grid folder's own; outside a grid, the user cache's)."""
    return cache_dir(cfg).parent / "start-evaluations"


def local_batch_size(cfg: RunConfig, info: DistInfo) -> int:
    if cfg.train.batch_size % info.world_size:
        raise ProximityError(
            f"train.batch_size={cfg.train.batch_size} must be divisible by the number of "
            f"processes ({info.world_size})"
        )
    return cfg.train.batch_size // info.world_size


# ---- data -----------------------------------------------------------------------------------


def tokenized_build(cfg: RunConfig, spec: str, tokenizer: Tokenizer, progress: bool, build: bool):
    """A dataset's build: rank 0 makes it if missing, the other ranks wait for its manifest."""
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
    notes = []
    for spec in specs:
        for part in parse_mixture(spec).datasets:
            info = resolve(part, data_dir=data_dir).info
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
        build = tokenized_build(cfg, name, tokenizer, progress, build=info.is_main)
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
    mixture = parse_mixture(cfg.data.train)
    components = [(part.canonical(), weight) for part, weight in mixture.components]
    sources = []
    for spec, _ in components:
        tokens = tokenized_build(cfg, spec, tokenizer, progress, build=info.is_main).train
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
    return resolve(spec, data_dir=data_dir).info.mask_prompt


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


def sft_build(cfg: RunConfig, tokenizer: Tokenizer, build: bool):
    """The SFT target's prepared examples: rank 0 builds them if missing, the others wait.

    Shared through `data.cache_dir` by every rank, and by every SFT run of a grid on the target.
    """
    target = cfg.data.train
    if parse_mixture(target).is_mixture:
        raise ProximityError(f"data.train={target!r}: SFT takes one target dataset, not a mixture")
    mask_prompt = cfg.data.mask_prompt
    if mask_prompt is None:
        mask_prompt = _mask_prompt_default(target, cfg.data.data_dir)
    return prepare_sft(
        target,
        tokenizer,
        cache_dir=cache_dir(cfg),
        seq_len=cfg.model.seq_len,
        mask_prompt=mask_prompt,
        data_dir=Path(cfg.data.data_dir) if cfg.data.data_dir else None,
        n_docs=cfg.data.n_docs,
        val_fraction=cfg.data.sft_val_fraction,
        val_docs=cfg.data.sft_val_docs,
        seed=SPLIT_SEED,
        build=build,
    )


def sft_data(cfg: RunConfig, tokenizer: Tokenizer, info: DistInfo, progress: bool) -> TrainData:
    target = cfg.data.train
    prepared = sft_build(cfg, tokenizer, build=info.is_main)
    train, val = prepared.train, prepared.val
    mask_prompt = prepared.manifest["key"]["mask_prompt"]
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
    # The per-example losses need every validation example; when eval.max_batches already
    # covers them, the end's one pass over the target serves both (evaluate_with_examples).
    whole_target = sft_eval_set(target, val, cfg.eval.batch_size, None)
    scores_every_example = (
        cfg.eval.max_batches is None or len(val) <= cfg.eval.batch_size * cfg.eval.max_batches
    )
    # A forgetting set with the target's own name would collide with the SFT split above.
    others = _packed_eval_sets(cfg, cfg.eval.datasets, tokenizer, info, progress, skip={target})
    return TrainData(
        batch=_EpochBatches(train, cfg.train.batch_size, cfg.train.seed, steps_per_epoch, info),
        eval_sets=[target_eval, *others],
        steps_per_epoch=steps_per_epoch,
        description=f"{target} ({n_train:,} train / {len(val):,} val examples, "
        f"prompt {'masked' if mask_prompt else 'in the loss'})",
        counts={
            "train_examples": n_train,
            "val_examples": len(val),
            "truncated": train.n_truncated + val.n_truncated,
            "dropped": train.n_dropped + val.n_dropped,
            "steps_per_epoch": steps_per_epoch,
        },
        example_eval=target_eval if scores_every_example else whole_target,
    )
