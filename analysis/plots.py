"""Figures 1-7 of the paper, drawn from correlate's tables (seaborn, PNG and PDF).

Imported only to draw (matplotlib and seaborn cost about 1.5 s to import). Every figure is a
function of tables, so `proximity report` and tests can redraw them; each returns the paths it
wrote, or none when the grid lacks what the figure needs (a grid without an ablation has no
figure 4), and `missing_figures` says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from proximity.atomic import atomic_path
from proximity.errors import ProximityError
from proximity.labels import shorten_unique
from proximity.specs import DatasetSpec, parse_mixture

DPI = 200
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
STYLE = {
    **sns.axes_style("whitegrid"),
    **sns.plotting_context("paper", font_scale=1.25),
    "axes.titleweight": "bold",
    "legend.frameon": False,
    "pdf.fonttype": 42,  # editable text in the PDF, as journals ask
}
CB_ORDER = (0, 1, 2, 4, 9, 3, 5, 7, 8, 6)
"""seaborn's colour-blind palette, reordered so the first six hues are the most distinct
(blue, orange, green, pink, sky blue, vermilion; its tan and light pink come later)."""
BRANCH_ORDER = ("control", "midtrain", "cpt")
BRANCH_NAMES = {"control": "control (C4)", "midtrain": "midtraining", "cpt": "CPT (100%)"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: Path) -> list[Path]:
    """The figure as PNG (for screens and the report) and PDF (for a paper), atomically. The
    PDF carries no creation date, so redrawing the same data gives the same bytes (a rerun's
    figures can be compared with the committed ones byte for byte)."""
    written = []
    for suffix, metadata in ((".png", None), (".pdf", {"CreationDate": None})):
        target = path.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=DPI, metadata=metadata)
        written.append(target)
    return written


def _model_order(models: Sequence[str]) -> list[str]:
    """Model presets by size where the name says it (70m < 160m < 1b), else as given."""

    def size(name: str) -> float:
        digits = "".join(c for c in name.split("-")[0] if c.isdigit() or c == ".")
        unit = name.split("-")[0].lower().rstrip("0123456789.")
        scale = {"m": 1e6, "b": 1e9, "k": 1e3}.get(unit[-1:] if unit else "", 1.0)
        return float(digits) * scale if digits else float("inf")

    return sorted(pd.unique(pd.Series(models)), key=lambda m: (size(m), m))


def _percent(ax) -> None:
    ax.yaxis.set_major_formatter(mpl.ticker.PercentFormatter(1.0, decimals=1))


def _fit_band(x: np.ndarray, y: np.ndarray, grid: np.ndarray, level: float = 0.95):
    """Least-squares line and the confidence band of its mean (t-based, as regplot's)."""
    line = stats.linregress(x, y)
    fitted = line.intercept + line.slope * x
    dof = len(x) - 2
    s = np.sqrt(np.sum((y - fitted) ** 2) / dof)
    sxx = np.sum((x - x.mean()) ** 2)
    half = (
        stats.t.ppf(0.5 + level / 2, dof) * s * np.sqrt(1 / len(x) + (grid - x.mean()) ** 2 / sxx)
    )
    centre = line.intercept + line.slope * grid
    return centre, centre - half, centre + half


STAND_IN = "*"
"""Appended to a dataset's name in figures when the grid read a local stand-in for it
(`figure_set.mark_stand_ins`)."""


def _parsed(spec: object) -> list[DatasetSpec]:
    """The datasets of a grid spec as the grid parsed it (a hub source `hf:org/name` or a
    template holding `:` or `+` survive, which splitting the text would break); text that is
    not a spec is one dataset."""
    try:
        return list(parse_mixture(str(spec)).datasets)
    except ProximityError:
        return [DatasetSpec(str(spec))]


def _unstarred(dataset: DatasetSpec) -> DatasetSpec:
    return DatasetSpec(dataset.source.rstrip(STAND_IN), dataset.options)


def spec_datasets(spec: object) -> list[DatasetSpec]:
    """The datasets of a grid spec, with the stand-in star (`mark_stand_ins`) dropped."""
    return [_unstarred(d) for d in _parsed(spec)]


def _short_source(source: str) -> str:
    """A path or hub name by its last part without suffix (`data/x.jsonl*` → `x*`)."""
    bare = source.rstrip(STAND_IN)
    return (Path(bare).stem if "/" in bare else bare) + source[len(bare) :]


def mixture_label(mixture: str, mixture_spec: str, pretrain_spec: str = "c4") -> str:
    """A legend name for a grid mixture: its short name and the dataset it adds (options such
    as `?split=test` dropped, a path or hub name shortened, a stand-in's star kept), e.g.
    `mathword: gsm8k`; the name alone when they agree."""
    base = {d.canonical() for d in spec_datasets(pretrain_spec)}
    added = _parsed(mixture_spec)
    datasets = [d for d in added if _unstarred(d).canonical() not in base] or added[:1]
    dataset = "+".join(dict.fromkeys(_short_source(d.source) for d in datasets))
    return dataset if dataset.rstrip(STAND_IN) == mixture else f"{mixture}: {dataset}"


def _dodge(points: pd.DataFrame, targets: Sequence[str], span: float) -> np.ndarray:
    """Horizontal offsets that pull apart points of different targets at (nearly) the same
    PA: targets spread over ±1% of the panel's PA range, so a tie shows as a row."""
    order = {t: i for i, t in enumerate(targets)}
    step = 0.02 * span / max(len(targets) - 1, 1)
    centre = (len(targets) - 1) / 2
    return np.array([(order[t] - centre) * step for t in points["target"]])


def pa_scatter(
    pairs: pd.DataFrame, statistics: dict[str, Any], metric: str, path: Path
) -> list[Path]:
    """Figure 2: PA (x) vs relative improvement (y), colour = target, marker = mixture dataset,
    fill = mixture weight (filled: the dataset's largest weight, open: its smallest).

    One panel per model size; thin error bars are ± one seed std of the pair's improvement,
    thick translucent ones ± its bootstrap SE over validation examples when the grid recorded
    them (both said in the legend, with the number of seeds); points of different targets are
    dodged horizontally by at most ±1% of the PA range so ties stay visible; dashed line =
    least squares with its 95% confidence band; each panel's legend gives Pearson r and p as
    the paper does, and the two-way bootstrap interval and verdict that respect the crossed
    design. Colours: seaborn's colour-blind-safe palette (CB_ORDER; tab20 past 10 targets).
    """
    points = pairs[(pairs["metric"] == metric) & pairs["in_correlation"]]
    if points.empty:
        return []
    points = _labelled_points(points)
    models = _model_order(points["model"])
    targets = sorted(points["target"].unique())
    labels = sorted(points["label"].unique())
    palette = dict(zip(targets, _target_colours(len(targets)), strict=True))
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(labels)}
    has_se = "improvement_se_examples" in points and points["improvement_se_examples"].notna().any()
    relations = {(r["metric"], r["model"]): r for r in statistics["relations"]}
    with mpl.rc_context(STYLE):
        fig = _figure(4.8 * len(models) + 2.6, 5.0)
        axes = np.atleast_1d(fig.subplots(1, len(models), sharey=True, squeeze=False)[0])
        for ax, model in zip(axes, models, strict=True):
            group = points[points["model"] == model]
            x = group["advantage"].to_numpy(float)
            y = group["improvement"].to_numpy(float)
            shift = _dodge(group, targets, float(np.ptp(x)) if len(x) else 0.0)
            for row, dx in zip(group.itertuples(), shift, strict=True):
                _pa_point(ax, row, dx, palette[row.target], markers[row.label], has_se)
            _pa_fit(ax, x, y, relations.get((metric, model), {}))
            ax.axhline(0, color="0.4", linewidth=0.8)
            ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(5))
            ax.set_title(model)
            ax.set_xlabel(f"proximity advantage ({metric})")
            _percent(ax)
        axes[0].set_ylabel("relative improvement of SFT val loss\n(L_control − L_mix) / L_control")
        handles, names = _pa_legend(points, targets, palette, labels, markers, has_se)
        legend = fig.legend(handles, names, loc="outside right center", fontsize=9)
        for text, name in zip(legend.get_texts(), names, strict=True):
            if name.endswith(")") and name.split(" (")[-1] in ("colour)", "marker)", "fill)"):
                text.set_fontweight("bold")
        fig.suptitle("Does proximity advantage predict the gain of midtraining?")
        return save(fig, path)


