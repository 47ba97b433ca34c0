"""Figures, findings and the report, from a generated grid with real PA and real node logs."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from grid_utils import generated_results, write_grid

from proximity.analysis.figure_set import draw_correlation_figures
from proximity.analysis.findings import earlier_start, midtrain_vs_cpt, paper_findings
from proximity.analysis.report import (
    OTHER_COLUMNS,
    VERDICT_COLUMNS,
    portable_config,
    statistics_table,
)
from proximity.analysis.results import load_grid, relative_improvements
from proximity.errors import ProximityError
from proximity.registry import Registry

N_DOCS = 150
PROXIMITY = str(Path(sys.executable).parent / "proximity")


def _metrics_lines(phase: str, steps: range, start_loss: float) -> str:
    lines = []
    for step in steps:
        for split, dataset in (("train", "c4"), ("val", "c4")):
            loss = start_loss - 0.01 * step + (0.05 if split == "val" else 0)
            lines.append(
                json.dumps(
                    {
                        "phase": phase,
                        "step": step,
                        "tokens": step * 512,
                        "split": split,
                        "dataset": dataset,
                        "loss": loss,
                    }
                )
            )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def grid_dir(shared_data: Path, tmp_path_factory) -> Path:
    results = generated_results(noise=0.01, ablation_steps=(200, 400))
    root = write_grid(results, tmp_path_factory.mktemp("grid"), shared_data)
    for kind, column, steps, loss in (
        ("pretrain", "pretrain_node_id", range(0, 1001, 100), 8.0),
        ("midtrain", "branch_node_id", range(600, 1001, 100), 4.0),
        ("sft", "node_id", range(0, 51, 10), 3.5),
    ):
        for node in results[column].unique():
            folder = root / "nodes" / node
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "metrics.jsonl").write_text(_metrics_lines(kind, steps, loss))
    done = subprocess.run(
        [PROXIMITY, "correlate", str(root), "--metric", "all", "--n-docs", str(N_DOCS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return root


def test_correlate_draws_figures_1_to_6_as_png_and_pdf(grid_dir: Path):
    analysis = grid_dir / "analysis"
    manifest = json.loads((analysis / "figures.json").read_text())
    stems = {Path(n).stem for n in manifest["written"]}
    expected = {
        "fig1_similarity",
        "fig2b_metrics",
        "fig3_start_step",
        "fig4_ablation",
        "fig5_forgetting",
        "fig6_phase_curves",
        *(f"fig2_pa_vs_improvement_{m}" for m in ("paper", "cosine", "jaccard", "js", "ngram_kl")),
    }
    assert stems == expected
    for stem in stems:
        assert (analysis / f"{stem}.png").stat().st_size > 20_000
        assert (analysis / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"
    assert set(manifest["missing"]) == {"fig7_cka"}
    similarity = pd.read_csv(analysis / "similarity.csv", index_col=0)
    assert list(similarity.index) == list(similarity.columns)
    assert {"c4", "starcoder", "math", "alpaca", "pycode", "gsm8k", "lima"} <= set(similarity.index)


def test_a_grid_without_ablation_or_logs_says_which_figures_it_cannot_draw(shared_data, tmp_path):
    from proximity.analysis.correlate import correlate
    from proximity.stats import StatsOptions

    grid = load_grid(write_grid(generated_results(), tmp_path / "g", shared_data))
    result = correlate(grid, options=StatsOptions(n_docs=N_DOCS))
    drawn = draw_correlation_figures(result, grid, tmp_path / "figs")
    assert {
        "fig3_start_step",
        "fig4_ablation",
        "fig6_phase_curves",
        "fig7_cka",
        "fig1_similarity",
    } <= set(drawn.missing)
    assert (tmp_path / "figs" / "fig2_pa_vs_improvement.png").exists()


def test_findings_count_the_comparisons_they_rest_on():
    outcomes = relative_improvements(generated_results(ablation_steps=(200, 400)))
    found = midtrain_vs_cpt(outcomes, Registry.load())
    # The generator makes CPT 80% as good as midtraining and forget more (C4 loss + 0.3·w).
    beats = found["midtrain_beats_cpt_in_domain"]
    assert beats["verdict"] == "holds" and beats["wins"] == beats["pairs"]
    in_domain = {(r["mixture"], r["target"]) for r in beats["rows"]}
    assert in_domain == {("starcoder", "pycode"), ("math", "gsm8k"), ("alpaca", "lima")}
    assert found["less_forgetting_than_cpt"]["wins"] == 9
    early = earlier_start(outcomes)  # the generator makes an earlier start better
    assert early["verdict"] == "holds" and early["wins"] == early["pairs"] == 18
    worse = outcomes.copy()
    late = worse["start_step"] == 400
    worse.loc[late, "improvement"] += 1.0
    assert earlier_start(worse)["verdict"] == "does not hold"
    assert earlier_start(outcomes[~outcomes["ablation"]])["verdict"] == "not tested"


def test_report_is_self_contained_html_and_markdown(grid_dir: Path, tmp_path: Path):
    out = tmp_path / "report.html"
    done = subprocess.run(
        [PROXIMITY, "report", str(grid_dir), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 11  # figures 1-6 with fig2 for five metrics and fig2b
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "src='http" not in text and "<script" not in text  # nothing fetched from outside
    for needed in (
        "0.869",
        "python stdlib code for StarCoder",
        "proximity correlate",
        "train-grid",
        "Midtraining forgets less than CPT",
        "grid.yaml",
        "fig7_cka",
        "r without its most influential pair",
        "Permutation within targets p = ",
        "two-way bootstrap CI of r",
        "PA std over pairs",
        "held-out-target coverage",
        "Does the mixture similarity matter?",
        "dose-response",
        "predict forgetting",
        "n_seeds − 1 = 2 df: 4.30 standard errors",
        "error bars: ± 1 seed std",
        f"proximity report {grid_dir} --analysis {grid_dir / 'analysis'} --out",
    ):
        assert needed in text, needed
    markdown = out.with_suffix(".md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(links) == 11
    assert all((out.parent / link).exists() for link in links)
    statistics = json.loads((grid_dir / "analysis" / "statistics.json").read_text())
    findings = paper_findings(pd.read_csv(grid_dir / "analysis" / "outcomes.csv"), statistics)
    r = findings["pa_predicts_gains"]["models"]["micro-2l-128"]["r"]
    assert f"{r:.3f}" in markdown


def test_reproduce_commands_include_cka_when_its_table_is_there(grid_dir: Path, tmp_path: Path):
    from proximity.analysis.report import reproduce_commands

    grid = load_grid(grid_dir)
    statistics = json.loads((grid_dir / "analysis" / "statistics.json").read_text())
    pd.DataFrame({"model": ["a"], "layer": [0], "cka": [0.9], "data": ["c4"]}).to_csv(
        tmp_path / "cka.csv", index=False
    )
    commands = reproduce_commands(grid, statistics, tmp_path)
    assert commands[0].startswith("proximity train-grid")
    assert commands[1] == f"proximity cka --grid {grid_dir} --data c4 --out {tmp_path}"
    assert commands[2].startswith("proximity correlate")
    assert commands[3] == f"proximity report {grid_dir} --analysis {tmp_path} --out <report.html>"


def test_report_before_correlate_names_the_command(tmp_path, shared_data):
    root = write_grid(generated_results(), tmp_path / "g", shared_data)
    from proximity.analysis.report import build_report

    with pytest.raises(ProximityError, match="proximity correlate"):
        build_report(load_grid(root), root / "analysis")


def test_start_step_figure_labels_every_line_and_skips_targets_without_a_line(
    monkeypatch, tmp_path
):
    """Figure 3's one legend lists every line drawn in any panel (it once took the last
    panel's, which lacked a line), and a target with one start step per mixture gets no panel."""
    import proximity.analysis.plots as plots

    rows = []
    for seed in (0, 1):
        # As in the micro grid: the ablation's second start step exists for some targets only.
        for target, lines in [
            ("pycode", [("code", 0.2), ("code", 0.5)]),
            ("sciq", [("code", 0.5)]),
            ("gsm8k", []),
        ]:
            for mixture, weight in lines:
                for step in (100, 200):
                    rows.append(("midtrain", mixture, weight, step, target, seed))
            rows.append(("midtrain", "code", 0.2, 100, target, seed))  # one start: no line
            rows.append(("control", "c4", 0.0, 300, target, seed))
    outcomes = pd.DataFrame(
        rows, columns=["branch_kind", "mixture", "weight", "start_step", "target", "seed"]
    )
    outcomes["sft_val_loss"] = 4.0 + 0.001 * outcomes["start_step"] + 0.01 * outcomes["seed"]
    outcomes["c4_val_loss"] = 6.0 - 0.001 * outcomes["start_step"]
    outcomes["mixture_spec"] = [
        "c4" if m == "c4" else f"c4:{1 - w:g}+starcoder:{w:g}"
        for m, w in zip(outcomes["mixture"], outcomes["weight"], strict=True)
    ]
    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.setdefault("fig", fig) and [path])
    plots.start_step_curves(outcomes, tmp_path / "fig3.png")
    fig = drawn["fig"]
    titles = sorted(ax.get_title() for ax in fig.axes if ax.get_title())
    assert titles == ["pycode", "sciq"]
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == [
        "code: starcoder 20%", "code: starcoder 50%", "control",
    ]  # fmt: skip


