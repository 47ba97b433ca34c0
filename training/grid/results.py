"""DIR/results.csv and results.parquet: one row per finished SFT node (docs/RESULTS.md).

Rows come in plan order and every value comes from the nodes' result.json files, so the table
of an interrupted-and-resumed grid equals an uninterrupted one's (wall_time_s aside).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pandas as pd

from proximity.atomic import atomic_path
from proximity.data import resolve
from proximity.specs import parse_mixture
from proximity.training.grid.nodes import is_done, node_dir, read_result
from proximity.training.grid.plan import Plan

COLUMNS = [
    "model",
    "seed",
    "branch_kind",
    "mixture",
    "mixture_spec",
    "pretrain_spec",
    "weight",
    "start_step",
    "ablation",
    "target",
    "target_spec",
    "lr",
    "selected",
    "sft_val_loss",
    "c4_val_loss",
    "target_val_loss_before",
    "c4_val_loss_before",
    "tokens_pretrain",
    "tokens_midtrain",
    "tokens_sft",
    "sft_train_examples",
    "sft_val_examples",
    "sft_truncated",
    "sft_dropped",
    "sft_steps",
    "wall_time_s",
    "node_id",
    "branch_node_id",
    "pretrain_node_id",
    "substitutes",
]


def results_table(plan: Plan, out: Path, data_dir: str | None) -> pd.DataFrame:
    spec = plan.spec
    pretrain_spec = parse_mixture(spec.pretrain.data).canonical()
    step_tokens = spec.pretrain.batch_size * spec.pretrain.seq_len
    branch_of = {b.node.id: b for b in plan.branches}
    pretrain_of = {n.id: n for n in plan.nodes if n.kind == "pretrain"}  # pretrain nodes by id

    @cache
    def notes(spec_text: str) -> tuple[str, ...]:
        found = []
        for part in parse_mixture(spec_text).datasets:
            try:
                info = resolve(part, data_dir=data_dir).info
            except Exception:  # a hub-only dataset described offline: no local note to give
                continue
            if info.substitute:
                found.append(f"{part.canonical()}: {info.substitute}")
        return tuple(found)

    rows = []
    for node in plan.sft_nodes():
        folder = node_dir(out, node.id)
        if not is_done(folder):
            continue
        sft = read_result(folder)
        branch = branch_of[node.info["branch"]]
        pre_id = branch.node.id if branch.kind == "control" else branch.node.parents[0]
        mid_tokens = 0
        if branch.kind != "control":
            mid_tokens = read_result(node_dir(out, branch.node.id))["tokens"]
        target = node.info["target"]
        examples = sft.get("examples", {})  # absent in grids run before it was recorded
        substitutes = [
            *notes(pretrain_spec),
            *notes(branch.mixture_spec),
            *notes(target),
            *([branch.note] if branch.note else []),
        ]
        rows.append(
            {
                "model": node.info["model"],
                "seed": node.info["seed"],
                "branch_kind": branch.kind,
                "mixture": branch.mixture,
                "mixture_spec": branch.mixture_spec,
                "pretrain_spec": pretrain_spec,
                "weight": branch.weight,
                "start_step": branch.start_step,
                "ablation": branch.ablation,
                "target": target,
                "target_spec": parse_mixture(target).canonical(),
                "lr": node.info["lr"],
                "selected": False,
                "sft_val_loss": sft["val_end"][target],
                "c4_val_loss": sft["val_end"][pretrain_spec],
                "target_val_loss_before": sft["val_start"][target],
                "c4_val_loss_before": sft["val_start"][pretrain_spec],
                "tokens_pretrain": branch.start_step * step_tokens,
                "tokens_midtrain": mid_tokens,
                "tokens_sft": sft["tokens"],
                "sft_train_examples": examples.get("train_examples"),
                "sft_val_examples": examples.get("val_examples"),
                "sft_truncated": examples.get("truncated"),
                "sft_dropped": examples.get("dropped"),
                "sft_steps": sft["end_step"] - sft["start_step"] if examples else None,
                "wall_time_s": sft["wall_time_s"],
                "node_id": node.id,
                "branch_node_id": branch.node.id,
                "pretrain_node_id": pretrain_of[pre_id].id,
                "substitutes": "; ".join(dict.fromkeys(substitutes)),
            }
        )
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(table):
        keys = ["model", "seed", "branch_node_id", "target"]
        best = table.groupby(keys, sort=False)["sft_val_loss"].idxmin()
        table.loc[best.to_numpy(), "selected"] = True
    return table


def write_results(table: pd.DataFrame, out: Path) -> list[Path]:
    """results.csv and results.parquet, each written atomically."""
    csv, parquet = out / "results.csv", out / "results.parquet"
    with atomic_path(csv) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(parquet) as tmp:
        table.to_parquet(tmp, index=False)
    return [csv, parquet]


def refresh_results(plan: Plan, out: Path, data_dir: str | None) -> list[Path]:
    """results.csv and results.parquet from the SFT nodes done so far (a grid stopped midway
    keeps the rows of its finished runs; `train-grid` calls it after each one)."""
    return write_results(results_table(plan, out, data_dir), out)


PRETRAINING_COLUMNS = [
    "model",
    "seed",
    "node_id",
    "steps",
    "tokens",
    "c4_val_loss",
    "unigram_val_loss",
    "bigram_val_loss",
    "bigram_weight",
    "scored_tokens",
]


def pretraining_table(plan: Plan, out: Path) -> pd.DataFrame:
    """One row per finished pretraining node: its validation loss on its own data beside the
    unigram and interpolated-bigram baselines counted from the same training tokens and scored
    on the same positions (training/ngram_baseline.py). A model that does not beat the bigram
    has learnt little beyond token statistics (issue 15)."""
    # scipy (the bigram's fit): results.csv, rewritten after every SFT node, never needs it
    from proximity.training.ngram_baseline import pretraining_baselines

    pretrain_spec = parse_mixture(plan.spec.pretrain.data).canonical()
    baselines: dict[str, object] = {}
    rows = []
    for node in plan.nodes:
        folder = node_dir(out, node.id)
        if node.kind != "pretrain" or not is_done(folder):
            continue
        run_config = json.loads((folder / "node.json").read_text())["run_config"]
        key = json.dumps({k: run_config[k] for k in ("data", "eval")}, sort_keys=True)
        key += str(run_config["model"]["seq_len"])
        if key not in baselines:
            baselines[key] = pretraining_baselines(run_config)
        found = baselines[key]
        result = read_result(folder)
        rows.append(
            {
                "model": node.info["model"],
                "seed": node.info["seed"],
                "node_id": node.id,
                "steps": result["end_step"],
                "tokens": result["tokens"],
                "c4_val_loss": result["val_end"][pretrain_spec],
                "unigram_val_loss": found.unigram,
                "bigram_val_loss": found.bigram,
                "bigram_weight": found.bigram_weight,
                "scored_tokens": found.scored_tokens,
            }
        )
    return pd.DataFrame(rows, columns=PRETRAINING_COLUMNS)


def write_pretraining(table: pd.DataFrame, out: Path) -> Path:
    path = out / "pretraining.csv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path
