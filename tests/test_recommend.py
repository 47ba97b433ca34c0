"""`proximity recommend`: the prediction interval's coverage, the ranking, the command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from grid_utils import generated_results, write_grid

from analysis.cli import correlate_output
from analysis.correlate import correlate, write_correlation
from analysis.recommend import FittedRelation, prediction_interval, recommend
from analysis.results import load_grid
from proximity.errors import ProximityError
from proximity.similarity import advantage_table
from proximity.stats import StatsOptions

N_DOCS = 150


def test_prediction_interval_covers_new_observations_at_its_nominal_rate():
    rng = np.random.default_rng(0)
    hits, trials = 0, 600
    for _ in range(trials):
        x = rng.uniform(0, 0.2, size=12)
        y = 0.01 + 0.3 * x + 0.02 * rng.normal(size=12)
        x_new = rng.uniform(0, 0.2)
        y_new = 0.01 + 0.3 * x_new + 0.02 * rng.normal()
        _, low, high = prediction_interval(x, y, np.array([x_new]))
        hits += bool(low[0] <= y_new <= high[0])
    assert 0.93 <= hits / trials <= 0.97  # 95% nominal; ±3 binomial SE ≈ ±0.027


def test_prediction_is_the_least_squares_line():
    x = np.array([0.0, 0.1, 0.2, 0.3])
    y = np.array([0.01, 0.03, 0.05, 0.07])  # exactly 0.01 + 0.2·x
    centre, low, high = prediction_interval(x, y, np.array([0.5]))
    assert centre[0] == pytest.approx(0.11)
    assert high[0] - low[0] == pytest.approx(0.0, abs=1e-12)  # no residual, no spread


def test_ranking_by_pa_alone_is_proximitys_advantage_order(shared_data):
    candidates = ["starcoder:0.2", "math:0.12", "starcoder"]
    table = recommend(
        "pycode", candidates, options=StatsOptions(n_docs=N_DOCS), data_dir=shared_data
    )
    direct = advantage_table(
        "c4", "pycode", candidates, options=StatsOptions(n_docs=N_DOCS), data_dir=shared_data
    )
    assert list(table["mixture_spec"]) == list(direct["mix_spec"])
    assert np.allclose(table["advantage"], direct["advantage"], atol=1e-12)
    assert "predicted_improvement" not in table


def _relation(metric: str, x: list[float], y: list[float]) -> dict:
    points = [
        {"advantage": a, "improvement": b, "target": f"t{i % 3}"}
        for i, (a, b) in enumerate(zip(x, y, strict=True))
    ]
    return {
        "metric": metric, "model": "m", "points": points, "pearson": {"r": np.corrcoef(x, y)[0, 1]},
        "leave_one_target_out": {"rmse": 0.1, "baseline_rmse": 0.2},
    }  # fmt: skip


def test_recommend_uses_the_line_of_the_metric_asked_for():
    statistics = {
        "inputs": {"metrics": ["paper", "cosine"]},
        "relations": [
            _relation("paper", [0.0, 0.1, 0.2, 0.3], [0.0, 0.01, 0.03, 0.02]),
            _relation("cosine", [0.0, 0.2, 0.4, 0.6], [0.05, 0.0, 0.01, -0.02]),
        ],
    }
    assert FittedRelation.from_statistics(statistics, None).metric == "paper"
    cosine = FittedRelation.from_statistics(statistics, None, "cosine")
    assert cosine.metric == "cosine" and cosine.x.tolist() == [0.0, 0.2, 0.4, 0.6]
    with pytest.raises(ProximityError, match=r"--metric js: the grid was correlated with paper"):
        FittedRelation.from_statistics(statistics, None, "js")


def test_report_and_recommend_find_statistics_beside_results_csv(tmp_path):
    """figures/micro keeps correlate's outputs beside results.csv, not in analysis/."""
    (tmp_path / "statistics.json").write_text("{}")
    assert correlate_output(tmp_path, None) == tmp_path
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "statistics.json").write_text("{}")
    assert correlate_output(tmp_path, None) == tmp_path / "analysis"  # correlate's default
    with pytest.raises(ProximityError, match=r"elsewhere/statistics\.json not found"):
        correlate_output(tmp_path, tmp_path / "elsewhere")


def test_with_a_grid_the_prediction_follows_the_fitted_relation(shared_data, tmp_path):
    root = write_grid(generated_results(noise=0.01), tmp_path / "grid", shared_data)
    result = correlate(load_grid(root), options=StatsOptions(n_docs=N_DOCS))
    write_correlation(result, root / "analysis")
    relation = FittedRelation.from_statistics(result.statistics, None)
    table = recommend(
        "sciq",
        ["starcoder:0.2", "math:0.12"],
        options=StatsOptions(n_docs=N_DOCS),
        data_dir=shared_data,
        relation=relation,
    )
    slope, intercept = np.polyfit(relation.x, relation.y, 1)
    assert np.allclose(table["predicted_improvement"], intercept + slope * table["advantage"])
    assert (table["prediction_low"] < table["predicted_improvement"]).all()
    assert table["predicted_improvement"].is_monotonic_decreasing

    proximity = str(Path(sys.executable).parent / "proximity")
    done = subprocess.run(
        [
            proximity,
            "recommend",
            "--target",
            "sciq",
            "--candidates",
            "starcoder:0.2",
            "math:0.12",
            "--runs",
            str(root),
            "--out",
            str(tmp_path / "rec"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    written = pd.read_csv(tmp_path / "rec" / "recommend.csv")
    assert sorted(written["candidate"]) == ["math:0.12", "starcoder:0.2"]
    assert "leave-one-target-out RMSE" in done.stdout
