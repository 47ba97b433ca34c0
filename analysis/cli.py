"""`proximity correlate | report | recommend | cka`: top-level commands from analysis/.

Each is a typer app whose callback is the command, so that the entry point registered in
pyproject.toml (`proximity.commands`) gives exactly `proximity correlate RUNS_DIR ...`
(interspersed arguments allowed, as a plain command would).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from proximity.candidates import midtraining_named
from proximity.data import resolve_data_dir
from proximity.errors import ProximityError
from proximity.metrics import METRICS
from proximity.options import MIXTURE, MixtureOpt, NoCacheOpt, NoPlotOpt
from proximity.specs import parse_mixture
from proximity.stats import StatsOptions

# This module is loaded for every `proximity ...` call that is not a core command
# (`proximity train` included): what loads pandas, scipy, scikit-learn, matplotlib or torch
# (~1.4 s and more) is imported inside the command that needs it.
if TYPE_CHECKING:
    import pandas as pd

    from proximity.analysis.correlate import Correlation, PAProtocol
    from proximity.analysis.figure_set import FigureSet
    from proximity.analysis.recommend import FittedRelation
    from proximity.analysis.results import Grid

METRIC_NAMES = tuple(METRICS)

console = Console(soft_wrap=True)  # long lines stay whole, so they can be copied and grepped


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
DataDirOpt = Annotated[
    Path | None,
    typer.Option(help="Data folder (default: grid.yaml's data_dir, else $PROXIMITY_DATA_DIR)."),
]
BranchesOpt = Annotated[
    str, typer.Option(help="Branch kinds in the correlation: midtrain (the paper) or midtrain,cpt.")
]
SeedOpt = Annotated[int, typer.Option(help="Seed of permutations and bootstrap resamples.")]
CORRELATE_HELP = (
    "Does proximity advantage predict the gain of midtraining? Joins a grid's results.csv "
    "with PA of each (mixture, target) and writes outcomes.csv, correlation.csv and "
    "statistics.json (Pearson r with p and CI, Spearman, permutation p, bootstrap CIs over "
    "pairs and seeds, within-target r, leave-one-target/mixture-out error), per model size "
    "and metric, with similarity.csv, the figures (fig*.png and .pdf) and figures.json, all "
    "to --out (default RUNS_DIR/analysis). The report's comparisons come with it: PA from "
    "the other tokenizer and from the other --mixture."
)
correlate_app = _command_app(CORRELATE_HELP)


@correlate_app.callback(invoke_without_command=True)
def correlate_command(
    runs_dir: RunsDir,
    metric: MetricOpt = "paper",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer for PA: pythia (the paper), grid (the grid's own), or a path. "
            "Default: grid when grid.yaml holds out a fixed SFT validation set (sft.val_docs), "
            "else pythia."
        ),
    ] = None,
    n_docs: Annotated[
        int | None,
        typer.Option(
            help="Documents per dataset for PA. Default: grid.yaml's sft.n_docs when it holds "
            "out a fixed SFT validation set, else 1,000 (the paper)."
        ),
    ] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            help="Keep each document's first N tokens before counting (0: all). Default: "
            "grid.yaml's sft.seq_len when it holds out a fixed SFT validation set, else 512."
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    branches: BranchesOpt = "midtrain",
    seed: SeedOpt = 0,
    mixture: MixtureOpt = "expected",
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default RUNS_DIR/analysis).")
    ] = None,
    no_cache: NoCacheOpt = False,
    no_plot: NoPlotOpt = False,
) -> None:
    """`proximity correlate`: see CORRELATE_HELP."""
    # pandas and scipy (~1.4 s): only when correlate runs
    from proximity.analysis.correlate import pa_protocol, summary_lines, write_correlation
    from proximity.analysis.results import load_grid
    from proximity.outputs import write_csv, write_json

    grid = load_grid(runs_dir)
    _print_excluded(grid)
    folder = _data_dir(data_dir, grid.config)
    out = out or grid.root / "analysis"
    protocol = pa_protocol(grid.config, tokenizer=tokenizer, n_docs=n_docs, max_tokens=max_tokens)
    console.print(
        f"PA: tokenizer {protocol.tokenizer}, {protocol.options.n_docs or 'all'} documents of up "
        f"to {protocol.options.max_tokens or 'all'} tokens ({protocol.why})",
        highlight=False,
    )
    result, similarity = _correlation(
        grid, protocol, metric=metric, mixture=mixture, data_dir=folder,
        branches=[b.strip() for b in branches.split(",") if b.strip()], seed=seed,
        use_cache=not no_cache,
    )  # fmt: skip
    for note in grid.substitutes:
        console.print(f"[yellow]substitute[/]: {note}", highlight=False)
    for line in summary_lines(result.statistics):
        console.print(line, highlight=False)
    paths = write_correlation(result, out)
    paths.append(write_csv(similarity.reset_index(names="dataset"), out / "similarity.csv"))
    written, missing = [], {"all": "--no-plot"}
    if not no_plot:
        with console.status("drawing figures"):
            drawn = _draw(result, grid, out, similarity)
        written, missing = drawn.written, drawn.missing
        for name, why in missing.items():
            console.print(f"[dim]no {name}: {why}[/]", highlight=False)
    manifest = {"written": [p.name for p in written], "missing": missing}
    paths += [*written, write_json(manifest, out / "figures.json")]
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


def _correlation(
    grid: Grid,
    protocol: PAProtocol,
    *,
    metric: str,
    mixture: str,
    data_dir: Path | None,
    branches: list[str],
    seed: int,
    use_cache: bool,
) -> tuple[Correlation, pd.DataFrame]:
    """PA and every statistic (with the other tokenizer and mixture similarity for the
    report), then figure 1's similarity matrix, under a status line that says which."""
    # pandas, scipy and scikit-learn: only when correlate runs
    from proximity.analysis import advantage
    from proximity.analysis.correlate import correlate
    from proximity.analysis.correlation import Settings

    with console.status("computing proximity advantage") as status:
        result = correlate(
            grid,
            metric=metric,
            tokenizer=protocol.tokenizer,
            options=protocol.options,
            mixture=mixture,
            data_dir=data_dir,
            branches=branches,
            settings=Settings(seed=seed),
            use_cache=use_cache,
            on_target=lambda m, t: status.update(f"proximity advantage for {t} ({m})"),
            compare_tokenizer=_other_tokenizer(protocol.tokenizer, grid),
            compare_mixture="resample" if mixture == "expected" else "expected",
            protocol_note=protocol.why,
        )
        status.update("similarity matrix for figure 1")
        named = advantage.heatmap_datasets(result.pairs)
        similarity = advantage.similarity_matrix(
            named,
            metric=result.statistics["inputs"]["metrics"][0],
            tokenizer=result.statistics["inputs"]["tokenizer"],
            options=protocol.options,
            data_dir=data_dir,
            use_cache=use_cache,
        )
    display = advantage.heatmap_display_names(named)
    return result, similarity.rename(index=display, columns=display)


