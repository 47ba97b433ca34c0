"""What a grid is: typed sections read from YAML (or a preset), with `--set key=value` overrides.

A grid is the paper's experimental design (PAPER.md, "Experimental design"): one tokenizer,
pretraining per model and seed, branches (midtraining mixtures, continued pretraining, the C4
control) from pretraining checkpoints, and SFT of every branch end on every target over an LR list.
Every wrong key or value names its field, like `proximity train` configs (training/config.py,
whose typed YAML reader this reuses).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proximity.data import resolve
from proximity.errors import ProximityError
from proximity.specs import parse_mixture
from proximity.training.config import (  # one reader
    build_dataclass,
    merge_overrides,
    read_yaml_mapping,
)
from proximity.training.grid.presets import GRID_PRESETS
from proximity.training.presets import PRESETS

POSITIVE_KEYS = (
    "pretrain.steps", "pretrain.tokens", "pretrain.batch_size", "pretrain.seq_len", "pretrain.lr",
    "tokenizer.vocab_size", "tokenizer.n_docs", "tokenizer.max_chars", "data.n_docs",
    "data.max_chars", "sft.epochs", "sft.batch_size", "sft.seq_len", "sft.n_docs",
    "eval.batch_size", "eval.max_batches",
)  # fmt: skip
"""Grid keys that must be positive when set (None: unset), checked under these names."""
FRACTION_KEYS = ("pretrain.warmup_fraction", "sft.warmup_fraction")


@dataclass
class TokenizerSpec:
    # A tokenizer (pythia, a tokenizer.json, a folder, a hub name), or "train" to learn a
    # byte-level BPE on `corpus` as the grid's first node (much faster models on CPU).
    name: str = "train"
    corpus: str = "c4"
    vocab_size: int = 8192
    n_docs: int = 2500
    max_chars: int | None = 4000


@dataclass
class DataSpec:
    # Local data folder (None: $PROXIMITY_DATA_DIR, else the hub). Not part of node identity.
    data_dir: str | None = None
    # Documents read per dataset (None = all) and the per-document character cut.
    n_docs: int | None = None
    max_chars: int | None = None
    # Held-out fractions: fixed across the grid so every "C4 validation loss" is the same docs.
    val_fraction: float = 0.05
    sft_val_fraction: float = 0.1


@dataclass
class PretrainSpec:
    # Pretraining data spec (the paper: c4).
    data: str = "c4"
    # Length: steps, or tokens (steps = tokens / (batch_size * seq_len)).
    steps: int | None = None
    tokens: int | None = None
    batch_size: int = 16
    # Sequence length of pretraining and branches.
    seq_len: int = 128
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_fraction: float = 0.1
    # Periodic checkpoints (for resuming a killed node); start points are always kept.
    checkpoint_every: int = 50


@dataclass
class MixtureEntry:
    # Short name (code, math, ...): the `mixture` column of results.csv.
    name: str
    # The specialised dataset; the branch trains on pretrain.data:(1-w) + data:w.
    data: str
    weights: list[float] = field(default_factory=lambda: [0.2])
    start_steps: list[int] = field(default_factory=list)
    # Also a continued-pretraining branch (100% data) from start_steps[0].
    cpt: bool = False
    # Free text added to the substitutes column (e.g. "alpaca stands in for FLAN").
    note: str = ""


@dataclass
class AblationSpec:
    # Name of a mixture entry; its branches at every start step x weight below are added
    # (ablation=True in results for those not already in the main grid).
    mixture: str | None = None
    start_steps: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    # SFT targets of the ablation branches (empty: all targets).
    targets: list[str] = field(default_factory=list)


@dataclass
class SFTSpec:
    targets: list[str] = field(default_factory=lambda: ["gsm8k", "pycode", "lima", "sciq"])
    # Peak LRs swept per (branch, target); the best by target validation loss is `selected`.
    lrs: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    # A target's own sweep, replacing `lrs` for it (keys as written in `targets`): to widen
    # the sweep where one target's selections sit at an edge without adding runs for all.
    lrs_by_target: dict[str, list[float]] = field(default_factory=dict)
    epochs: int = 4
    batch_size: int = 16
    seq_len: int = 256
    # Examples read per target (None = all).
    n_docs: int | None = None
    # Validation examples held out per target, exactly (None: data.sft_val_fraction). The same
    # examples for every branch and seed.
    val_docs: int | None = None
    # Cosine end as a fraction of the peak LR.
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.1


@dataclass
class EvalSpec:
    # Forgetting sets evaluated in every node besides its own data (the paper: c4).
    datasets: list[str] = field(default_factory=lambda: ["c4"])
    batch_size: int = 16
    max_batches: int | None = 8
    # Also evaluate every this many steps within pretraining, midtraining and CPT (0: only at
    # each phase's start and end, all results.csv needs), and within SFT (`sft_every`): for
    # loss curves (figure 6). Evaluating never changes a node's numbers, so neither is part
    # of a node's identity: a finished grid rerun with them renames and retrains nothing.
    every: int = 0
    sft_every: int = 0


@dataclass
class EstimateSpec:
    # How --dry-run estimates time: "cpu" times a few steps here; a GPU name (h100, a100)
    # uses its bf16 peak FLOP/s times `mfu`.
    device: str = "cpu"
    mfu: float = 0.4
    gpus: int = 1
    # One GPU's memory in GiB, for GPUs whose name training/memory.py does not know (None:
    # from `device`, else a GPU named in slurm.sbatch); the plan must fit it (--dry-run).
    gpu_memory_gib: float | None = None


@dataclass
class SlurmResources:
    """One node kind's override of the `slurm:` section (unset fields keep the section's)."""

    partition: str | None = None
    time_minutes: int | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    processes_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    sbatch: list[str] | None = None


@dataclass
class SlurmSpec:
    """Where and how `--executor slurm` runs each node: an execution setting, never identity.

    Node ids hash training settings only (training/grid/plan.py), so changing any of this
    (or moving to another cluster) reuses every finished node.
    """

    # Partition (None: the cluster's default; slurm-local's is `local`).
    partition: str | None = None
    # Wall-clock limit per node's job, in minutes.
    time_minutes: int = 60
    # Slurm nodes per job and GPUs per Slurm node; nodes > 1 or gpus_per_node > 1 launches
    # the node with torchrun (DDP), `processes_per_node` ranks per Slurm node.
    nodes: int = 1
    gpus_per_node: int = 0
    # torchrun ranks per Slurm node (None: gpus_per_node, at least 1). 2 with 0 GPUs runs
    # CPU DDP over gloo (how the torchrun path is tested on a GPU-less Slurm).
    processes_per_node: int | None = None
    # CPUs of the job's one task (per Slurm node); each rank gets cpus_per_task // ranks threads.
    cpus_per_task: int = 1
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    # Extra sbatch options as `key=value` (or a bare `flag`), e.g. [constraint=h100, exclusive].
    sbatch: list[str] = field(default_factory=list)
    # Shell lines run in the job before the node (e.g. `module load cuda`).
    setup: list[str] = field(default_factory=list)
    # At most this many of the grid's jobs queued or running at once (each array task counts,
    # as Slurm's MaxSubmitJobs counts it); None: no cap. `train-grid --max-queued` overrides it.
    max_queued: int | None = None
    # Per node kind: fields set here replace the ones above for that kind's jobs.
    tokenizer: SlurmResources = field(default_factory=SlurmResources)
    prepare: SlurmResources = field(default_factory=SlurmResources)
    pretrain: SlurmResources = field(default_factory=SlurmResources)
    midtrain: SlurmResources = field(default_factory=SlurmResources)
    sft: SlurmResources = field(default_factory=SlurmResources)

    def for_kind(self, kind: str) -> SlurmSpec:
        """The resources of `kind`'s jobs: this section with the kind's overrides applied."""
        override = getattr(self, kind, None)
        base = dataclasses.replace(self)
        if isinstance(override, SlurmResources):
            for f in dataclasses.fields(override):
                value = getattr(override, f.name)
                if value is not None:
                    setattr(base, f.name, value)
        if kind in ("tokenizer", "prepare"):  # CPU work in one process (prepare's workers
            # are its own subprocesses): never GPUs or ranks, whatever the section says
            base.nodes, base.gpus_per_node, base.processes_per_node = 1, 0, 1
        return base

    @property
    def ranks_per_node(self) -> int:
        return self.processes_per_node or max(1, self.gpus_per_node)

    @property
    def distributed(self) -> bool:
        """True when the node runs under torchrun (more than one rank in all)."""
        return self.nodes * self.ranks_per_node > 1


@dataclass
class GridSpec:
    name: str = "grid"
    # Model presets (training/presets.py); each gets its own tree.
    models: list[str] = field(default_factory=lambda: ["micro-2l-128"])
    seeds: list[int] = field(default_factory=lambda: [0])
    tokenizer: TokenizerSpec = field(default_factory=TokenizerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    mixtures: list[MixtureEntry] = field(default_factory=list)
    # The C4 control: the pretraining run itself (same seed, continued on C4 = identical).
    control: bool = True
    ablation: AblationSpec = field(default_factory=AblationSpec)
    sft: SFTSpec = field(default_factory=SFTSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    # Extra `proximity train` overrides for every training node, e.g. system.dtype=bf16.
    train_set: list[str] = field(default_factory=list)
    estimate: EstimateSpec = field(default_factory=EstimateSpec)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Value checks that types alone cannot express; each error names the grid field."""
        self._check_settings()
        self._check_branches()
        _require(bool(self.sft.targets), "sft.targets", "needs at least one target")
        sweeps = {"sft.lrs": self.sft.lrs}
        for target, lrs in self.sft.lrs_by_target.items():
            name = f"sft.lrs_by_target.{target}"
            known = ", ".join(self.sft.targets)
            _require(
                target in self.sft.targets, name, f"{target!r} is not one of sft.targets ({known})"
            )
            sweeps[name] = lrs
        for name, lrs in sweeps.items():
            _require(bool(lrs), name, "needs at least one learning rate")
            for lr in lrs:
                _require(lr > 0, name, f"{lr} must be positive")
        for kind in ("", "tokenizer.", "prepare.", "pretrain.", "midtrain.", "sft."):
            self._check_slurm(kind)
        cap = self.slurm.max_queued
        _require(cap is None or cap >= 1, "slurm.max_queued", f"{cap} must be >= 1")

    def _check_settings(self) -> None:
        """Models, seeds and the sections' numbers."""
        for i, model in enumerate(self.models):
            _require(
                model in PRESETS, f"models[{i}]", f"unknown preset {model!r} ({', '.join(PRESETS)})"
            )
        _require(bool(self.models), "models", "needs at least one model preset")
        _require(bool(self.seeds), "seeds", "needs at least one seed")
        _require(len(set(self.seeds)) == len(self.seeds), "seeds", "repeats a seed")
        p = self.pretrain
        _require(p.steps is not None or p.tokens is not None, "pretrain", "set steps or tokens")
        # Checked here under the grid's own keys: a node's run config would name its internal
        # key (train.steps for pretrain.steps), or a start step would fail first.
        for key in POSITIVE_KEYS:
            value = self._value(key)
            _require(value is None or value > 0, key, f"{value} must be positive")
        for key in FRACTION_KEYS:
            value = self._value(key)
            _require(0 <= value < 1, key, f"{value} must be in [0, 1)")
        _require(
            0 <= p.min_lr <= p.lr, "pretrain.min_lr", f"{p.min_lr} must be in [0, pretrain.lr]"
        )
        _require(p.checkpoint_every >= 0, "pretrain.checkpoint_every", "must be >= 0")
        _require(self.eval.every >= 0, "eval.every", "must be >= 0 (0: start and end only)")
        _require(self.eval.sft_every >= 0, "eval.sft_every", "must be >= 0 (0: start and end only)")
        _require(0 <= self.sft.min_lr_ratio <= 1, "sft.min_lr_ratio", "must be in [0, 1]")
        for key in ("data.val_fraction", "data.sft_val_fraction"):
            value = self._value(key)
            _require(0 < value < 1, key, f"{value} must be in (0, 1)")

    def _check_branches(self) -> None:
        """Mixtures and the ablation: names, start steps inside pretraining, weights, data."""
        final = self.final_step
        names = [m.name for m in self.mixtures]
        _require(len(set(names)) == len(names), "mixtures", "two entries share a name")
        for i, m in enumerate(self.mixtures):
            where = f"mixtures[{i}] ({m.name})"
            _require(bool(m.start_steps), f"{where}.start_steps", "needs at least one start step")
            for s in m.start_steps:
                _require(0 < s < final, f"{where}.start_steps", f"{s} not in (0, {final})")
            for w in m.weights:
                _require(0 < w <= 1, f"{where}.weights", f"{w} not in (0, 1]")
            try:
                parse_mixture(m.data)
            except ProximityError as error:
                raise ProximityError(f"grid {where}.data: {error}") from None
        a = self.ablation
        if a.mixture is not None:
            _require(a.mixture in names, "ablation.mixture", f"{a.mixture!r} is not in mixtures")
            for s in a.start_steps:
                _require(0 < s < final, "ablation.start_steps", f"{s} not in (0, {final})")
            for w in a.weights:
                _require(0 < w <= 1, "ablation.weights", f"{w} not in (0, 1]")
            for t in a.targets:
                _require(t in self.sft.targets, "ablation.targets", f"{t!r} is not in sft.targets")

    def _check_slurm(self, kind: str) -> None:
        """The `slurm:` section (`kind` "") or one node kind's resources ("sft." and so on)."""
        r = self.slurm.for_kind(kind[:-1]) if kind else self.slurm
        where = f"slurm.{kind}"
        _require(r.time_minutes > 0, where + "time_minutes", f"{r.time_minutes} must be > 0")
        _require(r.nodes >= 1, where + "nodes", f"{r.nodes} must be >= 1")
        _require(r.gpus_per_node >= 0, where + "gpus_per_node", "must be >= 0")
        _require(r.ranks_per_node >= 1, where + "processes_per_node", "must be >= 1")
        _require(r.cpus_per_task >= 1, where + "cpus_per_task", "must be >= 1")
        # torchrun's ranks share the task's CPUs: at least one each (training kinds only;
        # the section's own value is checked through the kinds that inherit it).
        own = kind and getattr(self.slurm, kind[:-1]).cpus_per_task is not None
        _require(
            kind in ("tokenizer.", "prepare.", "") or r.cpus_per_task >= r.ranks_per_node,
            where + "cpus_per_task" if own else "slurm.cpus_per_task",
            f"{r.cpus_per_task} is fewer than the {r.ranks_per_node} ranks per node of "
            f"{kind[:-1]} nodes (one CPU each at least; e.g. {r.ranks_per_node * 8} for 8 "
            f"threads per rank)",
        )
        _require(r.mem_gb is None or r.mem_gb > 0, where + "mem_gb", "must be > 0")
        for i, item in enumerate(r.sbatch):
            key = item.split("=", 1)[0].strip()
            _require(
                bool(key) and not key.startswith("-") and " " not in key,
                f"{where}sbatch[{i}]",
                f"{item!r}: expected key=value or a flag name, without leading dashes",
            )

    def _value(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(self, section), name)

    @property
    def final_step(self) -> int:
        p = self.pretrain
        if p.steps is not None:
            return p.steps
        return -(-int(p.tokens or 0) // (p.batch_size * p.seq_len))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ProximityError(f"grid {name}: {message}")


def check_datasets(grid: GridSpec, data_dir: str | None) -> None:
    """Every dataset the grid names resolves (registry name, local file, hub id), before any
    node runs: a misspelt target would otherwise fail only when its first SFT node starts,
    perhaps hours in. The error names the field. Reads no documents and needs no network."""
    fields = [("pretrain.data", grid.pretrain.data)]
    if grid.tokenizer.name == "train":
        fields.append(("tokenizer.corpus", grid.tokenizer.corpus))
    fields += [(f"mixtures[{i}] ({m.name}).data", m.data) for i, m in enumerate(grid.mixtures)]
    fields += [(f"sft.targets[{i}]", t) for i, t in enumerate(grid.sft.targets)]
    fields += [(f"eval.datasets[{i}]", d) for i, d in enumerate(grid.eval.datasets)]
    for name, value in fields:
        try:
            resolve(value, data_dir=data_dir)
        except ProximityError as error:
            raise ProximityError(f"grid {name}: {error}") from None


def load_grid(spec: str, overrides: list[str] | tuple[str, ...] = (), seeds: str | None = None):
    """A preset name (smoke, micro, paper-70m, paper-160m) or a YAML file -> a GridSpec."""
    if spec in GRID_PRESETS:
        data = GRID_PRESETS[spec]()
    else:
        path = Path(spec)
        if not path.exists():
            raise ProximityError(
                f"grid spec {spec!r}: not a preset ({', '.join(GRID_PRESETS)}) nor a YAML file"
            )
        data = read_yaml_mapping(path, "grid sections")
    data = merge_overrides(dict(data), list(overrides))
    if seeds is not None:
        try:
            data["seeds"] = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ProximityError(f"--seeds {seeds!r}: expected integers like 0,1,2") from None
    try:
        return build_dataclass(GridSpec, data)
    except ProximityError as error:
        raise ProximityError(f"grid {spec}: {error}") from None
