"""Command-line options shared by the commands that measure similarity, declared once.

`similarity` and `advantage` take every option here (the first fourteen, `SETTINGS_OPTIONS`,
become one `SimilaritySettings`: see proximity/commands.py); analysis/cli.py's `correlate` and
`recommend` take `--mixture`, `--no-cache` and `--no-plot` from here too, so each reads and
documents them the same way. An option is an `Annotated` alias (`n_docs: NDocsOpt = None`);
where a command needs another type for the same option (`None`: "as recorded"), it wraps the
declaration itself (`Annotated[str | None, MIXTURE]`).

Nothing here reads data or counts tokens: analysis/cli.py imports this module for every
`proximity` command that is not a core one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from proximity.data import DATA_DIR_ENV
from proximity.metrics import metrics_help

MIXTURE = typer.Option(
    "--mixture",
    help="How a mixture is compared: 'expected' (exact token frequencies, vocabulary "
    "expected at a matched token budget; continuous in the weights) or 'resample' (the "
    "authors' script: all specialised documents plus pretraining documents in proportion, "
    "capped at the pretraining sample). See docs/SIMILARITY.md.",
)

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
MixtureOpt = Annotated[str, MIXTURE]
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

SETTINGS_OPTIONS: dict[str, Any] = {
    "metric": MetricOpt,
    "n_docs": NDocsOpt,
    "sample": SampleOpt,
    "seed": SeedOpt,
    "max_chars": MaxCharsOpt,
    "max_tokens": MaxTokensOpt,
    "equal_tokens": EqualTokensOpt,
    "ngram_order": NgramOrderOpt,
    "ngram_buckets": NgramBucketsOpt,
    "mixture": MixtureOpt,
    "bootstrap": BootstrapOpt,
    "bootstrap_seed": BootstrapSeedOpt,
    "ci_level": CILevelOpt,
    "ci_method": CIMethodOpt,
}
"""The flags of `SimilaritySettings.from_flags` (its keyword -> the option), in --help order."""

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
NoCacheOpt = Annotated[
    bool, typer.Option("--no-cache", help="Recompute token statistics, ignore the cache.")
]
NoPlotOpt = Annotated[bool, typer.Option("--no-plot", help="Write no figures, only the tables.")]
OutOpt = Annotated[Path, typer.Option(help="Output folder.")]
