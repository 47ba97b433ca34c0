"""Core commands: `proximity similarity` and `proximity advantage`.

    proximity similarity c4 starcoder gsm8k --data-dir ../shared/data --out outputs/similarity
    proximity advantage --pretrain c4 --target gsm8k --mix starcoder:0.2 --mix math:0.12

Both are thin wrappers around `proximity.similarity.run_similarity` / `run_advantage` (the
Python API gives the same numbers): they take the options declared in proximity/options.py
(the similarity flags arrive as one `SimilaritySettings`, made by `from_flags` as the API
makes it), draw progress bars, print a table, and write a tidy CSV, a JSON record of every
option and source (enough to reproduce the run) and a PNG figure to `--out`. Importing this
module adds both commands to the app (proximity/app.py).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from proximity.app import app
from proximity.data import resolve_data_dir
from proximity.options import (
    SETTINGS_OPTIONS,
    DataDirOpt,
    NoCacheOpt,
    NoPlotOpt,
    OutOpt,
    RegistryOpt,
    TokenizerOpt,
)
from proximity.outputs import figure_key, png_figure_key, write_csv, write_json
from proximity.provenance import provenance
from proximity.registry import Registry
from proximity.settings import SimilaritySettings
from proximity.similarity import Run, run_advantage, run_similarity
from proximity.stats import TokenStats

console = Console()


def _settings_flags(command: Callable[..., None]) -> Callable[..., None]:
    """`command` with its parameter `settings` spelled out as the flags of SETTINGS_OPTIONS
    (defaults: `SimilaritySettings.from_flags`'), so `similarity` and `advantage` declare them
    once: typer reads the signature set here, and the command receives the settings made."""
    own = inspect.signature(command, eval_str=True)
    defaults = inspect.signature(SimilaritySettings.from_flags).parameters
    flags = [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=defaults[name].default,
            annotation=option,
        )
        for name, option in SETTINGS_OPTIONS.items()
    ]  # fmt: skip
    parameters = []
    for parameter in own.parameters.values():
        parameters += flags if parameter.name == "settings" else [parameter]

    @functools.wraps(command)
    def with_flags(**given: Any) -> None:
        chosen = {name: given.pop(name) for name in SETTINGS_OPTIONS}
        command(settings=SimilaritySettings.from_flags(**chosen), **given)

    with_flags.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_flags.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_flags


class _Bars:
    """Progress bars for `gather_stats`: one per dataset, documents read or `cached`."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = None

    def start(self, name: str, total: int | None) -> None:
        self.task = self.progress.add_task(f"tokenising {name}", total=total)

    def advance(self, n_docs: int) -> None:
        self.progress.advance(self.task, n_docs)

    def finish(self, name: str, stats: TokenStats) -> None:
        state = "cached" if stats.metadata.get("cache_hit") else "tokenised"
        self.progress.update(
            self.task,
            description=f"{state} {name}: {stats.n_tokens:,} tokens",
            total=stats.n_docs,
            completed=stats.n_docs,
        )


def _progress() -> Progress:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("docs"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=console, transient=False)


def _print_notes(run: Run) -> None:
    """Substitute data, other splits and short datasets, once per dataset (by its label)."""
    names = {spec: label for label, spec in run.compared.items()}
    for key, st in run.stats.items():
        name = names.get(key, key)
        source = st.metadata.get("source") or {}
        if source.get("substitute"):
            console.print(
                f"[yellow]substitute[/]: {name} reads {source.get('location')} "
                f"({source['substitute']})",
                highlight=False,
            )
        for note in st.metadata.get("notes", []):
            console.print(f"[yellow]note[/]: {name}: {note}", highlight=False)


def _record(
    command: str, tokenizer_name: str, data_dir: Path | None, run: Run, extra: dict[str, Any]
) -> dict[str, Any]:
    """Everything needed to reproduce and audit a run."""
    settings = run.settings
    return {
        **provenance(command),
        "metric": {"name": settings.metric.name, "formula": settings.metric.formula},
        "mixture": settings.mixture,
        "options": asdict(run.options),
        "bootstrap": asdict(settings.bootstrap),
        "tokenizer": {"name": tokenizer_name, "fingerprint": run.tokenizer_fingerprint},
        "data_dir": str(data_dir) if data_dir else None,
        "compared": run.compared,
        **extra,
        "datasets": {
            key: {
                "n_docs": st.n_docs,
                "n_docs_requested": run.options.n_docs,
                "n_tokens": st.n_tokens,
                "read": st.metadata.get("read"),
                "notes": st.metadata.get("notes", []),
                "source": st.metadata.get("source"),
                "cache_key": st.metadata.get("key"),
                "cache_hit": st.metadata.get("cache_hit"),
            }
            for key, st in run.stats.items()
        },
        "results": run.table.to_dict(orient="records"),
    }


def _fmt(value: float, low: float, high: float) -> str:
    if np.isfinite(low) and np.isfinite(high):
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}"