def _labelled_points(points: pd.DataFrame) -> pd.DataFrame:
    """The pairs with their legend `label` (mixture dataset, CPT marked) and `filled` (the
    dataset's largest weight)."""
    pretrain = points.get("pretrain_spec", pd.Series("c4", index=points.index))
    points = points.assign(
        label=[
            mixture_label(m, s, p) + (" (CPT)" if kind == "cpt" else "")
            for m, s, p, kind in zip(
                points["mixture"], points["mixture_spec"], pretrain, points["branch_kind"],
                strict=True,
            )
        ]
    )  # fmt: skip
    highest = points.groupby("label")["weight"].transform("max")
    return points.assign(filled=points["weight"] == highest)


def _target_colours(n: int) -> list:
    """seaborn's colour-blind-safe palette in CB_ORDER; tab20 past 10 targets."""
    if n <= len(CB_ORDER):
        return [sns.color_palette("colorblind")[i] for i in CB_ORDER[:n]]
    return sns.color_palette("tab20", n)


def _pa_point(ax, row: Any, dx: float, colour: Any, marker: str, has_se: bool) -> None:
    """One pair: its seed-std error bar and marker, behind it its SE over examples."""
    if has_se and np.isfinite(row.improvement_se_examples):
        ax.errorbar(
            row.advantage + dx, row.improvement, yerr=row.improvement_se_examples,
            fmt="none", ecolor=colour, elinewidth=5, alpha=0.35, capsize=0,
        )  # fmt: skip
    std = row.improvement_std if np.isfinite(row.improvement_std) else 0.0
    ax.errorbar(
        row.advantage + dx,
        row.improvement,
        yerr=std,
        fmt=marker,
        color=colour,
        markerfacecolor=colour if row.filled else "white",
        markeredgecolor="black" if row.filled else colour,
        markeredgewidth=0.6 if row.filled else 1.6,
        markersize=7,
        capsize=2.5,
        elinewidth=0.9,
        alpha=0.9,
    )


