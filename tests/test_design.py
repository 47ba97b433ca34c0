"""The design checks beside the correlation (analysis/design.py), on hand-worked tables and
on the committed figures/micro (which predates the new files: "not recorded", never a
failure)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from grid_utils import generated_results, write_grid

from proximity.analysis.design import design_lines, design_summary, lr_edges, lr_table, sft_table
from proximity.analysis.results import load_grid

ROOT = Path(__file__).resolve().parents[1]


def _pretraining(root: Path) -> None:
    pd.DataFrame(
        {
            "model": ["small", "small", "large", "large"],
            "seed": [0, 1, 0, 1],
            "node_id": ["a", "b", "c", "d"],
            "c4_val_loss": [5.6, 5.8, 5.1, 5.3],
            "unigram_val_loss": [7.0, 7.0, 7.0, 7.0],
            "bigram_val_loss": [5.44, 5.44, 5.44, 5.44],
        }
    ).to_csv(root / "pretraining.csv", index=False)


def test_pretrained_losses_are_set_beside_the_ngram_baselines(tmp_path):
    grid = load_grid(write_grid(generated_results(seeds=(0,)), tmp_path))
    _pretraining(tmp_path)
    models = design_summary(grid)["pretraining"]["models"]
    # By hand: small 5.7 vs 5.44 (worse by 0.26), large 5.2 (better by 0.24).
    assert models["small"]["c4_val_loss"] == pytest.approx(5.7)
    assert models["small"]["beats_bigram_by"] == pytest.approx(-0.26)
    assert models["large"]["beats_bigram_by"] == pytest.approx(0.24)
    assert models["large"]["c4_val_loss_std"] == pytest.approx(0.1414213562, rel=1e-6)
    assert models["large"]["beats_bigram_every_seed"] is True  # 5.1 and 5.3 < 5.44
    assert models["small"]["beats_bigram_every_seed"] is False
    lines = design_lines(design_summary(grid))
    assert any("small" in x and "does NOT beat the bigram by 0.260" in x for x in lines)
    assert any("large" in x and " beats the bigram by 0.240" in x for x in lines)


def test_selections_at_each_edge_of_the_sweep_are_counted():
    rows = []
    for group, picked in enumerate((3e-3, 1e-3, 1e-2, None)):
        for lr in (1e-3, 3e-3, 1e-2):
            rows.append(
                {"model": "m", "seed": 0, "branch_kind": "midtrain", "mixture": "x",
                 "mixture_spec": "x", "weight": 0.1, "start_step": 1, "ablation": False,
                 "target": f"t{group}", "lr": lr, "selected": lr == picked}
            )  # fmt: skip
    edges = lr_edges(pd.DataFrame(rows))["models"]["m"]
    # t0: 3e-3 inside; t1: 1e-3 lowest; t2: 1e-2 highest; t3: nothing selected yet.
    assert (edges["groups"], edges["lowest"], edges["inside"], edges["highest"]) == (3, 1, 1, 1)
    assert edges["sweeps"] == [[1e-3, 3e-3, 1e-2]]


def test_sft_accounting_is_one_row_per_target_when_sizes_agree(tmp_path):
    results = generated_results(models=("a", "b"), seeds=(0,), targets=("gsm8k", "lima"))
    per_target = {"gsm8k": (517, 189, 628, 44, 32), "lima": (550, 200, 300, 0, 34)}
    for column, i in (("sft_train_examples", 0), ("sft_val_examples", 1), ("sft_truncated", 2),
                      ("sft_dropped", 3), ("sft_steps", 4)):  # fmt: skip
        results[column] = results["target"].map(lambda t, i=i: per_target[t][i])
    grid = load_grid(write_grid(results, tmp_path))
    table = sft_table(design_summary(grid))
    assert table.to_dict("records") == [
        {"target": "gsm8k", "train examples": "517", "val examples": "189", "truncated": "628",
         "dropped": "44", "steps": "32"},
        {"target": "lima", "train examples": "550", "val examples": "200", "truncated": "300",
         "dropped": "0", "steps": "34"},
    ]  # fmt: skip
    results.loc[results["model"] == "b", "sft_steps"] = 40
    grid = load_grid(write_grid(results, tmp_path))
    assert list(sft_table(design_summary(grid))["model"]) == ["a", "b", "a", "b"]


def test_the_committed_micro_grid_says_not_recorded_and_counts_its_sweep():
    design = design_summary(load_grid(ROOT / "figures" / "micro"))
    assert design["pretraining"]["recorded"] is False
    assert design["sft"]["recorded"] is False and sft_table(design) is None
    # Counted independently of the module: selected LRs against the sweep's ends.
    results = pd.read_csv(ROOT / "figures" / "micro" / "results.csv")
    picked = results[results["selected"]]["lr"]
    table = lr_table(design).iloc[0]
    assert table["at the highest LR"] == (picked == results["lr"].max()).sum()
    assert table["at the lowest LR"] == (picked == results["lr"].min()).sum()
    assert table["groups"] == len(picked)
    lines = design_lines(design)
    assert any("not recorded" in x and "pretraining.csv" in x for x in lines)
