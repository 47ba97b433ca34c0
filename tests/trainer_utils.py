"""Helpers shared by the trainer tests: a tiny tokenizer and a tiny run configuration.

The tokenizer is a 512-token BPE trained on the C4 sample (the data-pipeline recipe), so a
2-layer, 64-wide model trains in milliseconds per step; the Pythia tokenizer's 50k-row head would
dominate every test's runtime.
"""

from __future__ import annotations

from pathlib import Path

import torch

from proximity.training.config import RunConfig

VOCAB_SIZE = 512
N_DOCS = 300


def train_tiny_tokenizer(shared_data: Path, out: Path) -> Path:
    from proximity.data import load_texts
    from proximity.training.tokenizer_training import save_tokenizer, train_tokenizer

    texts = list(load_texts("c4", n_docs=N_DOCS, max_chars=4000, data_dir=shared_data))
    return save_tokenizer(train_tokenizer(texts, VOCAB_SIZE), out)


def tiny_config(tokenizer: Path, shared_data: Path, out_dir: Path, **sections) -> RunConfig:
    """A run that takes about a second: 2 layers x 64 wide, 64-token sequences, batch 8.

    `sections` override whole keys, e.g. `train={"steps": 12}` or `phase="midtrain"`.
    """
    base = {
        "phase": "pretrain",
        "out_dir": str(out_dir),
        "model": {"preset": "micro-2l-64", "seq_len": 64},
        "data": {
            "train": "c4",
            "tokenizer": str(tokenizer),
            "data_dir": str(shared_data),
            "n_docs": N_DOCS,
            "max_chars": 4000,
        },
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 2},
        "train": {"steps": 12, "batch_size": 8, "log_every": 1},
        "eval": {"every": 0, "batch_size": 8, "max_batches": 2},
        "checkpoint": {"every": 0},
        "system": {"device": "cpu", "threads": 1, "deterministic": True, "progress": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            base[key] = {**base.get(key, {}), **value}
        else:
            base[key] = value
    return RunConfig.from_dict(base)


def state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
