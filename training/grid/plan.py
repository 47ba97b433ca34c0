"""The grid as a DAG of nodes; a node's identity is a hash of its settings and its parents' ids.

tokenizer -> prepare (tokenise every dataset the grid reads, once) -> pretrain (per model and
seed; keeps a checkpoint at every branch start) -> branches (midtrain / CPT from a start
checkpoint) -> SFT (branch end x target x LR) -> results.
The C4 control branch is the pretraining node itself: the sampler is a pure function of
(seed, step) and midtraining carries on the schedule and AdamW state, so continuing pretraining
on C4 from step s with the same seed reproduces the pretraining run exactly (tests/test_grid.py
checks this bitwise); computing it again would only repeat work.

The prepare node is an ordering dependency of the pretraining nodes, not part of their identity:
it only fills the token cache, whose builds are keyed by their own inputs and have the same
bytes whoever makes them (a node whose data is missing would build it the same way itself).

Identity leaves out what does not change a node's numbers (paths, threads, progress bars,
periodic checkpoints, the list of seeds), so `--seeds 0,1,2` on a folder that ran seed 0
reuses seed 0's nodes, and moving the data folder or changing --jobs reuses everything; any
setting that does change numbers gives new node ids, so a stale node is never reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from proximity.errors import ProximityError
from proximity.specs import blend, parse_mixture
from proximity.training.config import RunConfig
from proximity.training.grid.spec import GridSpec, MixtureEntry

NodeKind = Literal["tokenizer", "prepare", "pretrain", "midtrain", "sft"]
TOKENIZER_REF = "@tokenizer"  # replaced by the tokenizer node's tokenizer.json at run time
# Only the start and the end of a phase are evaluated (the rows of results.csv need no more).
EVAL_ONLY_AT_ENDS = 10**9
# RunConfig keys that say where and how a node runs, not what it computes: left out of its
# identity, so a grid resumed on another machine or with another --jobs goes on where it was.
# Threads, device and compilation do change floating-point rounding: a retrace of the study's
# pretraining run whose first 160 of 800 steps ran on 2 threads instead of 1 ended 5e-8 nats
# from the original (5.194875632 vs 5.194875683); at equal settings results are bitwise equal.
VOLATILE_KEYS = (
    "out_dir",
    "model.init_from",
    "data.data_dir",
    "data.cache_dir",
    "train.max_steps_this_run",
    "train.log_every",
    "checkpoint.every",
    "checkpoint.keep_last",
    "system.threads",
    "system.progress",
    "system.device",
    "system.compile",
    "log",  # experiment trackers (TensorBoard, W&B): where numbers are shown, not what they are
)


@dataclass
class Node:
    id: str
    kind: NodeKind
    label: str
    # The node's full settings: a RunConfig dict for training nodes (out_dir, init_from and
    # tokenizer are filled in at run time), the tokenizer recipe for the tokenizer node.
    settings: dict[str, Any]
    parents: tuple[str, ...] = ()
    # (parent id, checkpoint step or None for the parent's final checkpoint)
    init_from: tuple[str, int | None] | None = None
    # Row fields for results.csv (model, seed, branch kind, ...); not part of the identity.
    info: dict[str, Any] = field(default_factory=dict)
    # Tokens this node trains (None: unknown before reading the data, e.g. SFT on the hub).
    tokens: int | None = None


@dataclass
class Branch:
    node: Node  # the node whose final checkpoint is the branch end (control: pretraining)
    kind: Literal["midtrain", "cpt", "control"]
    mixture: str
    mixture_spec: str
    weight: float
    start_step: int
    ablation: bool
    note: str = ""


@dataclass
class Plan:
    spec: GridSpec
    nodes: list[Node]  # in dependency order
    branches: list[Branch]

    def by_id(self) -> dict[str, Node]:
        return {node.id: node for node in self.nodes}

    def sft_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.kind == "sft"]

    def only(self, ids: list[str]) -> Plan:
        """The part of the plan that the nodes `ids` need: them and their ancestors (one SFT
        run's chain, say, rerun into another folder with denser evaluation for figure 6). An
        entry may also be a node kind (`pretrain`: every pretraining run and what it needs)."""
        by_id = self.by_id()
        kinds = {node.kind for node in self.nodes}
        stack: list[str] = []
        for entry in ids:
            if entry in kinds:
                stack.extend(node.id for node in self.nodes if node.kind == entry)
            elif entry in by_id:
                stack.append(entry)
            else:
                raise ProximityError(
                    f"--only {entry}: not a node of this grid (see plan.json, or the node_id "
                    "columns of results.csv, of a grid run with the same spec and --set) nor "
                    f"a node kind ({', '.join(sorted(kinds))})"
                )
        keep: set[str] = set()
        while stack:
            node_id = stack.pop()
            if node_id not in keep:
                keep.add(node_id)
                stack.extend(by_id[node_id].parents)
        nodes = [node for node in self.nodes if node.id in keep]
        return Plan(self.spec, nodes, [b for b in self.branches if b.node.id in keep])


# Run-config keys added after grids were run, with the value that means "as before": left out
# of a node's identity while they hold it, so adding a setting never renames finished nodes
# (tests/test_grid_plan.py checks the committed figures/micro ids).
ADDED_KEYS: dict[str, Any] = {"data.sft_val_docs": None}
# Run-config keys that never change a node's numbers but were hashed into identities when the
# first grids ran: hashed at that value whatever they are set to, so those ids stay and a
# rerun with other values (denser evaluation for loss curves) renames nothing.
NEUTRAL_KEYS: dict[str, Any] = {"eval.every": EVAL_ONLY_AT_ENDS}


def node_id(kind: str, settings: dict[str, Any], parents, init_from) -> str:
    """`<kind>-<12 hex>`: sha256 of the settings that change numbers, parents and start point."""
    stable = copy.deepcopy(settings)
    if kind not in ("tokenizer", "prepare"):
        for key in VOLATILE_KEYS:
            section, last = _section(stable, key)
            section.pop(last, None)
        for key, default in ADDED_KEYS.items():
            section, last = _section(stable, key)
            if last in section and section[last] == default:
                del section[last]
        for key, hashed in NEUTRAL_KEYS.items():
            section, last = _section(stable, key)
            if last in section:
                section[last] = hashed
    payload = {"kind": kind, "settings": stable, "parents": list(parents), "init_from": init_from}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"{kind}-{digest[:12]}"


def _section(settings: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """The dict holding dotted `key`'s last part ({} when a section is absent), and that part."""
    *path, last = key.split(".")
    for part in path:
        settings = settings.get(part, {})
    return settings, last


def _make(kind, label, settings, parents=(), init_from=None, info=None, tokens=None) -> Node:
    if kind not in ("tokenizer", "prepare"):
        RunConfig.from_dict(settings)  # every value checked now, not when the node runs
    parents = tuple(parents)
    return Node(
        id=node_id(kind, settings, parents, list(init_from) if init_from else None),
        kind=kind,
        label=label,
        settings=settings,
        parents=parents,
        init_from=init_from,
        info=info or {},
        tokens=tokens,
    )


def _base_config(spec: GridSpec, model: str, seed: int, tokenizer: str) -> dict[str, Any]:
    d, p, e = spec.data, spec.pretrain, spec.eval
    eval_sets = list(dict.fromkeys([parse_mixture(p.data).canonical(), *e.datasets]))
    cfg = {
        "phase": "pretrain",
        "model": {"preset": model, "seq_len": p.seq_len},
        "data": {
            "train": p.data,
            "tokenizer": tokenizer,
            "n_docs": d.n_docs,
            "max_chars": d.max_chars,
            "val_fraction": d.val_fraction,
            "sft_val_fraction": d.sft_val_fraction,
        },
        "optim": {"lr": p.lr, "min_lr": p.min_lr, "warmup_fraction": p.warmup_fraction},
        "train": {"steps": spec.final_step, "batch_size": p.batch_size, "seed": seed},
        "eval": {
            "datasets": eval_sets,
            "every": e.every or EVAL_ONLY_AT_ENDS,
            "batch_size": e.batch_size,
            "max_batches": e.max_batches,
        },
        "checkpoint": {"every": p.checkpoint_every, "steps": [], "keep_last": 1},
        "system": {"progress": False},
    }
    return RunConfig.from_dict(cfg, spec.train_set).to_dict()


def _branch_specs(spec: GridSpec) -> list[tuple[MixtureEntry, str, float, int, bool]]:
    """(entry, kind, weight, start, ablation) for every branch, main grid first."""
    out = []
    for m in spec.mixtures:
        for start in m.start_steps:
            out += [(m, "midtrain", w, start, False) for w in m.weights]
        if m.cpt:
            out.append((m, "cpt", 1.0, m.start_steps[0], False))
    a = spec.ablation
    if a.mixture is not None:
        entry = next(m for m in spec.mixtures if m.name == a.mixture)
        for start in a.start_steps or entry.start_steps:
            out += [(entry, "midtrain", w, start, True) for w in a.weights or entry.weights]
    return out


def build_plan(spec: GridSpec) -> Plan:
    nodes: list[Node] = []
    branches: list[Branch] = []
    t = spec.tokenizer
    tokenizer = t.name
    tok_parents: tuple[str, ...] = ()
    if t.name == "train":
        tok = _make(
            "tokenizer",
            f"tokenizer {t.corpus} {t.vocab_size}",
            {
                "corpus": t.corpus,
                "vocab_size": t.vocab_size,
                "n_docs": t.n_docs,
                "max_chars": t.max_chars,
            },
        )
        nodes.append(tok)
        tokenizer, tok_parents = TOKENIZER_REF, (tok.id,)
    p = spec.pretrain
    final = spec.final_step
    step_tokens = p.batch_size * p.seq_len
    pretrain_spec = parse_mixture(p.data)
    main_branches = _branch_specs(spec)
    starts = sorted({start for _, _, _, start, _ in main_branches})
    for model in spec.models:
        for seed in spec.seeds:
            base = _base_config(spec, model, seed, tokenizer)
            cfg = copy.deepcopy(base)
            cfg["checkpoint"]["steps"] = starts
            pre = _make(
                "pretrain",
                f"pretrain {model} seed {seed}",
                cfg,
                tok_parents,
                info={"model": model, "seed": seed},
                tokens=final * step_tokens,
            )
            nodes.append(pre)
            seen: set[str] = set()
            tree: list[Branch] = []
            if spec.control:
                name = pretrain_spec.name
                tree.append(
                    Branch(pre, "control", name, pretrain_spec.canonical(), 0.0, final, False)
                )
            for entry, kind, weight, start, ablation in main_branches:
                addition = parse_mixture(entry.data)
                mix = addition if kind == "cpt" else blend(pretrain_spec, addition, weight)
                cfg = copy.deepcopy(base)
                cfg["phase"] = "midtrain"
                cfg["data"]["train"] = mix.canonical()
                eval_sets = [*cfg["eval"]["datasets"], *(s.canonical() for s in mix.datasets)]
                cfg["eval"]["datasets"] = list(dict.fromkeys(eval_sets))
                node = _make(
                    "midtrain",
                    f"{kind} {entry.name}:{weight:g}@{start} {model} seed {seed}",
                    cfg,
                    (pre.id,),
                    init_from=(pre.id, start),
                    info={"model": model, "seed": seed},
                    tokens=(final - start) * step_tokens,
                )
                if node.id in seen:
                    continue  # an ablation point that the main grid already has
                seen.add(node.id)
                nodes.append(node)
                tree.append(
                    Branch(
                        node, kind, entry.name, mix.canonical(), weight, start, ablation, entry.note
                    )
                )
            branches += tree
            for branch in tree:
                nodes += _sft_nodes(spec, base, branch, model, seed)
    return Plan(spec=spec, nodes=_with_prepare_node(nodes, tok_parents), branches=branches)


def _with_prepare_node(nodes: list[Node], tok_parents: tuple[str, ...]) -> list[Node]:
    """Insert one node that prepares every dataset the training nodes read (train prepare's
    work, on a CPU job of its own on a cluster) before the first pretraining node."""
    readers: dict[str, dict[str, Any]] = {}
    for node in nodes:
        if node.kind in ("pretrain", "midtrain", "sft"):
            reads = _data_settings(node.settings)
            readers[json.dumps(reads, sort_keys=True)] = reads
    if not readers:
        return nodes
    prepare = _make(
        "prepare",
        f"prepare {len(readers)} data settings",
        {"configs": [readers[key] for key in sorted(readers)]},
        tok_parents,
    )
    out: list[Node] = []
    for node in nodes:
        if node.kind == "pretrain":
            if prepare not in out:
                out.append(prepare)
            node.parents = (*node.parents, prepare.id)  # after its id: ordering only
        out.append(node)
    return out


def _data_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The part of a training node's RunConfig that decides which builds it reads."""
    return {
        "phase": settings["phase"],
        "model": {"seq_len": settings["model"]["seq_len"]},
        "data": {k: v for k, v in settings["data"].items() if k not in ("data_dir", "cache_dir")},
        "eval": {"datasets": settings["eval"]["datasets"]},
    }


def _sft_nodes(spec: GridSpec, base: dict, branch: Branch, model: str, seed: int) -> list[Node]:
    s = spec.sft
    targets = s.targets
    if branch.ablation and spec.ablation.targets:
        targets = spec.ablation.targets
    out = []
    for target in targets:
        for lr in s.lrs_by_target.get(target, s.lrs):
            cfg = copy.deepcopy(base)
            cfg["phase"] = "sft"
            cfg["model"]["seq_len"] = s.seq_len
            cfg["data"]["train"] = target
            cfg["data"]["n_docs"] = s.n_docs
            if s.val_docs is not None:  # only when set: older grids keep their node ids
                cfg["data"]["sft_val_docs"] = s.val_docs
            cfg["optim"] = {
                **cfg["optim"],
                "lr": lr,
                "min_lr": lr * s.min_lr_ratio,
                "warmup_fraction": s.warmup_fraction,
            }
            cfg["train"] = {
                **cfg["train"],
                "steps": None,
                "epochs": s.epochs,
                "batch_size": s.batch_size,
            }
            cfg["checkpoint"] = {"every": 0, "steps": [], "keep_last": 1}
            cfg["eval"]["every"] = spec.eval.sft_every or EVAL_ONLY_AT_ENDS
            out.append(
                _make(
                    "sft",
                    f"sft {target} lr {lr:g} <- {branch.node.label}",
                    cfg,
                    (branch.node.id,),
                    init_from=(branch.node.id, None),
                    info={
                        "model": model,
                        "seed": seed,
                        "target": target,
                        "lr": lr,
                        "branch": branch.node.id,
                    },
                )
            )
    return out
