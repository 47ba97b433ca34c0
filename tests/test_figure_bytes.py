"""A figure redrawn from the same data has the same bytes (analysis/plots.py `save`), so a rerun's
figures can be compared with the committed ones byte for byte."""

from __future__ import annotations

import time

from proximity.analysis import plots


def _draw_and_save(folder):
    fig = plots._figure(3, 2)
    fig.add_subplot().plot([0, 1, 2], [1, 0, 2], label="a line")
    return plots.save(fig, folder / "figure")


def test_a_redrawn_figure_has_the_same_bytes_a_second_later(tmp_path, monkeypatch):
    # without SOURCE_DATE_EPOCH matplotlib stamps a PDF with the second it was written
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = _draw_and_save(tmp_path / "first")
    time.sleep(1.1)
    second = _draw_and_save(tmp_path / "second")
    assert [p.suffix for p in first] == [".png", ".pdf"]
    for a, b in zip(first, second, strict=True):
        assert a.stat().st_size > 1000  # a real drawing, not an empty file
        assert a.read_bytes() == b.read_bytes(), a.name
    assert b"CreationDate" not in first[1].read_bytes()