def recorded_options(
    inputs: dict,
    where: Path,
    *,
    tokenizer: str | None,
    n_docs: int | None,
    mixture: str | None,
) -> tuple[StatsOptions, str, str]:
    """The PA options `proximity correlate` recorded in statistics.json (tokenizer, the whole
    statistics protocol, mixture similarity), so `recommend` measures PA exactly as the line
    was fitted; an option given on the command line that differs is refused."""
    recorded = {
        "tokenizer": inputs["tokenizer"],
        "n-docs": inputs["stats_options"].get("n_docs"),
        "mixture": inputs.get("mixture", "expected"),
    }
    for flag, given in (("tokenizer", tokenizer), ("n-docs", n_docs), ("mixture", mixture)):
        if given is not None and given != recorded[flag]:
            raise ProximityError(
                f"--{flag} {given}: {where} was correlated with --{flag} {recorded[flag]}; "
                f"recommend measures PA as the line was fitted (drop --{flag} or re-run correlate)"
            )
    options = StatsOptions(**inputs["stats_options"])
    return options, recorded["tokenizer"], recorded["mixture"]


def _print_excluded(grid: Grid) -> None:
    """Every run left out for a NaN or infinite loss, one line each, before any result."""
    for note in grid.excluded:
        console.print(f"[yellow]excluded[/]: {note}", highlight=False)