SIMILARITY_HELP = (
    "Similarity matrix between datasets (each tokenised once): table, CSV, JSON, heatmap.\n\n"
    "Defaults follow the paper: 1,000 documents, 10,000 characters, 512 tokens, no special "
    "tokens, Pythia tokenizer. Row a, column b holds metric(a, b); b is the reference for "
    "the asymmetric ngram_kl. Label a dataset with name=spec (paths default to their file "
    "name).\n\n"
    "Writes similarity.csv (tidy), similarity.json (every option and source) and "
    "similarity_heatmap.png to --out (default outputs/similarity)."
)
ADVANTAGE_HELP = (
    "Rank midtraining mixes by proximity advantage "
    "PA = sim(mix, target) − sim(pretrain, target).\n\n"
    "--mix starcoder:0.2 is the mix pretrain·0.8 + starcoder·0.2; --mix starcoder (or "
    "starcoder:1) is continued pretraining on starcoder alone, on the same scale.\n\n"
    "Writes advantage.csv (tidy), advantage.json (every option and source) and advantage.png "
    "to --out (default outputs/advantage)."
)


@app.command("similarity", help=SIMILARITY_HELP)
@_settings_flags
def similarity_command(
    datasets: Annotated[
        list[str],
        typer.Argument(
            help="Datasets or mixtures to compare: registry names, paths, hf:<id>, "
            "c4:0.8+starcoder:0.2; label one with name=spec."
        ),
    ],
    settings: SimilaritySettings,
    data_dir: DataDirOpt = None,
    tokenizer: TokenizerOpt = "pythia",
    registry: RegistryOpt = None,
    out: OutOpt = Path("outputs/similarity"),
    no_cache: NoCacheOpt = False,
    no_plot: NoPlotOpt = False,
) -> None:
    """`proximity similarity`: see SIMILARITY_HELP."""
    folder = resolve_data_dir(data_dir)
    reg = Registry.load(registry)
    with _progress() as progress:
        run = run_similarity(
            datasets, settings, tokenizer=tokenizer, data_dir=folder, registry=reg,
            use_cache=not no_cache, progress=_Bars(progress),
        )  # fmt: skip
    _print_notes(run)
    table = run.table
    labels = list(run.compared)
    grid = Table(title=f"{settings.metric.name} similarity (row a, column b)")
    grid.add_column("", overflow="fold")
    for label in labels:
        grid.add_column(label, justify="right", overflow="fold")
    values = table.set_index(["a", "b"])
    for a in labels:
        cells = (_fmt(*values.loc[(a, b), ["value", "ci_low", "ci_high"]]) for b in labels)
        grid.add_row(a, *cells)
    console.print(grid)

    record = _record("similarity", tokenizer, folder, run, {})
    paths = [
        write_csv(table, out / "similarity.csv"),
        write_json(record, out / "similarity.json"),
    ]
    if not no_plot:
        matrix = table.pivot(index="a", columns="b", values="value").loc[labels, labels]
        title = f"{settings.metric.name} similarity"
        paths.append(_heatmap(matrix, out / "similarity_heatmap.png", title, _budget_note(run)))
    _print_written(paths)


