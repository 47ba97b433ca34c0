"""Core commands: `proximity similarity` and `proximity advantage`.

    proximity similarity c4 starcoder gsm8k --data-dir ../shared/data --out outputs/similarity
    proximity advantage --pretrain c4 --target gsm8k --mix starcoder:0.2 --mix math:0.12

Both tokenise each distinct dataset once (through the statistics cache), print a table,
and write a tidy CSV, a JSON record of every option and source (enough to reproduce the
run) and a PNG figure to `--out`.
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
from proximity.cli import app
from proximity.data import DATA_DIR_ENV, resolve_data_dir
from proximity.errors import ProximityError
from proximity.metrics import Metric, get_metric, metrics_help
from proximity.registry import Registry
from proximity.similarity import (
    Bootstrap,
    candidate,
    midtraining_mix,
    proximity_advantage,
    similarity_matrix,
    unique_datasets,
)
from proximity.specs import MixtureSpec
from proximity.stats import PAPER_MAX_CHARS, PAPER_MAX_TOKENS, StatsOptions, TokenStats
from proximity.stats import compute_stats as compute_dataset_stats
from proximity.tokenizer import load_tokenizer, tokenizer_fingerprint

console = Console()

# Shared options: one definition, so both commands read and document them the same way.
MetricOpt = Annotated[str, typer.Option("--metric", "-m", help=f"Metric. {metrics_help()}.")]
NDocsOpt = Annotated[
    int | None,
    typer.Option(help="Documents per dataset (default 1000, or as many as --equal-tokens needs)."),
]
SampleOpt = Annotated[str, typer.Option(help="'first' N documents or a seeded 'random' sample.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for --sample random and the bootstrap.")]
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
BootstrapOpt = Annotated[
    int, typer.Option(help="Bootstrap resamples over documents for confidence intervals (0: off).")
]
CILevelOpt = Annotated[float, typer.Option(help="Confidence level of the bootstrap interval.")]
CIMethodOpt = Annotated[
    str,
    typer.Option(
        help="'centered' (percentile spread around the estimate; default, see docs) or "
        "'percentile' (plain percentiles, biased low for Jaccard/JS)."
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


def _protocol(
    metric_name: str,
    n_docs: int | None,
    sample: str,
    seed: int,
    max_chars: int,
    max_tokens: int,
    equal_tokens: int | None,
    ngram_order: int,
    ngram_buckets: int,
    bootstrap: int,
    ci_level: float,
    ci_method: str,
) -> tuple[Metric, StatsOptions, Bootstrap]:
    """The metric, the counting options and the bootstrap both commands share, validated."""
    metric = get_metric(metric_name)
    if n_docs is None and equal_tokens is None:
        n_docs = 1000
    if metric.uses == "ngram" and not ngram_order:
        ngram_order = 2
    if bootstrap < 0:
        raise ProximityError(f"--bootstrap must be >= 0, got {bootstrap}")
    options = StatsOptions(
        n_docs=n_docs,
        sample=sample,  # type: ignore[arg-type]  # validated by StatsOptions
        seed=seed,
        max_chars=max_chars or None,
        max_tokens=max_tokens or None,
        token_budget=equal_tokens,
        ngram_order=ngram_order,
        ngram_buckets=ngram_buckets,
        per_document=bootstrap > 0,
    )
    boot = Bootstrap(bootstrap, seed, ci_level, ci_method)  # type: ignore[arg-type]
    return metric, options, boot


def _compute_all(
    candidates: list[MixtureSpec],
    tokenizer_name: str,
    options: StatsOptions,
    data_dir: Path | None,
    registry: Registry,
    use_cache: bool,
) -> tuple[dict[str, TokenStats], str]:
    """Tokenise each distinct dataset once, with a progress bar per dataset."""
    tokenizer = load_tokenizer(tokenizer_name, data_dir)
    stats: dict[str, TokenStats] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("docs"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        for spec in unique_datasets(candidates):
            key = spec.canonical()
            task = progress.add_task(f"tokenising {key}", total=options.n_docs)
            result = compute_dataset_stats(
                spec,
                tokenizer,
                options,
                data_dir=data_dir,
                registry=registry,
                on_docs=lambda k, task=task: progress.advance(task, k),
                use_cache=use_cache,
            )
            state = "cached" if result.metadata.get("cache_hit") else "tokenised"
            progress.update(
                task,
                description=f"{state} {key}: {result.n_tokens:,} tokens",
                total=result.n_docs,
                completed=result.n_docs,
            )
            stats[key] = result
    return stats, tokenizer_fingerprint(tokenizer)


def _print_sources(stats: dict[str, TokenStats]) -> None:
    for key, st in stats.items():
        source = st.metadata.get("source", {})
        if source.get("substitute"):
            console.print(
                f"[yellow]substitute[/]: {key} reads {source.get('location')} "
                f"({source['substitute']})",
                highlight=False,
            )


def _notes(cand: MixtureSpec, stats: dict[str, TokenStats]) -> str:
    notes = []
    for spec in cand.datasets:
        sub = stats[spec.canonical()].metadata.get("source", {}).get("substitute")
        if sub:
            notes.append(f"{spec.canonical()}: substitute: {sub}")
    return "; ".join(notes)


def _record(
    command: str,
    metric: Metric,
    options: StatsOptions,
    boot: Bootstrap,
    tokenizer_name: str,
    tokenizer_fp: str,
    data_dir: Path | None,
    stats: dict[str, TokenStats],
    table: pd.DataFrame,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to reproduce and audit a run."""
    return {
        "command": command,
        "argv": sys.argv,
        "proximity_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metric": {"name": metric.name, "formula": metric.formula},
        "options": asdict(options),
        "bootstrap": asdict(boot),
        "tokenizer": {"name": tokenizer_name, "fingerprint": tokenizer_fp},
        "data_dir": str(data_dir) if data_dir else None,
        **extra,
        "datasets": {
            key: {
                "n_docs": st.n_docs,
                "n_tokens": st.n_tokens,
                "source": st.metadata.get("source"),
                "cache_key": st.metadata.get("key"),
                "cache_hit": st.metadata.get("cache_hit"),
            }
            for key, st in stats.items()
        },
        "results": table.to_dict(orient="records"),
    }


