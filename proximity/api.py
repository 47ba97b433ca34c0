"""The notebook API: the two core commands as functions that return pandas DataFrames.

    import proximity
    matrix = proximity.similarity_matrix(["c4", "starcoder", "gsm8k"], n_docs=200)
    ranked = proximity.proximity_advantage("c4", "gsm8k", ["starcoder:0.2", "math:0.12"])

Keyword names are the command-line flags' (`--n-docs` is `n_docs`, `--no-cache` is `no_cache`),
with the same defaults: the similarity flags (`metric`, `n_docs`, `sample`, `seed`,
`max_chars`, `max_tokens`, `equal_tokens`, `ngram_order`, `ngram_buckets`, `mixture`,
`bootstrap`, `bootstrap_seed`, `ci_level`, `ci_method`) are the keywords of
`SimilaritySettings.from_flags`, which both the commands and these functions call, so a
function and its command give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tokenizers import Tokenizer

from proximity.data import resolve_data_dir
from proximity.registry import Registry
from proximity.settings import SimilaritySettings
from proximity.similarity import Run, run_advantage, run_similarity


def similarity_matrix(
    datasets: Sequence[str],
    *,
    data_dir: str | Path | None = None,
    tokenizer: str | Tokenizer = "pythia",
    registry: Sequence[str | Path] | None = None,
    no_cache: bool = False,
    **flags: Any,
) -> pd.DataFrame:
    """`proximity similarity` as a square DataFrame: row a, column b holds metric(a, b),
    both labelled by dataset as the command labels them (a `name=spec` label, else the name).

    `flags`: the similarity flags as keywords (module docstring), e.g. `n_docs=200`,
    `metric="cosine"`. With `bootstrap` > 0, `.attrs["ci_low"]` and `.attrs["ci_high"]` hold
    the interval bounds as frames of the same shape. `data_dir` None reads
    `$PROXIMITY_DATA_DIR` (else the hub). The long table with every column the CLI writes is
    `proximity.similarity.similarity_table`.
    """
    settings = SimilaritySettings.from_flags(**flags)
    run = run_similarity(
        datasets, settings, tokenizer=tokenizer, data_dir=resolve_data_dir(data_dir),
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
    data_dir: str | Path | None = None,
    tokenizer: str | Tokenizer = "pythia",
    registry: Sequence[str | Path] | None = None,
    no_cache: bool = False,
    **flags: Any,
) -> pd.DataFrame:
    """`proximity advantage --pretrain P --target T --mix M ...` as a tidy DataFrame, one row
    per mix, best first: rank, mix, mix_spec, weight, advantage (PA = sim(mix, target) −
    sim(pretrain, target)), ci_low, ci_high, both similarities, token counts and notes.

    `mixes` are `--mix` values: `starcoder:0.2` is pretrain·0.8 + starcoder·0.2, `starcoder`
    is continued pretraining on it alone, `c4:0.7+math:0.3` a full mixture. `flags`: the
    similarity flags as keywords (module docstring).
    """
    settings = SimilaritySettings.from_flags(**flags)
    return run_advantage(
        pretrain, target, mixes, settings, tokenizer=tokenizer,
        data_dir=resolve_data_dir(data_dir), registry=Registry.load(registry),
        use_cache=not no_cache,
    ).table  # fmt: skip
