"""`proximity recommend`: the prediction interval's coverage, the ranking, the command."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from grid_utils import generated_results, write_grid

from proximity.analysis.cli import correlate_output
from proximity.analysis.correlate import correlate, write_correlation
from proximity.analysis.recommend import FittedRelation, prediction_interval, recommend
from proximity.analysis.results import load_grid
from proximity.errors import ProximityError
from proximity.settings import SimilaritySettings
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
        "c4",
        "pycode",
        candidates,
        SimilaritySettings(options=StatsOptions(n_docs=N_DOCS)),
        data_dir=shared_data,
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


def _fitted(kinds: list[str], n_targets: int = 4) -> FittedRelation:
    """Midtraining pairs on improvement = 0.2·PA, CPT pairs on improvement = −0.1·PA."""
    x, y, targets, branch = [], [], [], []
    for kind in kinds:
        for t in range(n_targets):
            for k in range(3):
                pa = 0.01 * (t + 1) + 0.02 * k
                x.append(pa)
                y.append((0.2 if kind == "midtrain" else -0.1) * pa + 0.001 * ((t + k) % 2))
                targets.append(f"t{t}")
                branch.append(kind)
    return FittedRelation(
        metric="paper", model="m", x=np.array(x), y=np.array(y), loto_rmse=None,
        loto_baseline_rmse=None, r=None, targets=tuple(sorted(set(targets))),
        point_targets=tuple(targets), branch_kinds=tuple(branch),
    )  # fmt: skip


def test_cpt_candidates_use_a_line_fitted_on_cpt_branches_or_are_refused():
    from proximity.analysis.recommend import _predict, is_cpt

    assert is_cpt("starcoder", "c4") and not is_cpt("c4:0.8+starcoder:0.2", "c4")
    table = pd.DataFrame({"advantage": [0.03, 0.05, 0.5]})
    cpt = np.array([False, True, False])
    both = _predict(table, _fitted(["midtrain", "cpt"]), cpt)
    slope_mid = np.polyfit(*_fitted(["midtrain"]).part("midtrain")[:2], 1)
    slope_cpt = np.polyfit(*_fitted(["cpt"]).part("cpt")[:2], 1)
    assert both.loc[0, "predicted_improvement"] == pytest.approx(np.polyval(slope_mid, 0.03))
    assert both.loc[1, "predicted_improvement"] == pytest.approx(np.polyval(slope_cpt, 0.05))
    assert "cpt pairs" in both.loc[1, "fitted_on"] and both.loc[1, "note"] == ""
    assert both["pa_outside_grid"].tolist() == [False, False, True]  # 0.5 is past 0.07
    refused = _predict(table, _fitted(["midtrain"]), cpt)
    assert np.isnan(refused.loc[1, "predicted_improvement"])
    assert refused.loc[1, "note"].startswith("refused: a CPT candidate")
    assert "\n" not in refused.loc[1, "note"]
    assert np.isfinite(refused.loc[0, "predicted_improvement"])


def test_recommend_measures_pa_with_the_options_correlate_recorded(tmp_path):
    from proximity.analysis.cli import recorded_options

    inputs = {
        "tokenizer": "some/tokenizer.json",
        "mixture": "resample",
        "stats_options": asdict(StatsOptions(n_docs=300, max_tokens=128, sample="random")),
    }
    options, tokenizer, mixture = recorded_options(
        inputs, tmp_path / "statistics.json", tokenizer=None, n_docs=None, mixture=None
    )
    assert options == StatsOptions(n_docs=300, max_tokens=128, sample="random")
    assert (tokenizer, mixture) == ("some/tokenizer.json", "resample")
    same = recorded_options(inputs, tmp_path, tokenizer=None, n_docs=300, mixture="resample")
    assert same[0].n_docs == 300
    with pytest.raises(ProximityError, match=r"--mixture expected: .* correlated with --mixture"):
        recorded_options(inputs, tmp_path, tokenizer=None, n_docs=None, mixture="expected")
    with pytest.raises(ProximityError, match="--n-docs 1000"):
        recorded_options(inputs, tmp_path, tokenizer=None, n_docs=1000, mixture=None)


def test_the_default_line_is_the_last_model_size_not_the_pooled_one():
    points = [{"advantage": a, "improvement": a, "target": f"t{a}"} for a in (0, 1, 2)]
    relation = {"metric": "paper", "points": points, "pearson": {"r": 1.0},
                "leave_one_target_out": {"rmse": 0.0, "baseline_rmse": 1.0}}  # fmt: skip
    statistics = {
        "inputs": {"metrics": ["paper"]},
        "relations": [{**relation, "model": "70m"}, {**relation, "model": "160m"},
                      {**relation, "model": "pooled"}],
    }  # fmt: skip
    assert FittedRelation.from_statistics(statistics, None).model == "160m"
    assert FittedRelation.from_statistics(statistics, "pooled").model == "pooled"