def _number(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _other_tokenizer(tokenizer: str, grid: Grid) -> str | None:
    """The tokenizer the report compares with: the grid's own when PA uses Pythia (and the
    grid trained another one), Pythia when PA uses the grid's."""
    from proximity.analysis.advantage import grid_tokenizer  # pandas: only when correlate runs

    if tokenizer == "grid":
        return "pythia"
    try:
        own = grid_tokenizer(grid.config, grid.root)
    except ProximityError:
        return None  # no tokenizer recorded (or not yet trained): nothing to compare
    return own if own != tokenizer else None


def correlate_output(runs_dir: Path, given: Path | None) -> Path:
    """Where `proximity correlate` wrote for this grid: `--analysis`, else RUNS/analysis (its
    default), else RUNS itself when the statistics sit beside results.csv (figures/micro)."""
    candidates = [given] if given is not None else [runs_dir / "analysis", runs_dir]
    for folder in candidates:
        if (folder / "statistics.json").exists():
            return folder
    looked = " or ".join(str(folder / "statistics.json") for folder in candidates)
    raise ProximityError(
        f"{looked} not found: run `proximity correlate {runs_dir}` first (or pass --analysis)"
    )


def _data_dir(given: Path | None, config: dict) -> Path | None:
    """--data-dir, else the grid's own data_dir when it exists here, else $PROXIMITY_DATA_DIR."""
    from proximity.analysis.advantage import grid_data_dir  # pandas: only when a command runs

    if given is not None:
        return resolve_data_dir(given)
    recorded = grid_data_dir(config)
    if recorded and Path(recorded).expanduser().is_dir():
        return Path(recorded).expanduser()
    return resolve_data_dir(None)


def _draw(result: Correlation, grid: Grid, out: Path, similarity: pd.DataFrame) -> FigureSet:
    # matplotlib and seaborn (~1.5 s): only when figures are drawn
    import pandas as pd

    from proximity.analysis.figure_set import draw_correlation_figures

    found = [p for p in (out / "cka.csv", grid.root / "cka.csv") if p.exists()]
    cka = pd.read_csv(found[0]) if found else None  # from `proximity cka --out` either place
    return draw_correlation_figures(result, grid, out, similarity=similarity, cka=cka)


REPORT_HELP = (
    "One self-contained HTML report of a grid (figures embedded, tables, the grid's "
    "configuration, data provenance with every substitute named, the commands that reproduce "
    "it) and the same as Markdown beside it. Reads what `proximity correlate` wrote and "
    "writes report.html and report.md beside it (default RUNS_DIR/analysis/report.html)."
)
report_app = _command_app(REPORT_HELP)


@report_app.callback(invoke_without_command=True)
def report_command(
    runs_dir: RunsDir,
    out: Annotated[
        Path | None,
        typer.Option(
            help="The HTML file; report.md is written beside it (default: report.html in the "
            "folder the analysis is read from)."
        ),
    ] = None,
    analysis: Annotated[
        Path | None,
        typer.Option(help="Where `proximity correlate` wrote (default RUNS_DIR/analysis)."),
    ] = None,
) -> None:
    """`proximity report`: see REPORT_HELP."""
    # pandas, scipy and matplotlib: only when the report is built
    from proximity.analysis.report import build_report, write_report
    from proximity.analysis.results import load_grid

    grid = load_grid(runs_dir)
    _print_excluded(grid)
    folder = correlate_output(grid.root, analysis)
    report = build_report(grid, folder)
    for path in write_report(report, out or folder / "report.html"):
        console.print(f"wrote {path}", highlight=False)


CKA_HELP = (
    "Per-layer linear CKA between a base model and each other model on held-out text (the "
    "trainer's validation split of --data): how far midtraining moved each layer. Writes "
    "cka.csv and fig7_cka.png/.pdf to --out (default: with --grid, RUNS/analysis, where "
    "correlate and report find it; else outputs/cka)."
)
cka_app = _command_app(CKA_HELP)


@cka_app.callback(invoke_without_command=True)
def cka_command(
    base: Annotated[
        Path | None, typer.Argument(help="Base model: checkpoint, run folder or HF folder.")
    ] = None,
    others: Annotated[
        list[Path] | None, typer.Argument(help="Models to compare with the base.")
    ] = None,
    grid: Annotated[
        Path | None,
        typer.Option(help="A grid folder: base = its pretraining node, others = its branches."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="With --grid: which model preset.")] = None,
    data: Annotated[str, typer.Option(help="Text whose held-out split is fed to both.")] = "c4",
    n_windows: Annotated[int, typer.Option(help="Held-out windows (sequences) fed.")] = 32,
    seq_len: Annotated[int, typer.Option(help="Tokens per window.")] = 128,
    n_docs: Annotated[
        int | None, typer.Option(help="Documents of --data to split (as the grid's data.n_docs).")
    ] = None,
    max_chars: Annotated[
        int | None, typer.Option(help="Cut documents (as data.max_chars).")
    ] = None,
    data_dir: DataDirOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default RUNS/analysis or outputs/cka).")
    ] = None,
) -> None:
    """`proximity cka`: see CKA_HELP."""
    # torch, transformers, pandas and matplotlib: only for this command
    from proximity.analysis.cka import compare_models, grid_models
    from proximity.analysis.plots import cka_layers
    from proximity.outputs import write_csv

    labels, val_fraction = None, 0.05
    if grid is not None:
        base, named, settings = grid_models(grid, model)
        labels, others = [n for n, _ in named], [p for _, p in named]
        n_docs = n_docs if n_docs is not None else settings.get("n_docs")
        max_chars = max_chars if max_chars is not None else settings.get("max_chars")
        data_dir = data_dir or _data_dir(None, {"data": settings})
        val_fraction = settings.get("val_fraction", val_fraction)
    if base is None or not others:
        raise ProximityError("give BASE and at least one OTHER model, or --grid RUNS_DIR")
    if out is None:  # beside correlate's outputs, so the report shows the CKA figure
        folder = None if grid is None else (grid if grid.is_dir() else grid.parent)
        out = folder / "analysis" if folder is not None else Path("outputs/cka")
    table = compare_models(
        base,
        list(others),
        labels=labels,
        val_fraction=val_fraction,
        data=data,
        n_windows=n_windows,
        seq_len=seq_len,
        data_dir=resolve_data_dir(data_dir),
        n_docs=n_docs,
        max_chars=max_chars,
    )
    for model, group in table.groupby("model", sort=False):
        values = ", ".join(f"{v:.3f}" for v in group["cka"])
        console.print(f"{model}: CKA by layer (0 = embeddings) {values}", highlight=False)
    paths = [write_csv(table, out / "cka.csv"), *cka_layers(table, out / "fig7_cka")]
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


