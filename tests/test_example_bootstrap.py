"""The outcome's sampling error over validation examples (analysis/example_bootstrap.py).

Checked against the delta method for a ratio of sums (an independent formula), against the
property that errors shared by control and branch cancel when both are resampled with the
same examples, and for the consistency checks on the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from proximity.analysis.example_bootstrap import example_bootstrap, sampling_error_lines
from proximity.analysis.results import relative_improvements
from proximity.errors import ProximityError


def _grid(tmp: Path, losses: dict[tuple[str, int], np.ndarray], tokens: np.ndarray) -> pd.DataFrame:
    """results.csv rows for one target (control and one mixture per seed), each run's
    per-example losses written under nodes/<id>/val_examples.npz as the trainer does."""
    rows = []
    for (kind, seed), loss_sum in losses.items():
        node = f"sft-{kind}-{seed}"
        folder = tmp / "nodes" / node
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "val_examples.npz", loss_sum=loss_sum, tokens=tokens.astype(np.int64))
        rows.append(
            {
                "model": "m", "seed": seed, "branch_kind": kind,
                "mixture": "c4" if kind == "control" else "code",
                "mixture_spec": "c4" if kind == "control" else "c4:0.9+starcoder:0.1",
                "pretrain_spec": "c4", "weight": 0.0 if kind == "control" else 0.1,
                "start_step": 10, "ablation": False, "target": "t", "target_spec": "t",
                "lr": 1e-3, "selected": True, "sft_val_loss": loss_sum.sum() / tokens.sum(),
                "c4_val_loss": 5.0, "node_id": node,
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def _delta_se(control: list[np.ndarray], mixture: list[np.ndarray]) -> float:
    """Delta-method SE of mean_s (1 − M_s/C_s) under resampling of examples (same tokens for
    both, so the token sums cancel): the linearised influence of example i, averaged."""
    n = len(control[0])
    influence = np.zeros(n)
    for c, m in zip(control, mixture, strict=True):
        ratio = m.sum() / c.sum()
        influence += -(m - ratio * c) / c.mean() / len(control)
    return float(np.sqrt(np.mean((influence - influence.mean()) ** 2) / n))


def test_standard_error_matches_the_delta_method_over_two_seeds(tmp_path):
    rng = np.random.default_rng(1)
    n = 400
    tokens = rng.integers(5, 40, n).astype(float)
    difficulty = rng.gamma(2.0, 2.0, n)  # shared by every run: the same examples
    losses = {}
    for seed in (0, 1):
        control = tokens * difficulty * (1 + 0.1 * rng.standard_normal(n)).clip(0.2)
        losses[("control", seed)] = control
        losses[("midtrain", seed)] = control * (0.97 + 0.05 * rng.standard_normal(n))
    results = _grid(tmp_path, losses, tokens)
    found = example_bootstrap(results, relative_improvements(results), tmp_path, n_bootstrap=4000)
    (pair,) = found["pairs"]
    expected = _delta_se(
        [losses[("control", s)] for s in (0, 1)], [losses[("midtrain", s)] for s in (0, 1)]
    )
    assert pair["improvement_se_examples"] == pytest.approx(expected, rel=0.08)
    assert found["per_model"]["m"]["median_se_examples"] == pair["improvement_se_examples"]
    assert pair["n_seeds"] == 2 and pair["n_examples"] == n


def test_control_and_branch_share_the_resampled_examples(tmp_path):
    """A branch 3% better on every example has the same improvement on any resample: SE 0.
    Resampling the two runs independently would give an SE of several percent."""
    rng = np.random.default_rng(2)
    tokens = rng.integers(5, 40, 200).astype(float)
    control = tokens * rng.gamma(2.0, 2.0, 200)
    results = _grid(tmp_path, {("control", 0): control, ("midtrain", 0): 0.97 * control}, tokens)
    (pair,) = example_bootstrap(results, relative_improvements(results), tmp_path)["pairs"]
    assert pair["improvement"] == pytest.approx(0.03)
    assert pair["improvement_se_examples"] < 1e-12


def test_the_merged_file_is_read_as_merge_parts_writes_it(tmp_path):
    rng = np.random.default_rng(3)
    tokens = rng.integers(5, 40, 50).astype(float)
    control = tokens * rng.gamma(2.0, 2.0, 50)
    losses = {("control", 0): control, ("midtrain", 0): control * rng.uniform(0.9, 1.0, 50)}
    results = _grid(tmp_path / "a", losses, tokens)
    arrays = {}
    for node in results["node_id"]:
        with np.load(tmp_path / "a" / "nodes" / node / "val_examples.npz") as scored:
            arrays[f"{node}/loss_sum"] = scored["loss_sum"]
            arrays[f"{node}/tokens"] = scored["tokens"]
    (tmp_path / "b").mkdir()
    np.savez_compressed(tmp_path / "b" / "val_examples.npz", **arrays)
    outcomes = relative_improvements(results)
    per_node = example_bootstrap(results, outcomes, tmp_path / "a")["pairs"]
    merged = example_bootstrap(results, outcomes, tmp_path / "b")["pairs"]
    assert merged == per_node


def test_a_loss_that_does_not_match_the_examples_is_refused(tmp_path):
    tokens = np.full(30, 10.0)
    control = np.linspace(20, 40, 30)
    results = _grid(tmp_path, {("control", 0): control, ("midtrain", 0): 0.9 * control}, tokens)
    results.loc[1, "sft_val_loss"] *= 1 + 5e-7  # float32 rounding: accepted
    example_bootstrap(results, relative_improvements(results), tmp_path)
    results.loc[1, "sft_val_loss"] *= 1.001
    with pytest.raises(ProximityError, match=r"node sft-midtrain-0 .*relative gap 1\.0e-03"):
        example_bootstrap(results, relative_improvements(results), tmp_path)


def test_runs_scored_on_other_examples_are_refused(tmp_path):
    tokens = np.full(30, 10.0)
    control = np.linspace(20, 40, 30)
    results = _grid(tmp_path, {("control", 0): control, ("midtrain", 0): 0.9 * control}, tokens)
    np.savez(
        tmp_path / "nodes" / "sft-midtrain-0" / "val_examples.npz",
        loss_sum=0.9 * control * 11 / 10,
        tokens=np.full(30, 11),
    )
    results.loc[1, "sft_val_loss"] = 0.9 * control.sum() / tokens.sum()
    with pytest.raises(ProximityError, match="same examples in the same order"):
        example_bootstrap(results, relative_improvements(results), tmp_path)


def test_a_grid_without_per_example_losses_says_not_recorded(tmp_path):
    tokens = np.full(30, 10.0)
    control = np.linspace(20, 40, 30)
    results = _grid(tmp_path, {("control", 0): control, ("midtrain", 0): 0.9 * control}, tokens)
    for node in results["node_id"]:
        (tmp_path / "nodes" / node / "val_examples.npz").unlink()
    found = example_bootstrap(results, relative_improvements(results), tmp_path)
    assert found["recorded"] is False
    lines = sampling_error_lines({"outcome_sampling_error": found})
    assert lines == [
        f"outcome sampling error over validation examples: not recorded ({found['why']})"
    ]
    assert "not recorded" in sampling_error_lines({})[0]


def test_correlate_and_report_carry_the_standard_error(shared_data, tmp_path):
    """Through `correlate` on a generated grid whose selected runs kept per-example losses:
    each pair's SE lands in the pairs table and statistics.json, and the report says it."""
    from grid_utils import generated_results, write_grid

    from proximity.analysis.correlate import correlate, summary_lines, write_correlation
    from proximity.analysis.report import build_report
    from proximity.analysis.results import load_grid
    from proximity.stats import StatsOptions

    results = generated_results(seeds=(0, 1), noise=0.01)
    rng = np.random.default_rng(4)
    tokens = {t: rng.integers(5, 40, 60) for t in results["target"].unique()}
    arrays = {}
    for row in results[results["selected"]].itertuples():
        weights = rng.gamma(4.0, 0.25, 60) * tokens[row.target]
        per_token = weights / weights.sum() * tokens[row.target].sum()  # token-weighted mean 1
        arrays[f"{row.node_id}/loss_sum"] = row.sft_val_loss * per_token
        arrays[f"{row.node_id}/tokens"] = tokens[row.target]
    root = write_grid(results, tmp_path / "grid", shared_data)
    np.savez(root / "val_examples.npz", **arrays)
    result = correlate(load_grid(root), options=StatsOptions(n_docs=150))
    error = result.statistics["outcome_sampling_error"]
    assert error["recorded"] and error["max_relative_loss_gap"] < 1e-12
    used = result.pairs[result.pairs["in_correlation"]]
    assert used["improvement_se_examples"].notna().all()
    assert (used["improvement_se_examples"] > 0).all()
    assert any(line.startswith("outcome sampling error micro-2l-128") for line in
               summary_lines(result.statistics))  # fmt: skip
    write_correlation(result, tmp_path / "an")
    report = build_report(load_grid(root), tmp_path / "an")
    assert any("bootstrap SE over validation examples" in line for line in report.summary)