def _pa_fit(ax, x: np.ndarray, y: np.ndarray, relation: dict[str, Any]) -> None:
    """The least-squares line with its 95% band, labelled with r, p, the two-way bootstrap
    interval and the verdict (nothing for fewer than three pairs or a single PA value)."""
    pearson = relation.get("pearson", {})
    if pearson.get("r") is None or len(x) <= 2 or not np.ptp(x) > 0:
        return
    grid = np.linspace(x.min(), x.max(), 100)
    centre, low, high = _fit_band(x, y, grid)
    label = f"fit: r = {pearson['r']:.2f}, p = {pearson['p']:.2g} (n = {len(x)})"
    boot = relation.get("bootstrap_two_way") or {}
    if boot.get("ci_low") is not None:
        label += f"\ntwo-way bootstrap CI [{boot['ci_low']:.2f}, {boot['ci_high']:.2f}]"
    word = (relation.get("verdict") or {}).get("verdict")
    if word:
        label += f"\nverdict: {word}"
    ax.plot(grid, centre, "--", color="0.25", label=label)
    ax.fill_between(grid, low, high, color="0.5", alpha=0.18, linewidth=0)
    ax.legend(loc="best", fontsize=8)


def _pa_legend(
    points: pd.DataFrame,
    targets: Sequence[str],
    palette: dict[str, Any],
    labels: Sequence[str],
    markers: dict[str, str],
    has_se: bool,
) -> tuple[list[Any], list[str]]:
    """Figure 2's shared legend: the error bars, then targets, mixtures and weights."""
    line = mpl.lines.Line2D
    blank = line([], [], linestyle="", marker="")
    seeds = "/".join(str(n) for n in sorted({int(n) for n in points["n_seeds"].dropna()})) or "?"
    handles = [line([], [], color="0.3", marker="|", markersize=14, linestyle="")]
    bars = "thin bars" if has_se else "error bars"
    noise = "one seed: none drawn" if seeds == "1" else f"{seeds} seeds; training noise"
    names = [f"{bars}: ± 1 seed std\n({noise})"]
    if has_se:
        handles.append(line([], [], color="0.3", linewidth=5, alpha=0.35))
        names.append("thick bars: ± 1 bootstrap SE\nover validation examples")
    handles.append(blank)
    names.append("SFT target (colour)")
    for t in targets:
        handles.append(line([], [], marker="o", linestyle="", color=palette[t],
                            markeredgecolor="black"))  # fmt: skip
        names.append(t)
    handles.append(blank)
    names.append("mixture dataset (marker)")
    for m in labels:
        handles.append(line([], [], marker=markers[m], linestyle="", color="0.55",
                            markeredgecolor="black"))  # fmt: skip
        names.append(m)
    by_label = points.groupby("label")["weight"]
    low, high = by_label.min(), by_label.max()
    open_ = sorted(set(low[low < high]))
    closed = sorted(set(high))
    if open_:  # some dataset at two or more weights: the fill tells them apart
        handles.append(blank)
        names.append("mixture weight (fill)")
        for fill, ws in (("white", open_), ("0.55", closed)):
            if not ws:
                continue
            handles.append(line([], [], marker="o", linestyle="", markerfacecolor=fill,
                                markeredgecolor="0.3", markeredgewidth=1.4))  # fmt: skip
            names.append(
                ("open: " if fill == "white" else "filled: ")
                + ", ".join("CPT (100%)" if w >= 1 else f"{w:.0%}" for w in ws)
            )
    if any(STAND_IN in name for name in [*targets, *labels]):
        handles.append(blank)
        names.append(f"{STAND_IN} local stand-in data\n(the report says for what)")
    return handles, names