RECOMMEND_HELP = (
    "Rank candidate midtraining mixtures for a target by proximity advantage; with --runs "
    "(a correlated grid), by the relative improvement its fitted line predicts, with a 95% "
    "prediction interval and the line's leave-one-target-out error; PA is then measured as "
    "correlate recorded it (--tokenizer, --n-docs and --mixture default to that, and a "
    "different value is refused). Writes recommend.csv to --out (default outputs/recommend)."
)
recommend_app = _command_app(RECOMMEND_HELP)


@recommend_app.callback(invoke_without_command=True)
def recommend_command(
    target: Annotated[str, typer.Option(help="The new SFT target (a spec).")],
    candidates: Annotated[
        list[str],
        typer.Option(help="Candidate mixes: --candidates starcoder:0.2 math:0.12 starcoder ..."),
    ],
    more: Annotated[list[str] | None, typer.Argument(hidden=True, metavar="CANDIDATES")] = None,
    runs: Annotated[
        Path | None, typer.Option(help="A grid folder already run through `proximity correlate`.")
    ] = None,
    analysis: Annotated[
        Path | None, typer.Option(help="Where correlate wrote (default RUNS/analysis).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Which model size's line to use (default: the last).")
    ] = None,
    pretrain: Annotated[
        str | None, typer.Option(help="Pretraining data (default: the grid's, else c4).")
    ] = None,
    metric: MetricOpt = "paper",
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Tokenizer for PA (default pythia; with --runs, what correlate recorded)."
        ),
    ] = None,
    n_docs: Annotated[
        int | None,
        typer.Option(help="Documents per dataset (default 1,000; with --runs, as recorded)."),
    ] = None,
    mixture: Annotated[str | None, MIXTURE] = None,
    data_dir: DataDirOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder (recommend.csv).")] = Path(
        "outputs/recommend"
    ),
    no_cache: NoCacheOpt = False,
) -> None:
    """`proximity recommend`: see RECOMMEND_HELP."""
    # pandas, scipy and scikit-learn: only when recommend runs
    from proximity.analysis.recommend import recommend
    from proximity.outputs import write_csv

    names = [*candidates, *(more or [])]  # `--candidates A B C`: B and C arrive as arguments
    relation, config = None, {}
    options = StatsOptions(n_docs=1000 if n_docs is None else n_docs)
    if runs is not None:
        grid, relation, options, tokenizer, mixture = _fitted(
            runs, analysis, model, metric, tokenizer=tokenizer, n_docs=n_docs, mixture=mixture
        )
        config = grid.config
        pretrain = pretrain or str(grid.results["pretrain_spec"].iloc[0])
        if target in relation.targets:
            console.print(
                f"[yellow]note[/]: {target} is one of the grid's own targets; its pairs "
                "helped fit the line, so the prediction is not out of sample",
                highlight=False,
            )
    base = parse_mixture(pretrain or "c4")
    for name in names:  # refused here, before any data is read, under the flag the user typed
        midtraining_named(base, name, option="--candidates")
    table = recommend(
        target,
        names,
        pretrain=pretrain or "c4",
        metric=metric,
        tokenizer=tokenizer or "pythia",
        options=options,
        mixture=mixture or "expected",
        data_dir=_data_dir(data_dir, config),
        relation=relation,
        use_cache=not no_cache,
    )
    _print_recommendation(table, target, relation)
    console.print(f"wrote {write_csv(table, out / 'recommend.csv')}", highlight=False)


