"""`proximity correlate`: outcomes from a grid's results, the PA join, the outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from grid_utils import MIXTURES, TARGETS, generated_results, write_grid
from scipy import stats

from proximity.analysis.correlate import correlate, write_correlation
from proximity.analysis.results import average_seeds, load_grid, relative_improvements
from proximity.errors import ProximityError
from proximity.metrics import get_metric
from proximity.settings import SimilaritySettings
from proximity.similarity import advantage_table
from proximity.stats import StatsOptions

N_DOCS = 150  # PA on a small sample: the join is under test, not the similarity
PROXIMITY = str(Path(sys.executable).parent / "proximity")


def test_relative_improvement_recovers_the_generated_gain_at_the_selected_lr():
    gain = {
        (m, t): 0.01 * i - 0.02 * j for i, m in enumerate(MIXTURES) for j, t in enumerate(TARGETS)
    }
    outcomes = relative_improvements(generated_results(gain=gain, cpt=False))
    midtrain = outcomes[outcomes["branch_kind"] == "midtrain"]
    assert len(midtrain) == 3 * len(MIXTURES) * len(TARGETS)  # seeds × mixtures × targets
    for row in midtrain.itertuples():
        assert row.improvement == pytest.approx(gain[(row.mixture, row.target)], abs=1e-12)
    control = outcomes[outcomes["branch_kind"] == "control"]
    assert np.allclose(control["improvement"], 0.0)


def test_seed_average_keeps_the_spread():
    outcomes = relative_improvements(generated_results(noise=0.05, rng_seed=3))
    summary = average_seeds(outcomes)
    row = summary[
        (summary["branch_kind"] == "midtrain")
        & (summary["mixture"] == "math")
        & (summary["target"] == "gsm8k")
    ].iloc[0]
    seeds = outcomes[
        (outcomes["branch_kind"] == "midtrain")
        & (outcomes["mixture"] == "math")
        & (outcomes["target"] == "gsm8k")
    ]["improvement"]
    assert row["improvement"] == pytest.approx(np.mean(seeds))
    assert row["improvement_std"] == pytest.approx(np.std(seeds, ddof=1))
    assert row["n_seeds"] == 3 and row["seeds"] == "0,1,2"


def test_a_branch_without_its_seeds_control_is_left_out():
    results = generated_results(seeds=(0, 1))
    no_control = (results["seed"] == 1) & (results["branch_kind"] == "control")
    outcomes = relative_improvements(results[~no_control])
    assert set(outcomes["seed"]) == {0}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.drop(columns="selected"), "missing column(s) selected"),
        (lambda r: r.assign(selected=["maybe"] * len(r)), "results.csv:2: column selected"),
        (lambda r: r.assign(branch_kind="finetune"), "branch_kind has 'finetune'"),
        (lambda r: r.assign(sft_val_loss=["x"] * len(r)), "column sft_val_loss"),
        (lambda r: r.assign(selected=True), "exactly one LR may be selected"),
    ],
)
def test_bad_results_are_one_line_errors_naming_the_file_and_column(tmp_path, change, message):
    write_grid(change(generated_results()), tmp_path)
    with pytest.raises(ProximityError, match=None) as error:
        grid = load_grid(tmp_path)
        relative_improvements(grid.results)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_results_names_the_command_to_run(tmp_path):
    with pytest.raises(ProximityError, match="train-grid"):
        load_grid(tmp_path)


@pytest.fixture(scope="module")
def correlated(shared_data: Path, tmp_path_factory):
    root = write_grid(
        generated_results(noise=0.01, ablation_steps=(200,)),
        tmp_path_factory.mktemp("grid"),
        shared_data,
    )
    grid = load_grid(root)
    return grid, correlate(grid, metric="all", options=StatsOptions(n_docs=N_DOCS))


def test_pa_in_the_join_is_proximitys_advantage_of_the_trained_specs(correlated, shared_data):
    _, result = correlated
    pairs = result.pairs
    direct = advantage_table(
        "c4",
        "pycode",
        ["c4:0.8+starcoder:0.2", "starcoder"],
        SimilaritySettings(get_metric("paper"), StatsOptions(n_docs=N_DOCS)),
        data_dir=shared_data,
    ).set_index("mix_spec")["advantage"]
    paper = pairs[(pairs["metric"] == "paper") & (pairs["target"] == "pycode")]
    mid = paper[
        (paper["branch_kind"] == "midtrain")
        & ~paper["ablation"]
        & (paper["mixture"] == "starcoder")
    ]
    cpt = paper[(paper["branch_kind"] == "cpt") & (paper["mixture"] == "starcoder")]
    assert mid["advantage"].item() == pytest.approx(direct["c4:0.8+starcoder:0.2"], abs=1e-12)
    assert cpt["advantage"].item() == pytest.approx(direct["starcoder"], abs=1e-12)
    assert (paper[paper["branch_kind"] == "control"]["advantage"] == 0).all()
    assert pairs["advantage"].notna().all()


def test_statistics_are_those_of_the_joined_table_per_metric(correlated):
    _, result = correlated
    relations = result.statistics["relations"]
    assert {r["metric"] for r in relations} == {"paper", "cosine", "jaccard", "js", "ngram_kl"}
    for relation in relations:
        rows = result.pairs[
            (result.pairs["metric"] == relation["metric"]) & result.pairs["in_correlation"]
        ]
        assert len(rows) == len(MIXTURES) * len(TARGETS)  # midtrain, no ablation, no CPT
        assert set(rows["branch_kind"]) == {"midtrain"} and not rows["ablation"].any()
        expected = stats.pearsonr(rows["advantage"], rows["improvement"])
        assert relation["pearson"]["r"] == pytest.approx(expected.statistic, abs=1e-12)
        assert relation["pearson"]["p"] == pytest.approx(expected.pvalue, rel=1e-9)
        assert relation["n_pairs"] == len(relation["points"]) == len(rows)


def test_outputs_are_written_and_read_back(correlated, tmp_path):
    _, result = correlated
    paths = write_correlation(result, tmp_path)
    assert [p.name for p in paths] == ["outcomes.csv", "correlation.csv", "statistics.json"]
    table = pd.read_csv(tmp_path / "correlation.csv")
    assert len(table) == len(result.pairs)
    record = json.loads((tmp_path / "statistics.json").read_text())
    assert record["inputs"]["substitutes"] == ["starcoder: python stdlib code for StarCoder"]
    assert record["paper"]["v1"]["70m"] == 0.869


def test_correlate_command_line(shared_data, tmp_path):
    root = write_grid(generated_results(), tmp_path / "grid", shared_data)
    done = subprocess.run(
        [
            PROXIMITY,
            "correlate",
            str(root),
            "--n-docs",
            str(N_DOCS),
            "--out",
            str(tmp_path / "out"),
            "--no-plot",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "paper / micro-2l-128: r = " in done.stdout
    assert (tmp_path / "out" / "statistics.json").exists()
    bad = subprocess.run(
        [PROXIMITY, "correlate", str(tmp_path), "--metric", "bleu"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "results.csv" in bad.stderr


def test_the_grids_own_tokenizer_gives_a_second_set_of_statistics(shared_data, tmp_path):
    gpt2 = shared_data / "tokenizers" / "gpt2" / "tokenizer.json"
    grid = load_grid(write_grid(generated_results(noise=0.01), tmp_path, shared_data, str(gpt2)))
    options = StatsOptions(n_docs=N_DOCS)
    result = correlate(grid, options=options, compare_tokenizer="grid")
    comparison = result.statistics["tokenizer_comparison"]
    assert comparison["tokenizer"] == str(gpt2)
    points = pd.DataFrame(comparison["relations"][0]["points"])
    direct = advantage_table(
        "c4",
        "pycode",
        ["c4:0.8+starcoder:0.2"],
        SimilaritySettings(options=options),
        tokenizer=str(gpt2),
        data_dir=shared_data,
    )
    row = points[(points["mixture"] == "starcoder") & (points["target"] == "pycode")]
    assert row["advantage"].item() == pytest.approx(direct["advantage"].item(), abs=1e-12)
    pythia = pd.DataFrame(result.statistics["relations"][0]["points"])
    assert not np.allclose(pythia["advantage"], points["advantage"])  # another tokenizer
    assert np.allclose(pythia["improvement"], points["improvement"])  # the same outcomes
    same = correlate(grid, options=options, tokenizer="grid", compare_tokenizer="grid")
    assert same.statistics["tokenizer_comparison"] is None


def test_grid_tokenizer_and_data_dir_are_read_as_train_grid_writes_them(tmp_path):
    from proximity.analysis.advantage import grid_data_dir, grid_tokenizer

    config = {"tokenizer": {"name": "train", "corpus": "c4"}, "data": {"data_dir": "/d"}}
    with pytest.raises(ProximityError, match=r"no tokenizer\.json yet"):
        grid_tokenizer(config, tmp_path)
    node = tmp_path / "nodes" / "tokenizer-abc"
    node.mkdir(parents=True)
    (node / "tokenizer.json").write_text("{}")
    assert grid_tokenizer(config, tmp_path) == str(node / "tokenizer.json")
    assert grid_tokenizer({"tokenizer": {"name": "pythia"}}) == "pythia"
    assert grid_tokenizer({"tokenizer": "some/tokenizer.json"}) == "some/tokenizer.json"
    assert grid_data_dir(config) == "/d" and grid_data_dir({"data_dir": "/e"}) == "/e"
    with pytest.raises(ProximityError, match="names no tokenizer"):
        grid_tokenizer({})


def test_cpt_joins_the_line_only_when_asked(correlated):
    grid, _ = correlated
    both = correlate(grid, options=StatsOptions(n_docs=N_DOCS), branches=("midtrain", "cpt"))
    relation = both.statistics["relations"][0]
    assert relation["n_pairs"] == 2 * len(MIXTURES) * len(TARGETS)
    with pytest.raises(ProximityError, match="--branches"):
        correlate(grid, options=StatsOptions(n_docs=N_DOCS), branches=("control",))


def test_each_model_size_gets_its_own_relation(shared_data, tmp_path):
    results = generated_results(models=("160m", "70m"), noise=0.01)
    grid = load_grid(write_grid(results, tmp_path, shared_data))
    result = correlate(grid, options=StatsOptions(n_docs=N_DOCS))
    by_model = {r["model"]: r for r in result.statistics["relations"]}
    assert set(by_model) == {"70m", "160m", "pooled"}
    for model, relation in by_model.items():
        rows = result.pairs[result.pairs["in_correlation"]]
        if model != "pooled":
            rows = rows[rows["model"] == model]
        r = stats.pearsonr(rows["advantage"], rows["improvement"]).statistic
        assert relation["pearson"]["r"] == pytest.approx(r, abs=1e-12)
    pooled = by_model["pooled"]
    assert pooled["n_pairs"] == 2 * len(MIXTURES) * len(TARGETS)
    # Strata within model size (each size has its own control): 2 sizes × 3 targets.
    assert pooled["permutation_within_targets"]["n_strata"] == 2 * len(TARGETS)
    # The two-way bootstrap draws the targets and mixtures themselves, across both sizes.
    assert pooled["bootstrap_two_way"]["n_targets"] == len(TARGETS)
    assert pooled["bootstrap_two_way"]["n_mixtures"] == len(MIXTURES)

    from proximity.analysis.plots import _model_order

    assert _model_order(["1b", "160m", "micro-2l-128", "70m", "410m"]) == [
        "70m",
        "160m",
        "410m",
        "1b",
        "micro-2l-128",
    ]


def test_the_other_mixture_similarity_gives_a_second_set_of_statistics(correlated, shared_data):
    grid, _ = correlated
    options = StatsOptions(n_docs=N_DOCS)
    result = correlate(grid, options=options, compare_mixture="resample")
    comparison = result.statistics["mixture_comparison"]
    assert comparison["mixture"] == "resample" and result.statistics["inputs"]["mixture"] == (
        "expected"
    )
    points = pd.DataFrame(comparison["relations"][0]["points"])
    direct = advantage_table(
        "c4", "pycode", ["c4:0.8+starcoder:0.2"],
        SimilaritySettings(options=options, mixture="resample"), data_dir=shared_data,
    )  # fmt: skip
    row = points[(points["mixture"] == "starcoder") & (points["target"] == "pycode")]
    assert row["advantage"].item() == pytest.approx(direct["advantage"].item(), abs=1e-12)
    expected = pd.DataFrame(result.statistics["relations"][0]["points"])
    assert np.allclose(expected["improvement"], points["improvement"])  # the same outcomes
    assert (
        correlate(grid, options=options, compare_mixture="expected").statistics[
            "mixture_comparison"
        ]
        is None
    )  # the mode already used: nothing to compare
    questions = result.statistics["questions"]
    assert questions["forgetting"]["relations"][0]["verdict"]["expected_sign"] == -1
    assert "cells" in questions["dose_response"]  # the ablation gives weights 0.1, 0.2, 0.5
