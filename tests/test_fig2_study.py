"""Figure 2 at the study's size: 2 model sizes, 6 targets, 6 datasets x 2 weights (72 pairs
per size), drawn from a generated table with deliberate ties in PA."""

from __future__ import annotations

from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest

from proximity.analysis import plots
from proximity.analysis.correlation import Settings, bootstrap_two_way, pearson

STUDY_TARGETS = ("gsm8k", "pycode", "lima", "sciq", "openbookqa", "social_iqa")
STUDY_MIXTURES = {"code": "starcoder", "math": "math", "mathword": "gsm8k?split=test&format=plain",
                  "instruct": "flan", "legalweb": "fineweb", "wiki": "wikitext"}  # fmt: skip
SIZES = ("micro-2l-128", "micro-4l-256")


def study_pairs(seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """correlate's pairs table (first metric) and statistics for a simulated study: PA
    proportional to the weight per (dataset, target) with a true slope, seed std and
    example SE as the real grid would give; some PAs repeated exactly across targets."""
    rng = np.random.default_rng(seed)
    rows = []
    for model in SIZES:
        for j, (name, dataset) in enumerate(STUDY_MIXTURES.items()):
            for target in STUDY_TARGETS:
                base = 0.05 * rng.standard_normal() if target != "lima" else 0.02 * j
                for weight in (0.1, 0.4):
                    pa = base * weight / 0.4
                    rows.append({
                        "metric": "paper", "model": model, "branch_kind": "midtrain",
                        "mixture": name, "mixture_spec": f"c4:{1 - weight:g}+{dataset}:{weight:g}",
                        "pretrain_spec": "c4", "weight": weight, "start_step": 640,
                        "ablation": False, "target": target, "advantage": pa,
                        "improvement": 0.3 * pa + 0.01 * rng.standard_normal(),
                        "improvement_std": abs(0.005 * rng.standard_normal()),
                        "improvement_se_examples": 0.004, "n_seeds": 2, "in_correlation": True,
                    })  # fmt: skip
    pairs = pd.DataFrame(rows)
    settings = Settings(n_bootstrap=199)
    relations = []
    for model, group in pairs.groupby("model"):
        x, y = group["advantage"].to_numpy(), group["improvement"].to_numpy()
        relations.append({
            "metric": "paper", "model": model, "pearson": pearson(x, y),
            "bootstrap_two_way": bootstrap_two_way(x, y, group["target"], group["mixture"],
                                                   settings),
            "verdict": {"verdict": "inconclusive"},
        })  # fmt: skip
    return pairs, {"relations": relations}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    figures = []
    original = plots.save

    def keep(fig, path):
        figures.append(fig)
        return original(fig, path)

    plots.save = keep
    try:
        pairs, statistics = study_pairs()
        out = tmp_path_factory.mktemp("fig2") / "fig2"
        paths = plots.pa_scatter(pairs, statistics, "paper", out)
    finally:
        plots.save = original
    return pairs, figures[0], paths


def test_one_panel_per_size_and_files_written(drawn):
    _, fig, paths = drawn
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.exists() for p in paths)
    assert [ax.get_title() for ax in fig.axes] == list(SIZES)


def test_legend_names_dataset_and_weight_and_both_error_bars(drawn):
    _, fig, _ = drawn
    names = [t.get_text() for t in fig.legends[0].get_texts()]
    for target in STUDY_TARGETS:
        assert target in names
    for label in ("code: starcoder", "mathword: gsm8k", "instruct: flan", "legalweb: fineweb",
                  "wiki: wikitext", "math"):  # fmt: skip
        assert label in names
    assert "open: 10%" in names and "filled: 40%" in names
    assert any("seed std" in n and "2 seeds" in n for n in names)
    assert any("bootstrap SE" in n for n in names)


def test_targets_have_distinct_colour_blind_safe_hues(drawn):
    _, fig, _ = drawn
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    colours = {
        name: mcolors.to_hex(handle.get_color())
        for name, handle in zip(names, legend.legend_handles, strict=True)
        if name in STUDY_TARGETS
    }
    assert len(set(colours.values())) == len(STUDY_TARGETS)
    import seaborn as sns

    safe = {mcolors.to_hex(c) for c in sns.color_palette("colorblind")}
    # Not the palette's tan and light pink (close to its orange and pink) for six targets.
    assert not {mcolors.to_hex(sns.color_palette("colorblind")[i]) for i in (5, 6)} & set(
        colours.values()
    )
    assert set(colours.values()) <= safe


def test_points_tied_in_pa_are_pulled_apart(drawn):
    pairs, fig, _ = drawn
    # lima's PA is 0.02*j*w/0.4 for every size: the ties of the table are across targets.
    ax = fig.axes[0]
    xs = [
        round(float(line.get_xdata()[0]), 12)
        for line in ax.lines
        if line.get_marker() in plots.MARKERS and len(line.get_xdata()) == 1
    ]
    group = pairs[pairs["model"] == SIZES[0]]
    assert len(xs) == len(group)
    tied = group.duplicated("advantage", keep=False).sum()
    assert tied > 0  # the table has ties (PA 0 for lima's first dataset at both weights...)
    drawn_ties = pd.Series(xs).duplicated(keep=False)
    same_target = group.duplicated(["advantage", "target"], keep=False).to_numpy()
    assert not (drawn_ties.to_numpy() & ~same_target).any()


def test_mixture_label_drops_options_and_repeats():
    assert plots.mixture_label("mathword", "c4:0.9+gsm8k?split=test&format=plain:0.1") == (
        "mathword: gsm8k"
    )
    assert plots.mixture_label("math", "c4:0.6+math:0.4") == "math"
    assert plots.mixture_label("code", "starcoder") == "code: starcoder"  # CPT
    # Hub sources and paths by their last part; a stand-in's star kept after a path's stem.
    hub = "hf:allenai/c4:0.9+hf:bigcode/starcoderdata:0.1"
    assert plots.mixture_label("code", hub, "hf:allenai/c4") == "code: starcoderdata"
    assert plots.mixture_label("code", "c4:0.9+data/py.jsonl*:0.1") == "code: py*"


def test_the_legend_explains_the_stand_in_star_only_when_one_is_drawn(tmp_path, saved_figures):
    figures = saved_figures
    pairs, statistics = study_pairs()
    plots.pa_scatter(pairs, statistics, "paper", tmp_path / "plain")
    starred = pairs.assign(target=pairs["target"].replace({"pycode": "pycode*"}))
    plots.pa_scatter(starred, statistics, "paper", tmp_path / "starred")
    plain, marked = ([t.get_text() for t in f.legends[0].get_texts()] for f in figures)
    assert not any("stand-in" in n for n in plain)
    assert "pycode*" in marked and any(n.startswith("* local stand-in") for n in marked)


def test_one_seed_says_no_seed_bars_are_drawn(tmp_path, saved_figures):
    """With one seed there is no seed spread: the legend must not promise bars it cannot draw."""
    figures = saved_figures
    pairs, statistics = study_pairs()
    plots.pa_scatter(pairs.assign(n_seeds=1), statistics, "paper", tmp_path / "fig2")
    names = [t.get_text() for t in figures[0].legends[0].get_texts()]
    assert any("one seed: none drawn" in n for n in names)
    assert not any("1 seeds" in n for n in names)


def main(out: Path) -> None:
    """Draw the simulated figure for a look: python tests/test_fig2_study.py OUT."""
    pairs, statistics = study_pairs()
    print(plots.pa_scatter(pairs, statistics, "paper", out))


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]))