def test_the_reports_grid_yaml_names_the_data_folder_relative_to_where_it_ran(
    tmp_path, monkeypatch
):
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    beside = {"name": "g", "data": {"data_dir": str(tmp_path / "shared" / "data"), "n_docs": 5}}
    shown = portable_config(beside)
    assert shown == {"name": "g", "data": {"data_dir": "../shared/data", "n_docs": 5}}
    assert beside["data"]["data_dir"] == str(tmp_path / "shared" / "data")  # the grid's own copy
    far = {"data": {"data_dir": "/"}}
    assert portable_config(far) == far  # not near the working directory: left as it is
    assert portable_config({"data": {"data_dir": None}}) == {"data": {"data_dir": None}}


def test_the_statistics_split_in_two_tables_loses_no_column_and_leads_with_the_caveats():
    committed = Path(__file__).parents[1] / "figures" / "study" / "statistics.json"
    table = statistics_table(json.loads(committed.read_text()))
    assert set(VERDICT_COLUMNS) | set(OTHER_COLUMNS) == set(table.columns)
    assert len(VERDICT_COLUMNS) + len(OTHER_COLUMNS) == len(table.columns) + 3  # keys twice
    for needed in ("r without its most influential pair", "permutation p within targets",
                   "two-way bootstrap CI (targets × mixtures)", "verdict"):  # fmt: skip
        assert needed in VERDICT_COLUMNS
    assert max(len(VERDICT_COLUMNS), len(OTHER_COLUMNS)) <= 12  # fits 1400 px (checked by eye)
