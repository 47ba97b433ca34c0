"""Data preparation as its own step: tokenise a run's datasets before training starts.

    proximity train prepare c4 --tokenizer pythia --out data/tokens --workers 16
    proximity train prepare --config configs/pythia-70m-paper.yaml --workers 16

Each dataset becomes one memory-mapped build (train.bin, val.bin, manifest.json; see
training/data/tokenized.py) under the output folder, tokenised in shards by `workers` processes,
resumable per shard and byte-identical for any number of workers. A run reads these builds
when `data.cache_dir` is that folder and its data settings (n_docs, max_chars, val_fraction,
tokenizer) are the same (they are part of each build's key). A run whose data is not prepared
prepares it itself on rank 0 (with `data.prepare_workers` processes) while the other ranks
wait for the manifest file: convenient on one CPU, but on a cluster prepare first.

The grid calls the same functions from Python: `prepare(...)` for a spec, `prepare_run(cfg)`
for everything one RunConfig will read.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer

from proximity.specs import parse_mixture
from proximity.tokenizer import load_tokenizer
from proximity.training.config import RunConfig
from proximity.training.data.sft_prepared import PreparedSFT
from proximity.training.data.tokenized import SPLIT_SEED, TokenizedDataset, tokenize_dataset
from proximity.training.phases import cache_dir, sft_build


def prepare(
    spec: str,
    tokenizer: Tokenizer,
    out: str | Path,
    *,
    workers: int = 1,
    data_dir: str | Path | None = None,
    n_docs: int | None = None,
    max_chars: int | None = None,
    val_fraction: float = 0.05,
    progress: bool = True,
) -> list[TokenizedDataset]:
    """Tokenise each dataset of `spec` (each part of a mixture) into `out`; reuse finished ones."""
    return [
        tokenize_dataset(
            part.canonical(),
            tokenizer,
            cache_dir=Path(out),
            data_dir=Path(data_dir) if data_dir else None,
            n_docs=n_docs,
            max_chars=max_chars,
            val_fraction=val_fraction,
            seed=SPLIT_SEED,
            progress=progress,
            workers=workers,
        )
        for part in parse_mixture(spec).datasets
    ]


def run_specs(cfg: RunConfig) -> list[str]:
    """The packed datasets a run reads: its training mixture (not an SFT target: that is an SFT
    build, training/data/sft_prepared.py) and every `eval.datasets` entry."""
    specs = [] if cfg.phase == "sft" else [cfg.data.train]
    return list(dict.fromkeys([*specs, *cfg.eval.datasets]))


def prepare_run(
    cfg: RunConfig, workers: int = 1, progress: bool = True
) -> list[TokenizedDataset | PreparedSFT]:
    """Prepare exactly the builds that `cfg` will read, where it will look for them: for an SFT
    config, the target's examples too (one process: `workers` split documents, not examples)."""
    tokenizer = load_tokenizer(cfg.data.tokenizer, data_dir=cfg.data.data_dir)
    builds: list[TokenizedDataset | PreparedSFT] = []
    if cfg.phase == "sft":
        builds.append(sft_build(cfg, tokenizer, build=True))
    for spec in run_specs(cfg):
        builds += prepare(
            spec,
            tokenizer,
            cache_dir(cfg),
            workers=workers,
            data_dir=cfg.data.data_dir,
            n_docs=cfg.data.n_docs,
            max_chars=cfg.data.max_chars,
            val_fraction=cfg.data.val_fraction,
            progress=progress,
        )
    return builds