def metric_comparison(statistics: dict[str, Any], path: Path) -> list[Path]:
    """Pearson r with its CI per metric and model: which similarity predicts gains best."""
    rows = [
        {
            "metric": r["metric"],
            "model": r["model"],
            "r": r["pearson"]["r"],
            "low": r["pearson"]["ci_low"],
            "high": r["pearson"]["ci_high"],
            "within": r["within_target"]["r"],
        }
        for r in statistics["relations"]
        if r["pearson"]["r"] is not None
    ]
    if len({row["metric"] for row in rows}) < 2:
        return []
    table = pd.DataFrame(rows)
    models = _model_order(table["model"])
    metrics = sorted(table["metric"].unique())
    with mpl.rc_context(STYLE):
        fig = _figure(7.0, 0.5 * len(metrics) * len(models) + 1.8)
        ax = fig.subplots()
        colours = sns.color_palette("colorblind", len(models))
        step = 0.8 / max(1, len(models))
        for k, model in enumerate(models):
            part = table[table["model"] == model].set_index("metric").reindex(metrics)
            pos = np.arange(len(metrics)) + k * step
            err = np.vstack([part["r"] - part["low"], part["high"] - part["r"]]).astype(float)
            ax.errorbar(
                part["r"],
                pos,
                xerr=np.nan_to_num(err),
                fmt="o",
                color=colours[k],
                capsize=3,
                label=f"{model}: r (95% CI)",
            )
            ax.plot(part["within"], pos, "x", color=colours[k], label=f"{model}: within-target r")
        ax.set_yticks(np.arange(len(metrics)) + step * (len(models) - 1) / 2, metrics)
        ax.axvline(0, color="0.4", linewidth=0.8)
        ax.set_xlim(-1.05, 1.05)
        ax.set_xlabel("Pearson r of PA with relative improvement")
        fig.legend(loc="outside lower center", ncols=2, fontsize=9)
        ax.set_title("Which similarity predicts the gains?")
        return save(fig, path)


