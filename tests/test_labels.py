"""Names in tables and figures: file stems by default, shortened without ever colliding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from proximity.figures import BAR_LABEL, HEATMAP_LABEL, save_advantage_chart, save_heatmap
from proximity.labels import dataset_names, shorten, shorten_unique
from proximity.outputs import png_figure_key
from proximity.specs import parse_spec

LONG = [
    "c4:0.8+starcoder:0.2+python_stdlib_code:0.0",
    "c4:0.8+starcoder:0.1+math:0.1",
    "c4:0.8+starcoder:0.2",
    "c4:0.8+starcoder:0.1+python_stdlib_code:0.1",
]


def test_a_path_is_named_by_its_stem_then_longer_forms() -> None:
    names = dataset_names(parse_spec("data/sets/he.jsonl.gz?template={prompt}"))
    assert names == [
        "he",
        "he?template={prompt}",
        "sets/he.jsonl.gz?template={prompt}",
        "data/sets/he.jsonl.gz?template={prompt}",
    ]
    assert dataset_names(parse_spec("gsm8k?split=test")) == ["gsm8k?split=test"]
    assert dataset_names(parse_spec("hf:allenai/c4?config=en")) == ["hf:allenai/c4?config=en"]


def test_shortening_keeps_both_ends_and_never_merges_two_labels() -> None:
    assert shorten("c4:0.8+starcoder:0.1+math:0.1", 22) == "c4:0.8+star…1+math:0.1"
    for limit in (HEATMAP_LABEL, BAR_LABEL, 12, 20):
        short = shorten_unique(LONG, limit)
        assert len(set(short)) == len(LONG), (limit, short)
    assert shorten_unique(["abc", "abc", "x" * 50], 10)[:2] == ["abc", "abc"]  # equal stays


def test_figures_are_written_with_their_key(tmp_path: Path) -> None:
    values = np.array([[1.0, 0.4, 0.5, 0.6], [0.4, 1.0, 0.7, 0.2],
                       [0.5, 0.7, 1.0, 0.3], [0.6, 0.2, 0.3, 1.0]])  # fmt: skip
    matrix = pd.DataFrame(values, index=LONG, columns=LONG)
    heatmap = save_heatmap(matrix, tmp_path / "h.png", title="t", note="n", key="k1")
    assert png_figure_key(heatmap) == "k1"
    table = pd.DataFrame({"mix": LONG, "advantage": [0.1, -0.02, 0.05, 0.0],
                          "ci_low": np.nan, "ci_high": np.nan})  # fmt: skip
    bars = save_advantage_chart(table, tmp_path / "b.png", title="t", key="k2")
    assert png_figure_key(bars) == "k2"
    assert png_figure_key(tmp_path / "missing.png") is None