def _fmt(value: float, low: float, high: float) -> str:
    if np.isfinite(low) and np.isfinite(high):
        return f"{value:.3f} [{low:.3f}, {high:.3f}]"
    return f"{value:.3f}"


SIMILARITY_HELP = (
    "Similarity matrix between datasets (each tokenised once): table, CSV, JSON, heatmap.\n\n"
    "Defaults follow the paper: 1,000 documents, 10,000 characters, 512 tokens, no special "
    "tokens, Pythia tokenizer. Row a, column b holds metric(a, b); b is the reference for "
    "the asymmetric ngram_kl."
)
ADVANTAGE_HELP = (
    "Rank midtraining mixes by proximity advantage "
    "PA = sim(mix, target) − sim(pretrain, target).\n\n"
    "A mix is compared as the exact mixture of its parts' normalised token counts."
)


@app.command("similarity", help=SIMILARITY_HELP)
def similarity_command(
    datasets: Annotated[
        list[str],
        typer.Argument(help="Datasets or mixtures to compare: registry names, paths, hf:<id>."),
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
    bootstrap: BootstrapOpt = 0,
    ci_level: CILevelOpt = 0.95,
    ci_method: CIMethodOpt = "centered",
    data_dir: DataDirOpt = None,
    tokenizer: TokenizerOpt = "pythia",
    registry: RegistryOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/similarity"),
    no_cache: NoCacheOpt = False,
) -> None:
    """`proximity similarity`: see SIMILARITY_HELP."""
    chosen, options, boot = _protocol(
        metric, n_docs, sample, seed, max_chars, max_tokens, equal_tokens,
        ngram_order, ngram_buckets, bootstrap, ci_level, ci_method,
    )  # fmt: skip
    candidates = [candidate(text) for text in datasets]
    folder = resolve_data_dir(data_dir)
    reg = Registry.load(registry)
    stats, tok_fp = _compute_all(candidates, tokenizer, options, folder, reg, not no_cache)
    _print_sources(stats)
    with console.status("comparing" + (f" ({bootstrap} bootstrap resamples)" if bootstrap else "")):
        table = similarity_matrix(candidates, stats, chosen, boot)
    notes = {c.name: _notes(c, stats) for c in candidates}
    table["notes_a"] = table["a"].map(notes)
    table["notes_b"] = table["b"].map(notes)

    from proximity.outputs import short_label

    labels = [c.name for c in candidates]
    grid = Table(title=f"{chosen.name} similarity (row a, column b)")
    grid.add_column("")
    for label in labels:
        grid.add_column(short_label(label), justify="right")
    for a in labels:
        rows = table[table["a"] == a].set_index("b")
        cells = (_fmt(*rows.loc[b, ["value", "ci_low", "ci_high"]]) for b in labels)
        grid.add_row(short_label(a), *cells)
    console.print(grid)

    matrix = table.pivot(index="a", columns="b", values="value").loc[labels, labels]
    record = _record(
        "similarity",
        chosen,
        options,
        boot,
        tokenizer,
        tok_fp,
        folder,
        stats,
        table,
        {"datasets_compared": {c.name: c.canonical() for c in candidates}},
    )
    note = _budget_note(options, stats)
    paths = [
        _write_csv(table, out / "similarity.csv"),
        _write_json(record, out / "similarity.json"),
        _heatmap(matrix, out / "similarity_heatmap.png", f"{chosen.name} similarity", note),
    ]
    _print_written(paths)


@app.command("advantage", help=ADVANTAGE_HELP)
def advantage_command(
    pretrain: Annotated[str, typer.Option(help="Pretraining data (the baseline), e.g. c4.")],
    target: Annotated[str, typer.Option(help="Target (SFT) data, e.g. gsm8k.")],
    mix: Annotated[
        list[str],
        typer.Option(
            help="Candidate midtraining mix, repeatable: name:w means pretrain·(1−w) + name·w "
            "(e.g. starcoder:0.2); or a full mixture such as c4:0.7+math:0.3."
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
    bootstrap: BootstrapOpt = 0,
    ci_level: CILevelOpt = 0.95,
    ci_method: CIMethodOpt = "centered",
    data_dir: DataDirOpt = None,
    tokenizer: TokenizerOpt = "pythia",
    registry: RegistryOpt = None,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("outputs/advantage"),
    no_cache: NoCacheOpt = False,
) -> None:
    """`proximity advantage`: see ADVANTAGE_HELP."""
    chosen, options, boot = _protocol(
        metric, n_docs, sample, seed, max_chars, max_tokens, equal_tokens,
        ngram_order, ngram_buckets, bootstrap, ci_level, ci_method,
    )  # fmt: skip
    base = candidate(pretrain)
    goal = candidate(target)
    mixes = [midtraining_mix(base, text) for text in mix]
    if len({m.name for m in mixes}) != len(mixes):
        raise ProximityError(f"--mix values must be distinct, got {mix}")
    folder = resolve_data_dir(data_dir)
    reg = Registry.load(registry)
    stats, tok_fp = _compute_all(
        [base, goal, *mixes], tokenizer, options, folder, reg, not no_cache
    )
    _print_sources(stats)
    with console.status("comparing" + (f" ({bootstrap} bootstrap resamples)" if bootstrap else "")):
        table = proximity_advantage(base, goal, mixes, stats, chosen, boot)
    table["notes"] = [_notes(m, stats) for m in mixes]

    grid = Table(title=f"proximity advantage for target {goal.name} ({chosen.name})")
    for name in ("rank", "mix", "as mixture", f"sim(mix, {goal.name})", "PA"):
        grid.add_column(name, justify="right" if name in ("rank", "PA") else "left")
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
        f"baseline sim({base.name}, {goal.name}) = {table['sim_pretrain_target'].iloc[0]:.4f}",
        highlight=False,
    )
    record = _record(
        "advantage",
        chosen,
        options,
        boot,
        tokenizer,
        tok_fp,
        folder,
        stats,
        table,
        {
            "pretrain": base.canonical(),
            "target": goal.canonical(),
            "mixes": {m.name: m.canonical() for m in mixes},
        },
    )
    title = f"Proximity advantage for {goal.name} vs {base.name} ({chosen.name})"
    paths = [
        _write_csv(table, out / "advantage.csv"),
        _write_json(record, out / "advantage.json"),
        _bar_chart(table, out / "advantage.png", title),
    ]
    _print_written(paths)


def _budget_note(options: StatsOptions, stats: dict[str, TokenStats]) -> str:
    tokens = sorted({st.n_tokens for st in stats.values()})
    if options.token_budget:
        return f"equal token budget: {options.token_budget:,} tokens per dataset"
    return f"tokens per dataset: {tokens[0]:,}–{tokens[-1]:,} (not equalised)"


# Outputs are imported late: matplotlib/seaborn cost ~1 s and `--help` should stay fast.
def _write_csv(table: pd.DataFrame, path: Path) -> Path:
    from proximity.outputs import write_csv

    return write_csv(table, path)


def _write_json(record: dict[str, Any], path: Path) -> Path:
    from proximity.outputs import write_json

    return write_json(record, path)


def _heatmap(matrix: pd.DataFrame, path: Path, title: str, note: str) -> Path:
    from proximity.outputs import save_heatmap

    return save_heatmap(matrix, path, title=title, note=note)


def _bar_chart(table: pd.DataFrame, path: Path, title: str) -> Path:
    from proximity.outputs import save_advantage_chart

    return save_advantage_chart(table, path, title=title)


def _print_written(paths: list[Path]) -> None:
    for path in paths:
        console.print(f"wrote {path}", highlight=False)
