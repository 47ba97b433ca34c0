"""Stand-ins marked in figures: which datasets count (from results.csv's substitute notes), how
their names are starred, and figure 1's row names (the grid's short names, not raw specs)."""

from __future__ import annotations

import pandas as pd

from proximity.analysis import plots
from proximity.analysis.advantage import heatmap_datasets, heatmap_display_names
from proximity.analysis.correlate import Correlation
from proximity.analysis.figure_set import mark_stand_ins
from proximity.analysis.results import Grid
from proximity.data import is_split_note, split_note


def grid_with_notes(*notes: str) -> Grid:
    return Grid(root=".", results=pd.DataFrame({"substitutes": [*notes, None]}))


def test_split_notes_are_recognised_and_registry_notes_are_not():
    assert is_split_note(split_note("validation", "train"))
    assert is_split_note("sciq: " + split_note("test", "train"))
    assert not is_split_note("starcoder: CPython source stands in for StarCoderData")
    assert not is_split_note("wikitext: validation+test articles stand in for the train split")


def test_stand_ins_are_the_named_notes_other_than_another_split():
    grid = grid_with_notes(
        "starcoder: stdlib stands in for StarCoder; sciq: " + split_note("validation", "train"),
        # a registry note and a split note joined for one dataset: a stand-in
        "wikitext: articles stand in for train; " + split_note("test", "train"),
        # a branch's free-text note names no dataset
        "openbookqa: " + split_note("validation", "train") + "; GSM8K's test split stands in",
    )
    assert grid.stand_ins == {"starcoder", "wikitext"}
    assert grid_with_notes().stand_ins == set()
    assert Grid(root=".", results=pd.DataFrame({"x": [1]})).stand_ins == set()


def correlation(targets: list[str], specs: list[str]) -> Correlation:
    pairs = pd.DataFrame({"target": targets, "mixture_spec": specs, "advantage": 0.1})
    return Correlation(outcomes=pairs.copy(), pairs=pairs, statistics={})


def test_stand_in_names_are_starred_whole_and_the_tables_are_left_alone():
    result = correlation(
        ["pycode", "gsm8k", "math"],
        ["c4:0.9+math:0.1", "c4:0.5+mathword:0.5", "c4:0.9+code/starcoder.jsonl:0.1"],
    )
    similarity = pd.DataFrame(1.0, index=["c4", "math", "pycode"], columns=["c4", "math", "pycode"])
    marked, shown = mark_stand_ins(result, similarity, {"math", "pycode", "starcoder"})
    assert marked.pairs["target"].tolist() == ["pycode*", "gsm8k", "math*"]
    # `math` inside `mathword` and a path's stem are other names: not starred
    assert marked.pairs["mixture_spec"].tolist() == [
        "c4:0.9+math*:0.1", "c4:0.5+mathword:0.5", "c4:0.9+code/starcoder.jsonl:0.1",
    ]  # fmt: skip
    assert marked.outcomes["target"].tolist() == ["pycode*", "gsm8k", "math*"]
    assert shown.index.tolist() == ["c4", "math*", "pycode*"] == shown.columns.tolist()
    assert result.pairs["target"].tolist() == ["pycode", "gsm8k", "math"]  # written as read
    assert mark_stand_ins(result, None, set()) == (result, None)


def test_a_starred_dataset_keeps_its_legend_name():
    assert plots.mixture_label("math", "c4:0.5+math*:0.5") == "math*"
    assert plots.mixture_label("code", "c4:0.9+starcoder*:0.1") == "code: starcoder*"


def test_figure_1_rows_use_the_grids_short_names():
    pairs = pd.DataFrame({
        "pretrain_spec": "c4",
        "mixture": ["mathword", "code", "code", "both"],
        "mixture_spec": ["c4:0.9+gsm8k?split=test&format=plain:0.1", "c4:0.9+starcoder:0.1",
                         "starcoder", "c4:0.5+flan:0.25+lima:0.25"],
        "target": ["gsm8k", "pycode", "pycode", "gsm8k"],
        "target_spec": ["gsm8k", "pycode", "pycode", "gsm8k"],
    })  # fmt: skip
    named = heatmap_datasets(pairs)
    assert named == [
        "c4", "mathword=gsm8k?format=plain&split=test", "code=starcoder", "flan", "lima",
        "gsm8k", "pycode",
    ]  # fmt: skip
    shown = heatmap_display_names(named)
    assert shown == {"mathword": "mathword: gsm8k", "code": "code: starcoder"}