def similarity_heatmap(matrix: pd.DataFrame, metric: str, path: Path) -> list[Path]:
    """Figure 1: similarity of the pretraining data, specialised data and targets."""
    labels = shorten_unique([str(x) for x in matrix.index], 24)
    values = matrix.to_numpy(float)
    off = values[~np.eye(len(values), dtype=bool)]
    with mpl.rc_context(STYLE):
        size = max(4.5, 0.85 * len(labels) + 2.5)
        fig = _figure(size + 1.2, size)
        ax = fig.subplots()
        # The colour scale spans the off-diagonal values; the diagonal (1 by definition) is
        # left uncoloured, so no cell is drawn in a colour beyond the colour bar.
        diagonal = np.eye(len(values), dtype=bool)
        ax.set_facecolor("0.92")
        sns.heatmap(
            pd.DataFrame(values, index=labels, columns=labels),
            ax=ax,
            mask=diagonal,
            annot=True,
            fmt=".2f",
            cmap="magma_r",
            vmin=float(off.min()),
            vmax=float(off.max()),
            square=True,
            linewidths=1,
            linecolor="white",
            cbar_kws={"label": f"similarity ({metric})"},
        )
        for i in range(len(values)):
            ax.text(i + 0.5, i + 0.5, "1", ha="center", va="center", color="0.45")
        ax.grid(False)
        ax.set_xticks(ax.get_xticks(), labels, rotation=35, ha="right", rotation_mode="anchor")
        starred = "; * local stand-in data" if any(STAND_IN in label for label in labels) else ""
        ax.set_title(f"Token-statistics similarity (diagonal = 1, uncoloured{starred})")
        return save(fig, path)