@app.command("advantage", help=ADVANTAGE_HELP)
@_settings_flags
def advantage_command(
    pretrain: Annotated[str, typer.Option(help="Pretraining data (the baseline), e.g. c4.")],
    target: Annotated[str, typer.Option(help="Target (SFT) data, e.g. gsm8k.")],
    mix: Annotated[
        list[str],
        typer.Option(
            help="Candidate, repeatable: name:w means pretrain·(1−w) + name·w (e.g. "
            "starcoder:0.2); name or name:1 is continued pretraining on name alone; or a full "
            "mixture such as c4:0.7+math:0.3. Label one with label=value."
        ),
    ],
    settings: SimilaritySettings,
    data_dir: DataDirOpt = None,
    tokenizer: TokenizerOpt = "pythia",
    registry: RegistryOpt = None,
    out: OutOpt = Path("outputs/advantage"),
    no_cache: NoCacheOpt = False,
    no_plot: NoPlotOpt = False,
) -> None:
    """`proximity advantage`: see ADVANTAGE_HELP."""
    folder = resolve_data_dir(data_dir)
    reg = Registry.load(registry)
    with _progress() as progress:
        run = run_advantage(
            pretrain, target, mix, settings, tokenizer=tokenizer, data_dir=folder,
            registry=reg, use_cache=not no_cache, progress=_Bars(progress),
        )  # fmt: skip
    _print_notes(run)
    table = run.table
    _print_advantage(table, settings)
    record = _record(
        "advantage", tokenizer, folder, run,
        {
            "pretrain": table["pretrain_spec"].iloc[0],
            "target": table["target_spec"].iloc[0],
            "mixes": dict(zip(table["mix"], table["mix_spec"], strict=True)),
        },
    )  # fmt: skip
    paths = [
        write_csv(table, out / "advantage.csv"),
        write_json(record, out / "advantage.json"),
    ]
    if not no_plot:
        goal, base = table["target"].iloc[0], table["pretrain"].iloc[0]
        title = f"Proximity advantage for {goal} vs {base} ({settings.metric.name})"
        paths.append(_bar_chart(table, out / "advantage.png", title))
    _print_written(paths)


def _print_advantage(table: pd.DataFrame, settings: SimilaritySettings) -> None:
    """The ranked mixes, the baseline similarity, and each mix's resampling notes."""
    goal, base = table["target"].iloc[0], table["pretrain"].iloc[0]
    grid = Table(
        title=f"proximity advantage for target {goal} ({settings.metric.name}, {settings.mixture})"
    )
    for name in ("rank", "mix", "as mixture", f"sim(mix, {goal})", "PA"):
        right = name in ("rank", "PA") or name.startswith("sim")
        grid.add_column(name, justify="right" if right else "left", overflow="fold")
    for row in table.itertuples():
        grid.add_row(
            str(row.rank),
            row.mix,
            row.mix_spec,
            f"{row.sim_mix_target:.3f}",
            _fmt(row.advantage, row.ci_low, row.ci_high),
        )
    console.print(grid)
    console.print(
        f"baseline sim({base}, {goal}) = {table['sim_pretrain_target'].iloc[0]:.4f}",
        highlight=False,
    )
    for row in table.itertuples():
        for note in (n for n in row.notes.split("; ") if n.startswith("resample:")):
            console.print(f"[yellow]note[/]: {row.mix}: {note}", highlight=False)


def _budget_note(run: Run) -> str:
    options = run.options
    if options.token_budget:
        return f"equal token budget: {options.token_budget:,} tokens per dataset"
    tokens = sorted({st.n_tokens for st in run.stats.values()})
    return f"tokens per dataset: {tokens[0]:,}–{tokens[-1]:,} (not equalised)"


def _heatmap(matrix: pd.DataFrame, path: Path, title: str, note: str) -> Path:
    key = figure_key("heatmap", matrix, title=title, note=note)
    if png_figure_key(path) == key:
        return _Current(path)  # drawn from these very inputs already
    # matplotlib (~0.4 s): only when the figure is drawn, not for a current one or --no-plot
    from proximity.figures import save_heatmap

    return save_heatmap(matrix, path, title=title, note=note, key=key)


def _bar_chart(table: pd.DataFrame, path: Path, title: str) -> Path:
    drawn = table[["mix", "advantage", "ci_low", "ci_high"]]
    key = figure_key("advantage", drawn, title=title)
    if png_figure_key(path) == key:
        return _Current(path)  # drawn from these very inputs already
    # matplotlib (~0.4 s): only when the figure is drawn, not for a current one or --no-plot
    from proximity.figures import save_advantage_chart

    return save_advantage_chart(table, path, title=title, key=key)


class _Current(type(Path())):  # type: ignore[misc]
    """A figure already drawn from the same inputs, left as it is."""


def _print_written(paths: list[Path]) -> None:
    for path in paths:
        state = "up to date" if isinstance(path, _Current) else "wrote"
        console.print(f"{state} {path}", highlight=False)
