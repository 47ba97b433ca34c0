"""Figure 5 (forgetting) at the study's size: six mixtures wrap into rows of three, each
panel named by its mixture and dataset, one category order on the shared target axis."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from proximity.analysis import plots

STUDY = Path(__file__).parents[1] / "figures" / "study"


def test_six_mixtures_wrap_into_two_rows_with_readable_names(tmp_path, saved_figures):
    figures = saved_figures
    outcomes = pd.read_csv(STUDY / "outcomes.csv")
    outcomes = outcomes[outcomes["model"] == outcomes["model"].iloc[0]]  # one size's panels
    paths = plots.forgetting(outcomes, tmp_path / "fig5")
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    axes = figures[0].axes
    assert len(axes) == 6
    rows = sorted({round(ax.get_position().y0, 3) for ax in axes})
    assert len(rows) == 2 and len({round(ax.get_position().x0, 3) for ax in axes}) == 3
    assert {ax.get_title() for ax in axes} == {
        "code: starcoder", "instruct: flan", "legalweb: fineweb", "math", "mathword: gsm8k",
        "wiki: wikitext",
    }  # fmt: skip
    bottom = [ax for ax in axes if round(ax.get_position().y0, 3) == rows[0]]
    ticks = [[t.get_text() for t in ax.get_xticklabels()] for ax in bottom]
    assert ticks[0] == ticks[1] == ticks[2]  # one category order on the shared axis
    assert sorted(ticks[0]) == sorted(outcomes["target"].unique())
    assert all(ax.xaxis.label.get_visible() for ax in bottom)
    assert not any(ax.xaxis.label.get_visible() for ax in axes if ax not in bottom)
    legends = [ax.get_legend() for ax in axes if ax.get_legend() is not None]
    assert len(legends) == 1
    assert [t.get_text() for t in legends[0].get_texts()] == [
        "control (C4)", "midtraining 10%", "midtraining 50%", "CPT (100%)",
    ]  # fmt: skip


def test_two_sizes_get_their_own_panels_not_an_average(tmp_path, saved_figures):
    outcomes = pd.read_csv(STUDY / "outcomes.csv")
    outcomes = outcomes[outcomes["model"] == outcomes["model"].iloc[0]]
    bigger = outcomes.assign(model="bigger", c4_val_loss=outcomes["c4_val_loss"] + 1.0)
    plots.forgetting(pd.concat([outcomes, bigger]), tmp_path / "fig5")
    axes = saved_figures[0].axes
    assert len(axes) == 12
    titles = [ax.get_title() for ax in axes]
    assert sum(t.endswith("(bigger)") for t in titles) == 6
    # the larger size's panels show its own losses (1 nat above), not the two sizes' mean
    small = next(ax for ax in axes if ax.get_title() == f"math ({outcomes['model'].iloc[0]})")
    large = next(ax for ax in axes if ax.get_title() == "math (bigger)")
    low = min(y for line in small.lines for y in line.get_ydata())
    assert min(y for line in large.lines for y in line.get_ydata()) > low + 0.9