def _panel_grid(fig, n: int, **subplots: Any) -> tuple[np.ndarray, int]:
    """`n` axes in rows of at most three (so a figure of many panels prints at a readable
    size), the unused cells of the last row removed; also the number of columns."""
    ncols = min(3, n)
    grid = fig.subplots(-(-n // ncols), ncols, squeeze=False, **subplots)
    for ax in grid.ravel()[n:]:
        ax.remove()
    return grid.ravel()[:n], ncols


def _sizes(table: pd.DataFrame) -> list[str]:
    """The model sizes to draw apart (figures never average sizes together); [""] when the
    table has no model column."""
    return _model_order(table["model"]) if "model" in table else [""]


def start_step_curves(outcomes: pd.DataFrame, path: Path) -> list[Path]:
    """Figure 3: SFT loss and C4 loss after SFT vs the midtraining start step, per mixture.

    Lines are seed means, bands ± one seed std; the control is the dashed line. A line is a
    mixture at one weight started from at least two steps on that target; only targets with
    such a line get a panel. Colours and markers are fixed per line across panels, and the one
    legend lists every line drawn.
    """
    mid = outcomes[outcomes["branch_kind"] == "midtrain"].copy()
    mid["line"] = [
        f"{mixture_label(m, spec)} {round(100 * w)}%"
        for m, spec, w in zip(mid["mixture"], mid["mixture_spec"], mid["weight"], strict=True)
    ]
    steps = mid.groupby(["target", "line"])["start_step"].transform("nunique")
    mid = mid[steps >= 2]
    if mid.empty:
        return []
    lines = sorted(mid["line"].unique())
    # One column per model size and target: sizes are never averaged together.
    models = _sizes(mid)
    targets = [(m, t) for m in models for t in sorted(mid["target"].unique())
               if not m or ((mid["model"] == m) & (mid["target"] == t)).any()]  # fmt: skip
    colours = dict(zip(lines, sns.color_palette("colorblind", n_colors=len(lines)), strict=True))
    markers = {line: MARKERS[k % len(MARKERS)] for k, line in enumerate(lines)}
    control = outcomes[outcomes["branch_kind"] == "control"]
    with mpl.rc_context(STYLE):
        fig = _figure(max(7.0, 3.8 * len(targets) + 2.4), 6.4)
        axes = fig.subplots(2, len(targets), squeeze=False, sharex=True)
        for j, (model, target) in enumerate(targets):
            for i, (column, name) in enumerate(
                [("sft_val_loss", "SFT val loss"), ("c4_val_loss", "C4 loss after SFT")]
            ):
                ax = axes[i, j]
                data = mid[(mid["target"] == target) & ((mid["model"] == model) if model else True)]
                sns.lineplot(
                    data=data,
                    x="start_step",
                    y=column,
                    hue="line",
                    style="line",
                    hue_order=lines,
                    style_order=lines,
                    palette=colours,
                    markers=markers,
                    dashes=False,
                    errorbar="sd",
                    ax=ax,
                    legend=False,
                )
                base = control[control["target"] == target]
                base = (base[base["model"] == model] if model else base)[column]
                if len(base):
                    ax.axhline(base.mean(), linestyle="--", color="0.3")
                ax.set_ylabel(name if j == 0 else "")
                ax.set_xlabel("midtraining start step" if i == 1 else "")
                if i == 0:
                    ax.set_title(f"{target} ({model})" if len(models) > 1 else target)
        handles = [
            mpl.lines.Line2D([], [], color=colours[line], marker=markers[line], label=line)
            for line in lines
        ]
        handles.append(mpl.lines.Line2D([], [], color="0.3", linestyle="--", label="control"))
        axes[0, -1].legend(
            handles=handles, title="mixture", loc="upper left", bbox_to_anchor=(1.02, 1)
        )
        fig.suptitle("Loss after SFT vs midtraining start step (mean ± seed std)")
        return save(fig, path)


def ablation_grid(outcomes: pd.DataFrame, path: Path) -> list[Path]:
    """Figure 4: relative improvement on a start step × weight grid (the code ablation).

    Drawn for the mixture with the most (start step, weight) cells, preferring code
    (starcoder), one panel per target that has a grid (at least two start steps or two
    weights: a single cell is no ablation, and figure 2 shows it); cells are seed means.
    """
    mid = outcomes[outcomes["branch_kind"] == "midtrain"]
    cells = mid.groupby("mixture")[["start_step", "weight"]].apply(
        lambda g: len(g.drop_duplicates())
    )
    cells = cells[cells >= 3]
    if cells.empty:
        return []
    code = [m for m in cells.index if "code" in m or "starcoder" in m]
    mixture = max(code or list(cells.index), key=lambda m: cells[m])
    data = mid[mid["mixture"] == mixture]
    shape = data.groupby("target")[["start_step", "weight"]].nunique()
    targets = sorted(shape[(shape["start_step"] > 1) | (shape["weight"] > 1)].index)
    if not targets:
        return []
    data = data[data["target"].isin(targets)]
    models = _sizes(data)
    panels = [(m, t) for m in models for t in targets
              if not m or ((data["model"] == m) & (data["target"] == t)).any()]  # fmt: skip
    keys = (
        ["target", "start_step", "weight"]
        if models == [""]
        else ["model", "target", "start_step", "weight"]
    )
    limit = float(data.groupby(keys)["improvement"].mean().abs().max())
    limit = 100 * (limit or 1.0)  # one colour scale for every panel, centred on no change
    with mpl.rc_context(STYLE):
        ncols, nrows = min(3, len(panels)), -(-len(panels) // 3)
        fig = _figure(max(6.0, 3.6 * ncols + 1.5), (3.4 if len(panels) > 1 else 4.2) * nrows)
        axes, ncols = _panel_grid(fig, len(panels))
        for ax, (model, target) in zip(axes, panels, strict=True):
            part = data[data["target"] == target]
            part = part[part["model"] == model] if model else part
            table = part.pivot_table(
                index="start_step", columns="weight", values="improvement", aggfunc="mean"
            )
            table.columns = [f"{w:.0%}" for w in table.columns]
            sns.heatmap(
                table * 100,
                ax=ax,
                annot=True,
                fmt=".1f",
                cmap="vlag_r",
                center=0,
                vmin=-limit,
                vmax=limit,
                cbar=ax is axes[min(ncols, len(panels)) - 1],
                cbar_kws={"label": "relative improvement (%)"},
            )
            ax.grid(False)
            ax.set_title(target if len(models) < 2 else f"{target} ({model})")
            ax.set_xlabel(f"{mixture} weight")
            ax.set_ylabel("start step")
        sep = ": " if len(targets) > 1 else ":\n"  # one panel: the title must fit its width
        fig.suptitle(f"When and how much {mixture}{sep}relative improvement (seed mean, %)")
        return save(fig, path)


def forgetting(outcomes: pd.DataFrame, path: Path) -> list[Path]:
    """Figure 5: C4 loss after SFT for midtraining (per weight) vs CPT vs control, per target
    and mixture.

    Points with ± one seed std, not bars: the losses sit far from zero, and a bar on an axis
    that does not start at zero draws differences out of proportion.
    """
    main = outcomes[~outcomes["ablation"]]
    mixtures = sorted(main[main["branch_kind"] != "control"]["mixture"].unique())
    if not mixtures or "control" not in set(main["branch_kind"]):
        return []
    # One panel per model size and mixture: sizes are never averaged together.
    models = _sizes(main)
    rows, panels = [], []
    for model in models:
        scope = main[main["model"] == model] if model else main
        for mixture in mixtures:
            part = scope[(scope["mixture"] == mixture) | (scope["branch_kind"] == "control")]
            if (part["mixture"] == mixture).any():
                panels.append((f"{model}|{mixture}", model, mixture))
                rows.append(part.assign(panel=panels[-1][0]))
    data = pd.concat(rows)
    data["branch"] = [_branch_name(row) for row in data.itertuples()]
    order = sorted(data["branch"].unique(), key=lambda name: _branch_key(data, name))
    targets = list(pd.unique(data["target"]))
    with mpl.rc_context(STYLE):
        ncols, nrows = min(3, len(panels)), -(-len(panels) // 3)
        fig = _figure(4.0 * ncols + 2.4, 3.6 * nrows + 0.6)
        axes, ncols = _panel_grid(fig, len(panels), sharey=True, sharex=True)
        keyed = axes[ncols - 1]  # the top row's last panel carries the legend, beside it
        for k, (ax, (key, model, mixture)) in enumerate(zip(axes, panels, strict=True)):
            panel = data[data["panel"] == key]
            _forgetting_panel(ax, panel, mixture, targets, order, legend=ax is keyed)
            if len(models) > 1:
                ax.set_title(f"{ax.get_title()} ({model})")
            ax.set_ylabel(
                "C4 val loss after SFT\n(lower: less forgetting)" if k % ncols == 0 else ""
            )
            bottom = k + ncols >= len(panels)  # no panel below: label this one's axis
            ax.tick_params(axis="x", labelbottom=bottom)
            ax.xaxis.label.set_visible(bottom)
            for label in ax.get_xticklabels():
                label.set(rotation=30, ha="right", rotation_mode="anchor")
        if keyed.get_legend() is not None:
            sns.move_legend(keyed, "upper left", bbox_to_anchor=(1.02, 1), title="")
        fig.suptitle("Forgetting: C4 loss after SFT (mean ± seed std)")
        return save(fig, path)


def _forgetting_panel(
    ax, panel: pd.DataFrame, mixture: str, targets: list, order: list, legend: bool
) -> None:
    """One mixture's panel of figure 5: its branches beside the control, per target."""
    sns.pointplot(
        data=panel, x="target", y="c4_val_loss", order=targets, hue="branch", hue_order=order,
        errorbar="sd", capsize=0.1, dodge=0.5, linestyle="none",
        markers=list(MARKERS[: len(order)]), ax=ax, palette="colorblind", legend=legend,
    )  # fmt: skip
    spec = panel.loc[panel["mixture"] == mixture, "mixture_spec"].iloc[0]
    ax.set_title(mixture_label(mixture, spec))
    ax.set_xlabel("SFT target")


def _branch_name(row: Any) -> str:
    """Figure 5's legend entry: midtraining names its weight, so 10% and 50% stay apart."""
    if row.branch_kind == "midtrain":
        return f"midtraining {row.weight:.0%}"
    return BRANCH_NAMES[row.branch_kind]


def _branch_key(data: pd.DataFrame, name: str) -> tuple[int, float]:
    rows = data[data["branch"] == name]
    return BRANCH_ORDER.index(rows["branch_kind"].iloc[0]), float(rows["weight"].iloc[0])


def phase_curves(curves: pd.DataFrame, title: str, path: Path) -> list[Path]:
    """Figure 6: loss curves of every phase of one branch (pretrain → midtrain → SFT).

    `curves` has phase, step, split, dataset, loss (the trainer's metrics.jsonl lines).
    """
    if curves.empty:
        return []
    curves = curves.copy()
    curves["series"] = curves["split"] + ": " + curves["dataset"].astype(str)
    before = curves[curves["phase"] != "sft"]
    sft = curves[curves["phase"] == "sft"]
    with mpl.rc_context(STYLE):
        fig = _figure(11.0, 4.2)
        left, right = fig.subplots(1, 2)
        if not before.empty:
            sns.lineplot(
                data=before,
                x="step",
                y="loss",
                hue="series",
                style="phase",
                ax=left,
                marker="o",
                markersize=4,
            )  # a sparse log still shows its points
            switch = before[before["phase"] == "midtrain"]["step"].min()
            if np.isfinite(switch):
                left.axvline(switch, color="0.3", linestyle=":", label="midtraining starts")
            left.set_title("pretraining → midtraining")
            left.set_xlabel("global step")
            left.set_ylabel("loss (nats/token)")
            sns.move_legend(left, "upper right", fontsize=8, title_fontsize=8)
        if not sft.empty:
            sns.lineplot(
                data=sft, x="step", y="loss", hue="series", ax=right, marker="o", markersize=4
            )
            right.set_title("SFT")
            right.set_xlabel("SFT step")
            right.set_ylabel("")
            # "best" with the small title font: a fixed corner put the title on the frame.
            sns.move_legend(right, "best", fontsize=8, title="series", title_fontsize=8)
        fig.suptitle(title)
        return save(fig, path)


def cka_layers(cka: pd.DataFrame, path: Path) -> list[Path]:
    """Figure 7: how far each model moved from the base, per layer: 1 − linear CKA on a log
    axis. CKA itself crowds every midtraining branch into a hair's breadth below 1, where the
    lines cannot be told apart; its distance from 1, on a log scale, separates them."""
    if cka.empty:
        return []
    data = cka.assign(distance=(1.0 - cka["cka"]).clip(lower=1e-6))
    with mpl.rc_context(STYLE):
        fig = _figure(8.0, 4.2)
        ax = fig.subplots()
        sns.lineplot(
            data=data,
            x="layer",
            y="distance",
            hue="model",
            style="model",
            markers=True,
            dashes=False,
            palette="colorblind",
            ax=ax,
        )
        ax.set_yscale("log")
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("1 − linear CKA with the base model\n(log scale; higher: moved further)")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.set_title("How far midtraining moves each layer")
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.02, 1), title="")
        return save(fig, path)
