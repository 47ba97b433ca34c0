"""Core commands: `proximity similarity` and `proximity advantage`.

    proximity similarity c4 starcoder gsm8k --data-dir ../shared/data --out outputs/similarity
    proximity advantage --pretrain c4 --target gsm8k --mix starcoder:0.2 --mix math:0.12

Both are thin wrappers around `proximity.similarity.run_similarity` / `run_advantage` (the
Python API gives the same numbers): they declare the options, draw progress bars, print a
table, and write a tidy CSV, a JSON record of every option and source (enough to reproduce
the run) and a PNG figure to `--out`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from proximity import __version__
from proximity.api import similarity_settings
from proximity.bootstrap import Bootstrap
from proximity.cli import app
from proximity.data import DATA_DIR_ENV, resolve_data_dir
from proximity.metrics import Metric, metrics_help
from proximity.outputs import figure_key, png_figure_key, write_csv, write_json
from proximity.registry import Registry
from proximity.similarity import Run, run_advantage, run_similarity
from proximity.stats import (
    PAPER_MAX_CHARS,
    PAPER_MAX_TOKENS,
    StatsOptions,
    TokenStats,
)

console = Console()

# Shared options: one definition, so both commands read and document them the same way.
MetricOpt = Annotated[str, typer.Option("--metric", "-m", help=f"Metric. {metrics_help()}.")]
NDocsOpt = Annotated[
    int | None,
    typer.Option(
        help="Documents per dataset (default 1000; with --equal-tokens and --sample first, as "
        "many as the budget needs)."
    ),
]
SampleOpt = Annotated[
    str,
    typer.Option(
        help="'first' N documents or a seeded uniform 'random' sample of N (also under "
        "--equal-tokens, whose budget is then taken from that sample in random order)."
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(help="Seed of the document sample (--sample random) and of --mixture resample."),
]
MaxCharsOpt = Annotated[
    int, typer.Option(help="Cut each document to this many characters (0: no cut).")
]
MaxTokensOpt = Annotated[int, typer.Option(help="Keep each document's first N tokens (0: all).")]
EqualTokensOpt = Annotated[
    int | None,
    typer.Option(
        help="Cut every dataset at exactly this many tokens (the Jaccard term grows with tokens "
        "seen, so compare on equal budgets)."
    ),
]
NgramOrderOpt = Annotated[
    int, typer.Option(help="Also count hashed n-grams of this order (ngram_kl sets 2).")
]
NgramBucketsOpt = Annotated[int, typer.Option(help="Hash buckets for n-grams (power of two).")]
MixtureOpt = Annotated[
    str,
    typer.Option(
        help="How a mixture is compared: 'expected' (exact token frequencies, vocabulary "
        "expected at a matched token budget; continuous in the weights) or 'resample' (the "
        "authors' script: all specialised documents plus pretraining documents in "
        "proportion, capped at the pretraining sample). See docs/SIMILARITY.md."
    ),
]
BootstrapOpt = Annotated[
    int, typer.Option(help="Bootstrap resamples over documents for confidence intervals (0: off).")
]
BootstrapSeedOpt = Annotated[int, typer.Option(help="Seed of the bootstrap resampling.")]
CILevelOpt = Annotated[float, typer.Option(help="Confidence level of the bootstrap interval.")]
CIMethodOpt = Annotated[
    str,
    typer.Option(
        help="Bootstrap interval (scipy.stats.bootstrap): 'basic' (default; corrects the low "
        "bias of sampled similarities), 'percentile' or 'bca' (slow: a jackknife per document)."
    ),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(envvar=DATA_DIR_ENV, help="Local data folder (else the Hugging Face hub)."),
]
TokenizerOpt = Annotated[
    str, typer.Option(help="Tokenizer: alias (pythia, gpt2), hub id, tokenizer.json or folder.")
]
RegistryOpt = Annotated[
    list[Path] | None, typer.Option(help="Extra dataset registry file(s) (TOML).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Recompute, ignore the cache.")]
NoPlotOpt = Annotated[bool, typer.Option("--no-plot", help="Write the table files only.")]
OutOpt = Annotated[Path, typer.Option(help="Output folder.")]


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
    command: str, metric: Metric, boot: Bootstrap, mixture: str, tokenizer_name: str,
    data_dir: Path | None, run: Run, extra: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """Everything needed to reproduce and audit a run."""
    return {
        "command": command,
        "argv": sys.argv,
        "proximity_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metric": {"name": metric.name, "formula": metric.formula},
        "mixture": mixture,
        "options": asdict(run.options),
        "bootstrap": asdict(boot),
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
def similarity_command(
    datasets: Annotated[
        list[str],
        typer.Argument(
            help="Datasets or mixtures to compare: registry names, paths, hf:<id>, "
            "c4:0.8+starcoder:0.2; label one with name=spec."
        ),
    ],
    metric: MetricOpt = "paper",
    n_docs: NDocsOpt = None,
    sample: SampleOpt = "first",
    seed: SeedOpt = 0,
    max_chars: MaxCharsOpt = PAPER_MAX_CHARS,
    max_tokens: MaxTokensOpt = PAPER_MAX_TOKENS,
    equal_tokens: EqualTokensOpt = None,
    ngram_order: NgramOrderOpt = 0,
    ngram_buckets: NgramBucketsOpt = 2**20,
    mixture: MixtureOpt = "expected",
    bootstrap: BootstrapOpt = 0,
    bootstrap_seed: BootstrapSeedOpt = 0,
    ci_level: CILevelOpt = 0.95,
    ci_method: CIMethodOpt = "basic",
    data_dir: DataDirOpt = None,
    tokenizer: TokenizerOpt = "pythia",
    registry: RegistryOpt = None,
    out: OutOpt = Path("outputs/similarity"),
    no_cache: NoCacheOpt = False,
    no_plot: NoPlotOpt = False,
) -> None:
    """`proximity similarity`: see SIMILARITY_HELP."""
    chosen, options, boot = similarity_settings(
        metric, n_docs, sample, seed, max_chars, max_tokens, equal_tokens, ngram_order,
        ngram_buckets, mixture, bootstrap, bootstrap_seed, ci_level, ci_method,
    )  # fmt: skip
    folder = resolve_data_dir(data_dir)
    reg = Registry.load(registry)
    with _progress() as progress:
        run = run_similarity(
            datasets, metric=chosen, tokenizer=tokenizer, options=options,
            mixture=mixture, bootstrap=boot, data_dir=folder, registry=reg,  # type: ignore[arg-type]
            use_cache=not no_cache, progress=_Bars(progress),
        )  # fmt: skip
    _print_notes(run)
    table = run.table
    labels = list(run.compared)
    grid = Table(title=f"{chosen.name} similarity (row a, column b)")
    grid.add_column("", overflow="fold")
    for label in labels:
        grid.add_column(label, justify="right", overflow="fold")
    values = table.set_index(["a", "b"])
    for a in labels:
        cells = (_fmt(*values.loc[(a, b), ["value", "ci_low", "ci_high"]]) for b in labels)
        grid.add_row(a, *cells)
    console.print(grid)

    record = _record("similarity", chosen, boot, mixture, tokenizer, folder, run, {})
    paths = [
        write_csv(table, out / "similarity.csv"),
        write_json(record, out / "similarity.json"),
    ]
    if not no_plot:
        matrix = table.pivot(index="a", columns="b", values="value").loc[labels, labels]
        title = f"{chosen.name} similarity"
        paths.append(
            _heatmap(matrix, out / "similarity_heatmap.png", title, _budget_note(options, run))
        )
    _print_written(paths)


@app.command("advantage", help=ADVANTAGE_HELP)
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
    metric: MetricOpt = "paper",
    n_docs: NDocsOpt = None,
    sample: SampleOpt = "first",
    seed: SeedOpt = 0,
    max_chars: MaxCharsOpt = PAPER_MAX_CHARS,
    max_tokens: MaxTokensOpt = PAPER_MAX_TOKENS,
    equal_tokens: EqualTokensOpt = None,
    ngram_order: NgramOrderOpt = 0,
    ngram_buckets: NgramBucketsOpt = 2**20,
    mixture: MixtureOpt = "expected",
    bootstrap: BootstrapOpt = 0,
    bootstrap_seed: BootstrapSeedOpt = 0,
    ci_level: CILevelOpt = 0.95,
    ci_method: CIMethodOpt = "basic",
    data_dir: DataDirOpt = None,
    tokenizer: TokenizerOpt = "pythia",
    registry: RegistryOpt = None,
    out: OutOpt = Path("outputs/advantage"),
    no_cache: NoCacheOpt = False,
    no_plot: NoPlotOpt = False,
) -> None:
    """`proximity advantage`: see ADVANTAGE_HELP."""
    chosen, options, boot = similarity_settings(
        metric, n_docs, sample, seed, max_chars, max_tokens, equal_tokens, ngram_order,
        ngram_buckets, mixture, bootstrap, bootstrap_seed, ci_level, ci_method,
    )  # fmt: skip
    folder = resolve_data_dir(data_dir)
    reg = Registry.load(registry)
    with _progress() as progress:
        run = run_advantage(
            pretrain, target, mix, metric=chosen, tokenizer=tokenizer, options=options,
            mixture=mixture, bootstrap=boot, data_dir=folder, registry=reg,  # type: ignore[arg-type]
            use_cache=not no_cache, progress=_Bars(progress),
        )  # fmt: skip
    _print_notes(run)
    table = run.table
    goal, base = table["target"].iloc[0], table["pretrain"].iloc[0]
    grid = Table(title=f"proximity advantage for target {goal} ({chosen.name}, {mixture})")
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
    record = _record(
        "advantage", chosen, boot, mixture, tokenizer, folder, run,
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
        title = f"Proximity advantage for {goal} vs {base} ({chosen.name})"
        paths.append(_bar_chart(table, out / "advantage.png", title))
    _print_written(paths)


def _budget_note(options: StatsOptions, run: Run) -> str:
    if options.token_budget:
        return f"equal token budget: {options.token_budget:,} tokens per dataset"
    tokens = sorted({st.n_tokens for st in run.stats.values()})
    return f"tokens per dataset: {tokens[0]:,}–{tokens[-1]:,} (not equalised)"


def _heatmap(matrix: pd.DataFrame, path: Path, title: str, note: str) -> Path:
    key = figure_key("heatmap", matrix, title=title, note=note)
    if png_figure_key(path) == key:
        return _Current(path)  # drawn from these very inputs already
    from proximity.figures import save_heatmap  # matplotlib (~0.4 s) only when drawing

    return save_heatmap(matrix, path, title=title, note=note, key=key)


def _bar_chart(table: pd.DataFrame, path: Path, title: str) -> Path:
    drawn = table[["mix", "advantage", "ci_low", "ci_high"]]
    key = figure_key("advantage", drawn, title=title)
    if png_figure_key(path) == key:
        return _Current(path)  # drawn from these very inputs already
    from proximity.figures import save_advantage_chart  # matplotlib only when drawing

    return save_advantage_chart(table, path, title=title, key=key)


class _Current(type(Path())):  # type: ignore[misc]
    """A figure already drawn from the same inputs, left as it is."""


def _print_written(paths: list[Path]) -> None:
    for path in paths:
        state = "up to date" if isinstance(path, _Current) else "wrote"
        console.print(f"{state} {path}", highlight=False)
