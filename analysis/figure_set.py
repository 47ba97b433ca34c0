"""Which figures a grid can show, drawn into one folder, with a note for each it cannot."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from proximity.analysis import plots
from proximity.analysis.correlate import Correlation
from proximity.analysis.curves import branch_curves, example_branch
from proximity.analysis.results import Grid

FIGURES = {
    "fig1_similarity": "Similarity of pretraining data, specialised data (named by the grid's "
    "mixture) and targets; * after a name: a local stand-in for the real dataset",
    "fig2_pa_vs_improvement": "Proximity advantage vs relative improvement after SFT, one panel "
    "per model size; error bars: ± 1 seed std of the pair's improvement (training noise only, "
    "same validation examples for every seed); dashed: least-squares line with its 95% "
    "confidence band; * after a name: a local stand-in for the real dataset",
    "fig2b_metrics": "Pearson r of every similarity metric, side by side",
    "fig3_start_step": "Loss after SFT vs the midtraining start step",
    "fig4_ablation": "Start step × weight grid (code ablation)",
    "fig5_forgetting": "Forgetting: C4 loss after SFT, midtraining vs CPT vs control",
    "fig6_phase_curves": "Loss curves of every phase of one branch",
    "fig7_cka": "Per-layer CKA between the base and midtrained models",
}


@dataclass
class FigureSet:
    """Paths written (PNG and PDF) and, per figure not drawn, why."""

    written: list[Path] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, paths: list[Path], why_not: str) -> None:
        if paths:
            self.written.extend(paths)
        else:
            self.missing[name] = why_not


def draw_correlation_figures(
    result: Correlation,
    grid: Grid,
    out: Path,
    *,
    similarity: pd.DataFrame | None = None,
    cka: pd.DataFrame | None = None,
) -> FigureSet:
    """Figures 1-7 from correlate's tables, those the grid has data for."""
    out = Path(out)
    drawn = FigureSet()
    result, similarity = mark_stand_ins(result, similarity, grid.stand_ins)
    metrics = result.statistics["inputs"]["metrics"]
    if similarity is not None and len(similarity):
        drawn.add(
            "fig1_similarity",
            plots.similarity_heatmap(similarity, metrics[0], out / "fig1_similarity"),
            "",
        )
    else:
        drawn.missing["fig1_similarity"] = "no similarity matrix computed (--no-heatmap)"
    for metric in metrics:
        name = "fig2_pa_vs_improvement" + ("" if len(metrics) == 1 else f"_{metric}")
        drawn.add(
            name,
            plots.pa_scatter(result.pairs, result.statistics, metric, out / name),
            "no (mixture, target) pair has both an outcome and a PA",
        )
    if len(metrics) > 1:
        drawn.add(
            "fig2b_metrics",
            plots.metric_comparison(result.statistics, out / "fig2b_metrics"),
            "fewer than two metrics with a defined r",
        )
    for name, draw, reason in (
        ("fig3_start_step", plots.start_step_curves,
         "no mixture was started from two or more steps"),
        ("fig4_ablation", plots.ablation_grid,
         "no mixture has three or more (start step, weight) cells"),
        ("fig5_forgetting", plots.forgetting, "no control or no midtraining/CPT branch"),
    ):  # fmt: skip
        drawn.add(name, draw(result.outcomes, out / name), reason)
    run = example_branch(result.outcomes)
    curves = branch_curves(grid.root, run) if run is not None else pd.DataFrame()
    title = ""
    if run is not None:
        curves = readable_curves(curves, run)
        title = (
            f"{run['model']}, seed {run['seed']}: "
            f"{plots.mixture_label(run['mixture'], run['mixture_spec'])} at {run['weight']:.0%} "
            f"from step {run['start_step']}, SFT on {run['target']}"
        )
    drawn.add(
        "fig6_phase_curves",
        plots.phase_curves(curves, title, out / "fig6_phase_curves"),
        "the grid's nodes/<id>/metrics.jsonl files are not there",
    )
    if cka is not None:
        drawn.add("fig7_cka", plots.cka_layers(cka, out / "fig7_cka"), "empty CKA table")
    else:
        drawn.missing["fig7_cka"] = "run `proximity cka BASE OTHER --data c4` (needs checkpoints)"
    return drawn


def mark_stand_ins(
    result: Correlation, similarity: pd.DataFrame | None, stand_ins: Collection[str]
) -> tuple[Correlation, pd.DataFrame | None]:
    """Copies of correlate's tables for drawing, with `*` after every dataset name the grid
    read from a local stand-in (targets, mixture specs, figure 1's rows), so a figure pasted
    alone still says which data were not the real thing. The tables written are unchanged."""
    if not stand_ins:
        return result, similarity
    pattern = re.compile(
        r"(?<![\w./-])(" + "|".join(map(re.escape, sorted(stand_ins, key=len, reverse=True)))
        + r")(?![\w*-])"
    )  # fmt: skip

    def star(text: object) -> object:
        return pattern.sub(rf"\1{plots.STAND_IN}", text) if isinstance(text, str) else text

    def frame(table: pd.DataFrame) -> pd.DataFrame:
        columns = [c for c in ("target", "mixture_spec") if c in table]
        return table.assign(**{c: table[c].map(star) for c in columns})

    marked = dataclasses.replace(result, pairs=frame(result.pairs), outcomes=frame(result.outcomes))
    if similarity is not None:
        similarity = similarity.rename(index=star, columns=star)
    return marked, similarity


def readable_curves(curves: pd.DataFrame, run: pd.Series) -> pd.DataFrame:
    """Figure 6's series named as figure 2 names them: the mixture by its grid name
    (`mathword mixture`), its added dataset as `mathword: gsm8k` (not the spec
    `gsm8k?format=plain&split=test`), other datasets by their source without options."""
    mixture = str(run["mixture"])
    added = {d.canonical() for d in plots.spec_datasets(run["mixture_spec"])}
    pretrain = {d.canonical() for d in plots.spec_datasets(run.get("pretrain_spec", "c4"))}

    def name(dataset: str) -> str:
        parts = plots.spec_datasets(dataset)
        if len(parts) > 1:
            return f"{mixture} mixture"
        if parts[0].canonical() in added and parts[0].canonical() not in pretrain:
            return plots.mixture_label(mixture, dataset)
        return parts[0].source

    return curves.assign(dataset=curves["dataset"].map(name)) if len(curves) else curves
