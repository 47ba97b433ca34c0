"""Figure 4 (start step x weight) at the study's size: one panel per model size and target,
three to a row, one colour scale; sizes are never averaged together."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from proximity.analysis import plots

STUDY = Path(__file__).parents[1] / "figures" / "study"


def test_each_size_gets_its_own_panels_in_rows_of_three(tmp_path, saved_figures):
    outcomes = pd.read_csv(STUDY / "outcomes.csv")
    outcomes = outcomes[outcomes["model"] == outcomes["model"].iloc[0]]
    # a second size whose gains are half the first's: its cells must show half, not the mean
    both = pd.concat(
        [outcomes, outcomes.assign(model="bigger", improvement=outcomes["improvement"] / 2)]
    )
    plots.ablation_grid(both, tmp_path / "fig4")
    heatmaps = [ax for ax in saved_figures[0].axes if ax.get_title()]
    assert len(heatmaps) == 12  # 2 sizes x 6 targets, each with two weights
    assert len({round(ax.get_position().x0, 3) for ax in heatmaps}) == 3
    code = outcomes[(outcomes["branch_kind"] == "midtrain") & (outcomes["mixture"] == "code")]
    cell = code[
        (code["target"] == "pycode") & (code["start_step"] == 480) & (code["weight"] == 0.5)
    ]
    first = 100 * cell["improvement"].mean()
    shown = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in heatmaps}
    model = outcomes["model"].iloc[0]
    assert f"{first:.1f}" in shown[f"pycode ({model})"]
    assert f"{first / 2:.1f}" in shown["pycode (bigger)"]