def _fitted(
    runs: Path,
    analysis: Path | None,
    model: str | None,
    metric: str,
    *,
    tokenizer: str | None,
    n_docs: int | None,
    mixture: str | None,
) -> tuple[Grid, FittedRelation, StatsOptions, str, str]:
    """The grid, the line correlate fitted on it, and the PA options correlate recorded
    (tokenizer, statistics protocol, mixture similarity; a different one given is refused)."""
    # pandas and scipy: only when recommend runs
    from proximity.analysis.recommend import FittedRelation
    from proximity.analysis.results import load_grid

    grid = load_grid(runs)
    _print_excluded(grid)
    stats_path = correlate_output(grid.root, analysis) / "statistics.json"
    statistics = json.loads(stats_path.read_text())
    relation = FittedRelation.from_statistics(statistics, model, metric)
    options, tokenizer, mixture = recorded_options(
        statistics["inputs"], stats_path, tokenizer=tokenizer, n_docs=n_docs, mixture=mixture
    )
    return grid, relation, options, tokenizer, mixture


def _print_recommendation(
    table: pd.DataFrame, target: str, relation: FittedRelation | None
) -> None:
    """The ranked candidates; with a fitted line, its predictions, refusals and how well it
    did on held-out targets."""
    shown = Table(title=f"candidates for {target}, best first")
    for column in ("rank", "candidate", "mix", "PA"):
        shown.add_column(column, justify="right" if column in ("rank", "PA") else "left")
    if relation is not None:
        shown.add_column("predicted improvement [95% PI, new target]", justify="right")
    for row in table.itertuples():
        cells = [str(row.rank), row.candidate, row.mixture_spec, f"{row.advantage:+.4f}"]
        if relation is not None:
            flag = " (PA outside the grid's range)" if row.pa_outside_grid else ""
            cells.append(
                "refused (below)"
                if row.note
                else f"{row.predicted_improvement:+.2%} [{row.prediction_low:+.2%}, "
                f"{row.prediction_high:+.2%}]{flag}"
            )
        shown.add_row(*cells)
    console.print(shown)
    if relation is None:
        return
    for row in table.itertuples():
        if row.note:
            console.print(f"[yellow]{row.candidate}[/]: {row.note}", highlight=False)
    _print_line_quality(relation)


def _print_line_quality(relation: FittedRelation) -> None:
    """The fitted line's errors: leave-one-target-out, and coverage on held-out targets."""
    console.print(
        f"line fitted on {relation.model}, {len(relation.x)} pairs ({relation.metric}, r = "
        f"{_number(relation.r, '.2f')}); leave-one-target-out RMSE "
        f"{_number(relation.loto_rmse, '.4f')} (predicting the mean: "
        f"{_number(relation.loto_baseline_rmse, '.4f')})",
        highlight=False,
    )
    held = relation.held_out or {}
    if held.get("coverage") is not None:
        console.print(
            f"held-out targets (each of the grid's {held['n_targets']} left out in turn): the "
            f"95% interval covered {held['coverage']:.0%} of {held['n_pairs']} pairs (goal "
            f"≥ 90%); RMSE {held['rmse']:.4f} vs {held['baseline_rmse']:.4f} predicting the "
            f"mean (ratio {_number(held['rmse_ratio'], '.2f')})",
            highlight=False,
        )
    elif held.get("why"):
        console.print(f"held-out-target coverage not measured: {held['why']}", highlight=False)
    loto, baseline = relation.loto_rmse, relation.loto_baseline_rmse
    if loto is None or baseline is None or loto >= baseline:
        console.print(
            "[yellow]note[/]: on held-out targets the line did no better than predicting "
            "the mean improvement; treat the predicted ranking with caution",
            highlight=False,
        )
