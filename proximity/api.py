"""The notebook API: the two core commands as functions that return pandas DataFrames.

    import proximity
    matrix = proximity.similarity_matrix(["c4", "starcoder", "gsm8k"], n_docs=200)
    ranked = proximity.proximity_advantage("c4", "gsm8k", ["starcoder:0.2", "math:0.12"])

Keyword names are the command-line flags' (`--n-docs` is `n_docs`, `--no-cache` is `no_cache`),
with the same defaults, and `similarity_settings` turns them into the metric, counting options
and bootstrap for both, so a function and its command give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from tokenizers import Tokenizer

from proximity.bootstrap import Bootstrap
from proximity.data import resolve_data_dir
from proximity.errors import ProximityError
from proximity.metrics import Metric, get_metric
from proximity.registry import Registry
from proximity.similarity import MIXTURE_MODES, Run, run_advantage, run_similarity
from proximity.stats import PAPER_MAX_CHARS, PAPER_MAX_TOKENS, PAPER_N_DOCS, StatsOptions


def similarity_settings(
    metric: str = "paper",
    n_docs: int | None = None,
    sample: str = "first",
    seed: int = 0,
    max_chars: int = PAPER_MAX_CHARS,
    max_tokens: int = PAPER_MAX_TOKENS,
    equal_tokens: int | None = None,
    ngram_order: int = 0,
    ngram_buckets: int = 2**20,
    mixture: str = "expected",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    ci_level: float = 0.95,
    ci_method: str = "basic",
) -> tuple[Metric, StatsOptions, Bootstrap]:
    """The metric, counting options and bootstrap that the flags of `similarity` and
    `advantage` (and the functions below) mean, validated; errors name the flag."""
    chosen = get_metric(metric)
    if n_docs is None and (equal_tokens is None or sample == "random"):
        n_docs = PAPER_N_DOCS
    if chosen.uses == "ngram" and not ngram_order:
        ngram_order = 2
    if mixture not in MIXTURE_MODES:
        raise ProximityError(
            f"--mixture must be one of {', '.join(MIXTURE_MODES)}, got {mixture!r}"
        )
    options = StatsOptions(
        n_docs=n_docs,
        sample=sample,  # type: ignore[arg-type]  # validated by StatsOptions
        seed=seed,
        max_chars=max_chars or None,
        max_tokens=max_tokens or None,
        token_budget=equal_tokens,
        ngram_order=ngram_order,
        ngram_buckets=ngram_buckets,
        per_document=bootstrap > 0 or mixture == "resample",
    )
    boot = Bootstrap(bootstrap, bootstrap_seed, ci_level, ci_method)  # type: ignore[arg-type]
    return chosen, options, boot


def similarity_matrix(
    datasets: Sequence[str],
    *,
    metric: str = "paper",
    n_docs: int | None = None,
    sample: str = "first",
    seed: int = 0,
    max_chars: int = PAPER_MAX_CHARS,
    max_tokens: int = PAPER_MAX_TOKENS,
    equal_tokens: int | None = None,
    ngram_order: int = 0,
    ngram_buckets: int = 2**20,
    mixture: str = "expected",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    ci_level: float = 0.95,
    ci_method: str = "basic",
    data_dir: str | Path | None = None,
    tokenizer: str | Tokenizer = "pythia",
    registry: Sequence[str | Path] | None = None,
    no_cache: bool = False,
) -> pd.DataFrame:
    """`proximity similarity` as a square DataFrame: row a, column b holds metric(a, b),
    both labelled by dataset as the command labels them (a `name=spec` label, else the name).

    With `bootstrap` > 0, `.attrs["ci_low"]` and `.attrs["ci_high"]` hold the interval bounds
    as frames of the same shape. `data_dir` None reads `$PROXIMITY_DATA_DIR` (else the hub).
    The long table with every column the CLI writes is `proximity.similarity.similarity_table`.
    """
    chosen, options, boot = similarity_settings(
        metric, n_docs, sample, seed, max_chars, max_tokens, equal_tokens, ngram_order,
        ngram_buckets, mixture, bootstrap, bootstrap_seed, ci_level, ci_method,
    )  # fmt: skip
    run = run_similarity(
        datasets, metric=chosen, tokenizer=tokenizer, options=options,
        mixture=mixture, bootstrap=boot, data_dir=resolve_data_dir(data_dir),  # type: ignore[arg-type]
        registry=Registry.load(registry), use_cache=not no_cache,
    )  # fmt: skip
    return _square(run)


def _square(run: Run) -> pd.DataFrame:
    labels = list(run.compared)

    def square(column: str) -> pd.DataFrame:
        frame = run.table.pivot(index="a", columns="b", values=column).loc[labels, labels]
        return frame.rename_axis(index=None, columns=None)

    matrix = square("value")
    if run.table["ci_low"].notna().any():
        matrix.attrs = {"ci_low": square("ci_low"), "ci_high": square("ci_high")}
    return matrix


def proximity_advantage(
    pretrain: str,
    target: str,
    mixes: Sequence[str],
    *,
    metric: str = "paper",
    n_docs: int | None = None,
    sample: str = "first",
    seed: int = 0,
    max_chars: int = PAPER_MAX_CHARS,
    max_tokens: int = PAPER_MAX_TOKENS,
    equal_tokens: int | None = None,
    ngram_order: int = 0,
    ngram_buckets: int = 2**20,
    mixture: str = "expected",
    bootstrap: int = 0,
    bootstrap_seed: int = 0,
    ci_level: float = 0.95,
    ci_method: str = "basic",
    data_dir: str | Path | None = None,
    tokenizer: str | Tokenizer = "pythia",
    registry: Sequence[str | Path] | None = None,
    no_cache: bool = False,
) -> pd.DataFrame:
    """`proximity advantage --pretrain P --target T --mix M ...` as a tidy DataFrame, one row
    per mix, best first: rank, mix, mix_spec, weight, advantage (PA = sim(mix, target) −
    sim(pretrain, target)), ci_low, ci_high, both similarities, token counts and notes.

    `mixes` are `--mix` values: `starcoder:0.2` is pretrain·0.8 + starcoder·0.2, `starcoder`
    is continued pretraining on it alone, `c4:0.7+math:0.3` a full mixture.
    """
    chosen, options, boot = similarity_settings(
        metric, n_docs, sample, seed, max_chars, max_tokens, equal_tokens, ngram_order,
        ngram_buckets, mixture, bootstrap, bootstrap_seed, ci_level, ci_method,
    )  # fmt: skip
    return run_advantage(
        pretrain, target, mixes, metric=chosen, tokenizer=tokenizer, options=options,
        mixture=mixture, bootstrap=boot, data_dir=resolve_data_dir(data_dir),  # type: ignore[arg-type]
        registry=Registry.load(registry), use_cache=not no_cache,
    ).table  # fmt: skip
