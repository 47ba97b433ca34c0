"""Figures: the similarity heatmap and the proximity-advantage bar chart, as PNG files.

Plain matplotlib through its object API (no pyplot, no seaborn: importing seaborn alone
cost 1.3 s, longer than everything else a cached command does). Import this module only to
draw: commands check `proximity.outputs.png_figure_key` first, and each PNG carries the key
of the inputs it was drawn from. Labels are shortened without ever making two equal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from proximity.atomic import atomic_path
from proximity.labels import shorten_unique
from proximity.outputs import FIGURE_KEY

HEATMAP_LABEL = 28
BAR_LABEL = 40
DPI = 200
POSITIVE, NEGATIVE = "#2a9d8f", "#e76f51"


def save_heatmap(
    matrix: pd.DataFrame, path: str | Path, *, title: str, note: str = "", key: str = ""
) -> Path:
    """Annotated heatmap of a square matrix (rows a, columns b), paper-ready.

    The colour scale spans the off-diagonal values only: the diagonal is 1 by construction,
    and letting it set the scale squeezes the comparisons that matter into a few shades.
    Diagonal cells are left uncoloured and annotated in grey.
    """
    values = matrix.to_numpy(dtype=float)
    labels = shorten_unique([str(x) for x in matrix.index], HEATMAP_LABEL)
    n = len(labels)
    diagonal = (
        np.eye(n, dtype=bool) if values.shape == (n, n) and n > 1 else np.zeros_like(values, bool)
    )
    scaled = values[~diagonal] if diagonal.any() else values.ravel()
    size = max(4.5, 0.9 * n + 2.5)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(
        np.ma.masked_array(values, diagonal),
        cmap="magma_r",
        vmin=float(np.nanmin(scaled)),
        vmax=float(np.nanmax(scaled)),
    )
    ax.set_xticks(range(n), labels, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), labels)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if n <= 15:
        middle = (np.nanmin(scaled) + np.nanmax(scaled)) / 2
        for i in range(n):
            for j in range(n):
                colour = (
                    "0.55" if diagonal[i, j] else ("white" if values[i, j] > middle else "black")
                )
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=colour)
    fig.colorbar(image, ax=ax, shrink=0.8, label="similarity")
    ax.set_title(title)
    if note:  # a figure-level label, so the layout leaves room for it under the ticks
        fig.supxlabel(note, x=0.01, ha="left", fontsize=8, color="0.35")
    return _save(fig, path, key)


def save_advantage_chart(
    table: pd.DataFrame, path: str | Path, *, title: str, key: str = ""
) -> Path:
    """Horizontal bars of proximity advantage per mix (best on top), with CIs if present."""
    ordered = table.sort_values("advantage")
    labels = shorten_unique([str(x) for x in ordered["mix"]], BAR_LABEL)
    values = ordered["advantage"].to_numpy(dtype=float)
    positions = np.arange(len(labels))
    fig = Figure(figsize=(7.5, max(2.5, 0.55 * len(labels) + 1.5)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh(positions, values, color=[POSITIVE if v >= 0 else NEGATIVE for v in values])
    ax.set_yticks(positions, labels)
    low, high = ordered["ci_low"].to_numpy(dtype=float), ordered["ci_high"].to_numpy(dtype=float)
    if np.isfinite(low).all() and np.isfinite(high).all():
        err = np.vstack([np.maximum(values - low, 0), np.maximum(high - values, 0)])
        ax.errorbar(values, positions, xerr=err, fmt="none", ecolor="0.2", capsize=3)
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.grid(axis="x", color="0.9")
    ax.set_axisbelow(True)
    ax.set_xlabel("proximity advantage  sim(mix, target) − sim(pretrain, target)")
    ax.set_title(title)
    return _save(fig, path, key)


def _save(fig: Figure, path: str | Path, key: str) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={FIGURE_KEY: key} if key else None)
    return Path(path)
