"""Run configuration: typed dataclasses that round-trip to YAML, with `key.sub=value` overrides.

One `RunConfig` describes one phase of one run (pretrain, midtrain or sft). The comment above each
field is its help text. Every problem names the field to fix, e.g.
`optim.lr: expected a number, got 'fast'` or `unknown config key 'optim.lrr' (optim has: lr, ...)`.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from proximity.atomic import write_text_atomic
from proximity.errors import ProximityError

Phase = Literal["pretrain", "midtrain", "sft"]


@dataclass
class ModelConfig:
    # Preset shape from training/presets.py (14m, 31m, 70m, 160m, 410m, 1b, micro-*).
    preset: str = "micro-2l-128"
    # Start from weights: one of our checkpoint folders, a Hugging Face model folder, or a hub id
    # such as EleutherAI/pythia-70m. Midtraining needs one of our checkpoints (or train.start_step).
    init_from: str | None = None
    # Hub revision for init_from, e.g. step3000 for an intermediate Pythia checkpoint.
    revision: str | None = None
    # Tokens per training sequence.
    seq_len: int = 256


@dataclass
class DataConfig:
    # Training data spec: a registry name, a file, a hub id, or a mixture such as
    # c4:0.8+starcoder:0.2. For sft it is the target dataset (e.g. gsm8k).
    train: str = "c4"
    # Tokenizer: pythia, a tokenizer.json, a folder, or a hub name.
    tokenizer: str = "pythia"
    # Folder of local data files (else $PROXIMITY_DATA_DIR, else the hub).
    data_dir: str | None = None
    # Where tokenised datasets are read from, and built when missing (default:
    # $PROXIMITY_CACHE_DIR/tokens); `proximity train prepare --out` writes there.
    cache_dir: str | None = None
    # Processes that tokenise a missing dataset on rank 0 (the bytes are the same for any).
    prepare_workers: int = 1
    # Read at most this many documents per dataset (None = all).
    n_docs: int | None = None
    # Cut each document to this many characters before tokenising (None = no cut).
    max_chars: int | None = None
    # Fraction of documents held out for validation; training never sees them. Keep it fixed
    # across a grid: it decides which C4 documents the forgetting loss is measured on.
    val_fraction: float = 0.05
    # SFT only: fraction of the target's examples held out (the in-domain validation loss).
    sft_val_fraction: float = 0.1
    # SFT only: hold out exactly this many examples instead (None: use sft_val_fraction). A
    # count keeps the outcome's precision the same across targets of different sizes.
    sft_val_docs: int | None = None
    # SFT only: mask the prompt out of the loss (None = the target's default: on for gsm8k).
    mask_prompt: bool | None = None


@dataclass
class OptimConfig:
    # Peak learning rate.
    lr: float = 6e-4
    # Learning rate at the end of the cosine decay.
    min_lr: float = 6e-5
    # Warmup as a fraction of the phase's steps (the paper: 0.1).
    warmup_fraction: float = 0.1
    # Warmup in steps; overrides warmup_fraction when set.
    warmup_steps: int | None = None
    # AdamW weight decay, applied to matrices only (not biases or layer norms).
    weight_decay: float = 0.1
    # AdamW's first-moment decay (the paper: 0.9).
    beta1: float = 0.9
    # AdamW's second-moment decay (the paper: 0.95).
    beta2: float = 0.95
    # AdamW's denominator epsilon.
    eps: float = 1e-8
    # Clip the global gradient norm to this value (0 = off).
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    # Token budget of the whole run (pretrain); steps = tokens / (batch_size * seq_len).
    tokens: int | None = None
    # Total optimizer steps of the whole run; overrides tokens when set.
    steps: int | None = None
    # SFT only: passes over the training split.
    epochs: int = 4
    # Sequences per optimizer step, summed over all GPUs and accumulation steps.
    batch_size: int = 32
    # Sequences per forward pass on one device (None = batch_size / world size, no accumulation).
    micro_batch_size: int | None = None
    # Seed for weights, data order and sampling.
    seed: int = 0
    # Midtrain from a hub model (no optimizer state): the global step the run resumes at.
    start_step: int | None = None
    # Stop (with a checkpoint) after this many steps in this invocation; for preemptible jobs
    # and for testing resume.
    max_steps_this_run: int | None = None
    # Write a training-loss line to the metrics every this many steps. Only these steps wait
    # for the GPU (to read the loss) and check it is finite.
    log_every: int = 10


@dataclass
class EvalConfig:
    # Extra dataset specs whose held-out split is evaluated (e.g. c4 for forgetting). The phase's
    # own training data (each mixture component; the SFT target) is always evaluated.
    datasets: list[str] = field(default_factory=list)
    # Evaluate every this many steps (0 = only at the end).
    every: int = 100
    # Sequences per evaluation batch.
    batch_size: int = 16
    # Evaluation batches per dataset (None = the whole held-out split).
    max_batches: int | None = 20


@dataclass
class CheckpointConfig:
    # Save every this many steps (0 = never, except the steps below and the end).
    every: int = 0
    # Steps at which to save a checkpoint that is never deleted (the midtraining start points).
    steps: list[int] = field(default_factory=list)
    # How many of the periodic checkpoints to keep (the newest).
    keep_last: int = 2


@dataclass
class SystemConfig:
    # cpu, cuda, cuda:1, or auto (cuda when available).
    device: str = "auto"
    # Compute dtype: auto (bf16 autocast on cuda, fp32 on cpu), bf16 or fp32.
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    # torch.compile the model (GPU runs; slow to start).
    compile: bool = False
    # CPU threads for torch (None = torch's default).
    threads: int | None = None
    # Deterministic kernels (bitwise-reproducible CPU runs; slower on GPU).
    deterministic: bool = False
    # Show a progress bar with loss, tokens/s and ETA.
    progress: bool = True
    # Minutes a collective may wait for the other ranks before the job fails with an error
    # (torch.distributed's process-group timeout; NCCL's own default is 10).
    timeout_minutes: float = 30.0


@dataclass
class LogConfig:
    # Also write TensorBoard event files (run folder's tensorboard/; needs proximity[tracking]).
    tensorboard: bool = False
    # TensorBoard folder (None = <out_dir>/tensorboard; the grid: DIR/tensorboard/<kind>/<node>).
    tb_dir: str | None = None
    # Also log to this Weights & Biases project (offline when WANDB_MODE=offline or no API key).
    wandb: str | None = None
    # W&B run group (a grid sets it to the grid's name and folder).
    group: str | None = None
    # W&B job type (a grid sets it to the node's kind).
    job_type: str | None = None
    # W&B run name (a grid sets it to the node's id).
    name: str | None = None


@dataclass
class RunConfig:
    # Which phase this config runs; the `proximity train <phase>` command sets it.
    phase: Phase = "pretrain"
    # Output folder: checkpoints/, metrics.jsonl, config.yaml.
    out_dir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    # Experiment trackers fed the same records as metrics.jsonl (not part of a grid node's id).
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value checks that types alone cannot express; each names its field."""
        _check(self.model.seq_len > 0, "model.seq_len", "must be positive")
        _check(self.train.batch_size > 0, "train.batch_size", "must be positive")
        mb = self.train.micro_batch_size
        _check(mb is None or mb > 0, "train.micro_batch_size", "must be positive")
        _check(self.train.epochs > 0, "train.epochs", "must be positive")
        for name in ("tokens", "steps", "max_steps_this_run"):
            value = getattr(self.train, name)
            _check(value is None or value > 0, f"train.{name}", "must be positive")
        _check(self.optim.lr > 0, "optim.lr", "must be positive")
        _check(0 <= self.optim.min_lr <= self.optim.lr, "optim.min_lr", "must be in [0, optim.lr]")
        _check(0 <= self.optim.warmup_fraction < 1, "optim.warmup_fraction", "must be in [0, 1)")
        _check(0 < self.data.val_fraction < 1, "data.val_fraction", "must be in (0, 1)")
        _check(0 < self.data.sft_val_fraction < 1, "data.sft_val_fraction", "must be in (0, 1)")
        svd = self.data.sft_val_docs
        _check(svd is None or svd > 0, "data.sft_val_docs", "must be positive")
        _check(self.eval.every >= 0, "eval.every", "must be >= 0")
        _check(self.checkpoint.every >= 0, "checkpoint.every", "must be >= 0")
        _check(self.checkpoint.keep_last >= 1, "checkpoint.keep_last", "must be >= 1")
        _check(self.train.log_every >= 1, "train.log_every", "must be >= 1")
        _check(self.data.prepare_workers >= 1, "data.prepare_workers", "must be >= 1")
        _check(self.system.timeout_minutes > 0, "system.timeout_minutes", "must be positive")

    # ---- YAML -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write the YAML atomically (a killed run never leaves half a config)."""
        write_text_atomic(path, self.to_yaml())

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
    ) -> RunConfig:
        """Build from nested dicts (YAML), then apply `section.key=value` overrides."""
        data = merge_overrides(dict(data or {}), overrides)
        return build_dataclass(cls, data)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
        path = Path(path)
        if not path.exists():
            raise ProximityError(f"config file not found: {path} (--config)")
        return cls.from_dict(read_yaml_mapping(path, "sections"), overrides)

    def with_overrides(self, overrides: list[str] | tuple[str, ...]) -> RunConfig:
        return RunConfig.from_dict(self.to_dict(), overrides)


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (of `what`); a syntax error names the file,
    line and column where the parser gave up, as an editor would show them (1-based)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = error.problem + (f" ({error.context})" if error.context else "")
        raise ProximityError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise ProximityError(f"{path}: not valid YAML: {str(error).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ProximityError(f"{path}: expected a mapping of {what} at the top level")
    return data


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ProximityError(f"{name}: {message}")


def merge_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict:
    """`data` (nested dicts, as read from YAML) with each `section.key=value` override set in
    it, the value read as YAML (1e-3, true, [1, 2], null): a run config's `--set` and a grid's
    read the same. `data` itself is changed (callers pass a copy); the sections on an
    overridden path are copied first, so a preset's nested dicts never change."""
    for item in overrides:
        if "=" not in item:
            raise ProximityError(f"override {item!r} must look like section.key=value (--set)")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ProximityError(f"override {key!r}: {part!r} is not a section")
            else:
                child = node[part] = dict(child)
            node = child
        # YAML parsing gives 1e-3 -> float, true -> bool, [1, 2] -> list, null -> None.
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return data


def build_dataclass(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """An instance of the dataclass `cls` from nested dicts, each value checked against its
    field's annotation (`_coerce`); an unknown key or a wrong value raises a ProximityError
    naming the dotted key (`prefix` + field), as a run config's or a grid's reader shows it."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix[:-1]} has" if prefix else "sections are"
            raise ProximityError(
                f"unknown config key {prefix + str(key)!r} ({where}: {', '.join(known)})"
            )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(value, hints[name], prefix + name)
    return cls(**kwargs)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        key, item = typing.get_args(tp)
        return f"a mapping of {_type_name(key)} to {_type_name(item)}"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, "null" if tp is type(None) else getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is ambiguous (1 -> 1.0)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ProximityError(f"{name}: expected a section (mapping), got {value!r}")
        return build_dataclass(tp, value, prefix=name + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, name)
            except ProximityError:
                continue
        raise ProximityError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise ProximityError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `--set eval.datasets=c4` means a one-item list
        if not isinstance(value, list):
            raise ProximityError(f"{name}: expected {_type_name(tp)}, got {value!r}")
        return [_coerce(v, item_type, f"{name}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_type, item_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ProximityError(f"{name}: expected {_type_name(tp)}, got {value!r}")
        return {
            _coerce(k, key_type, name): _coerce(v, item_type, f"{name}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # 1e6 in YAML is a float; a token budget is an integer
        if isinstance(value, str):
            try:
                number = float(value)  # PyYAML reads "1e6" as a string
            except ValueError:
                pass
            else:
                if number.is_integer():
                    return int(number)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # PyYAML reads "6e-4" (no dot) as a string
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # e.g. revision: 3000
    raise ProximityError(f"{name}: expected {_type_name(tp)}, got {value!r}")


def field_help(cls: type = RunConfig, prefix: str = "") -> dict[str, str]:
    """Each dotted key's help: the comment lines just above its field in this file (one source
    of truth, shown by `proximity train keys`)."""
    helps: dict[str, str] = {}
    comment: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            comment.append(text.lstrip("#").strip())
            continue
        name = text.split(":", 1)[0].strip() if ":" in text else ""
        if name.isidentifier() and name in {f.name for f in dataclasses.fields(cls)}:
            tp = typing.get_type_hints(cls)[name]
            if dataclasses.is_dataclass(tp):
                helps.update(field_help(tp, prefix + name + "."))
            else:
                helps[prefix + name] = " ".join(comment)
        comment = []
    return helps


def config_fields(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every settable key, dotted (for help text and error messages)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += config_fields(tp, prefix + f.name + ".")
        else:
            keys.append(prefix + f.name)
    return keys
