"""Results files: tidy CSV, JSON with every option and source, heatmap and bar-chart PNGs.

Every file is written atomically (see `proximity.atomic`), so an interrupted run leaves
either the previous complete file or none, never a truncated one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from proximity.atomic import atomic_path, write_text_atomic

MAX_LABEL = 28


def write_csv(table: pd.DataFrame, path: str | Path) -> Path:
    """Write `table` without its index, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)


def write_json(payload: dict[str, Any], path: str | Path) -> Path:
    """Write `payload` as indented JSON (NaN becomes null), atomically."""
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False, default=str)
    return write_text_atomic(path, text + "\n")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def short_label(label: str, limit: int = MAX_LABEL) -> str:
    """A readable axis label: a file path becomes its file name, long names are elided."""
    head, sep, query = label.partition("?")
    if "/" in head and "+" not in head:
        head = Path(head).name
    text = head + (sep + query if sep and len(head) + len(query) < limit else "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def save_heatmap(matrix: pd.DataFrame, path: str | Path, *, title: str, note: str = "") -> Path:
    """Annotated heatmap of a square matrix (rows a, columns b), paper-ready.

    The colour scale spans the off-diagonal values only: the diagonal is 1 by construction,
    and letting it set the scale squeezes the comparisons that matter into a few shades.
    Diagonal cells are left uncoloured and annotated in grey.
    """
    values = matrix.to_numpy(dtype=float)
    labels = [short_label(str(x)) for x in matrix.index]
    n = len(labels)
    diagonal = np.eye(n, dtype=bool) if values.shape == (n, n) and n > 1 else None
    scaled = values[~diagonal] if diagonal is not None else values.ravel()
    size = max(4.5, 0.9 * n + 2.5)
    sns.set_theme(style="white", context="paper", font_scale=1.15)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    sns.heatmap(
        values,
        ax=ax,
        mask=diagonal,
        annot=n <= 15,
        fmt=".2f",
        cmap="rocket_r",
        vmin=float(np.nanmin(scaled)),
        vmax=float(np.nanmax(scaled)),
        square=True,
        linewidths=0.5,
        cbar_kws={"label": "similarity", "shrink": 0.8},
        xticklabels=labels,
        yticklabels=labels,
    )
    if diagonal is not None and n <= 15:
        for i in range(n):
            ax.text(i + 0.5, i + 0.5, f"{values[i, i]:.2f}", ha="center", va="center", color="0.55")
    ax.set_xticklabels(ax.get_xticklabels(), rotation=35, ha="right")
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    ax.set_title(title)
    if note:
        fig.text(0.01, 0.01, note, fontsize=8, color="0.35")
    return _save(fig, path)


def save_advantage_chart(table: pd.DataFrame, path: str | Path, *, title: str) -> Path:
    """Horizontal bars of proximity advantage per mix (best on top), with CIs if present."""
    ordered = table.sort_values("advantage")
    labels = [short_label(str(x), 40) for x in ordered["mix"]]
    values = ordered["advantage"].to_numpy(dtype=float)
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.15)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.55 * len(labels) + 1.5)))
    colors = ["#2a9d8f" if v >= 0 else "#e76f51" for v in values]
    ax.barh(labels, values, color=colors)
    low, high = ordered["ci_low"].to_numpy(dtype=float), ordered["ci_high"].to_numpy(dtype=float)
    if np.isfinite(low).all() and np.isfinite(high).all():
        err = np.vstack([np.maximum(values - low, 0), np.maximum(high - values, 0)])
        ax.errorbar(values, labels, xerr=err, fmt="none", ecolor="0.2", capsize=3)
    ax.axvline(0, color="0.3", linewidth=0.8)
    ax.set_xlabel("proximity advantage  sim(mix, target) − sim(pretrain, target)")
    ax.set_title(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=200, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
