"""`proximity correlate | report | recommend | cka`: top-level commands from analysis/.

Each is a typer app whose callback is the command, so that the entry point registered in
pyproject.toml (`proximity.commands`) gives exactly `proximity correlate RUNS_DIR ...`
(interspersed arguments allowed, as a plain command would).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console

from analysis.advantage import METRIC_NAMES, heatmap_datasets, similarity_matrix
from analysis.correlate import correlate, headline, write_correlation
from analysis.correlation import Settings
from analysis.results import load_grid
from proximity.data import resolve_data_dir
from proximity.outputs import write_csv
from proximity.stats import StatsOptions

console = Console()


def _command_app(help_text: str) -> typer.Typer:
    return typer.Typer(
        help=help_text,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"allow_interspersed_args": True},
    )


RunsDir = Annotated[Path, typer.Argument(help="A grid's output folder (holds results.csv).")]
MetricOpt = Annotated[
    str,
    typer.Option(
        help=f"Similarity metric for PA: {', '.join(METRIC_NAMES)}, or all (side by side)."
    ),
]
TokenizerOpt = Annotated[
    str,
    typer.Option(help="Tokenizer for PA: pythia (the paper), grid (the grid's own), or a path."),
]
NDocsOpt = Annotated[int, typer.Option(help="Documents per dataset for PA (the paper: 1,000).")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Data folder (default: grid.yaml's data_dir, else $PROXIMITY_DATA_DIR)."),
]
BranchesOpt = Annotated[
    str, typer.Option(help="Branch kinds in the correlation: midtrain (the paper) or midtrain,cpt.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed of permutations and bootstrap resamples.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Recompute token statistics.")]

CORRELATE_HELP = (
    "Does proximity advantage predict the gain of midtraining? Joins a grid's results.csv "
    "with PA of each (mixture, target) and writes outcomes.csv, correlation.csv and "
    "statistics.json (Pearson r with p and CI, Spearman, permutation p, bootstrap CIs over "
    "pairs and seeds, within-target r, leave-one-target/mixture-out error), per model size "
    "and metric."
)
correlate_app = _command_app(CORRELATE_HELP)


@correlate_app.callback(invoke_without_command=True)
def correlate_command(
    runs_dir: RunsDir,
    metric: MetricOpt = "paper",
    tokenizer: TokenizerOpt = "pythia",
    n_docs: NDocsOpt = 1000,
    data_dir: DataDirOpt = None,
    branches: BranchesOpt = "midtrain",
    seed: SeedOpt = 0,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default RUNS_DIR/analysis).")
    ] = None,
    no_cache: NoCacheOpt = False,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="Write no figures.")] = False,
) -> None:
    """`proximity correlate`: see CORRELATE_HELP."""

    grid = load_grid(runs_dir)
    folder = _data_dir(data_dir, grid.config)
    out = out or grid.root / "analysis"
    options = StatsOptions(n_docs=n_docs)
    with console.status("computing proximity advantage") as status:
        result = correlate(
            grid, metric=metric, tokenizer=tokenizer, options=options, data_dir=folder,
            branches=[b.strip() for b in branches.split(",") if b.strip()],
            settings=Settings(seed=seed), use_cache=not no_cache,
            on_target=lambda m, t: status.update(f"proximity advantage for {t} ({m})"),
        )  # fmt: skip
        status.update("similarity matrix for figure 1")
        tok = result.statistics["inputs"]["tokenizer"]
        similarity = similarity_matrix(
            heatmap_datasets(result.pairs), metric=result.statistics["inputs"]["metrics"][0],
            tokenizer=tok, options=options, data_dir=folder, use_cache=not no_cache,
        )  # fmt: skip
    for note in grid.substitutes:
        console.print(f"[yellow]substitute[/]: {note}", highlight=False)
    for relation in result.statistics["relations"]:
        console.print(headline(relation), highlight=False)
    paths = write_correlation(result, out)
    paths.append(write_csv(similarity.reset_index(names="dataset"), out / "similarity.csv"))
    if not no_plot:
        with console.status("drawing figures"):
            drawn = _draw(result, grid, out, similarity)
        paths += drawn.written
        for name, why in drawn.missing.items():
            console.print(f"[dim]no {name}: {why}[/]", highlight=False)
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


def _data_dir(given: Path | None, config: dict) -> Path | None:
    """--data-dir, else the grid's own data_dir when it exists here, else $PROXIMITY_DATA_DIR."""
    if given is not None:
        return resolve_data_dir(given)
    recorded = config.get("data_dir")
    if recorded and Path(recorded).expanduser().is_dir():
        return Path(recorded).expanduser()
    return resolve_data_dir(None)


def _draw(result, grid, out: Path, similarity):
    from analysis.figure_set import draw_correlation_figures  # matplotlib/seaborn: ~1.5 s

    cka_path = out / "cka.csv"
    cka = pd.read_csv(cka_path) if cka_path.exists() else None
    return draw_correlation_figures(result, grid, out, similarity=similarity, cka=cka)


REPORT_HELP = (
    "One self-contained HTML report of a grid (figures embedded, tables, the grid's "
    "configuration, data provenance with every substitute named, the commands that reproduce "
    "it) and the same as Markdown beside it. Reads what `proximity correlate` wrote."
)
report_app = _command_app(REPORT_HELP)


@report_app.callback(invoke_without_command=True)
def report_command(
    runs_dir: RunsDir,
    out: Annotated[
        Path, typer.Option(help="The HTML file; report.md is written beside it.")
    ] = Path("report.html"),
    analysis: Annotated[
        Path | None,
        typer.Option(help="Where `proximity correlate` wrote (default RUNS_DIR/analysis)."),
    ] = None,
) -> None:
    """`proximity report`: see REPORT_HELP."""
    from analysis.report import build_report, write_report

    grid = load_grid(runs_dir)
    report = build_report(grid, analysis or grid.root / "analysis")
    for path in write_report(report, out):
        console.print(f"wrote {path}", highlight=False)
