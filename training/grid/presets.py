"""Built-in grids: `smoke` (the tests), `micro` (the paper's design on CPU), `paper-70m/160m`.

Each is a plain dict in the YAML shape, so `proximity train-grid micro --dry-run` and a YAML
copy of it behave the same, and `--set` overrides any field.
"""

from __future__ import annotations

from collections.abc import Callable
from math import gcd
from typing import Any

from proximity.training.memory import gpu_memory_gib, largest_fitting_micro_batch
from proximity.training.presets import memory_shape, model_config

PYTHIA_VOCAB = 50_277  # the Pythia tokenizer's tokens (50,304 output rows once padded)

# The paper's pretraining: 128B tokens = 61,035 steps x 1,024 sequences x 2,048 tokens.
PAPER_STEPS = 61_035
PAPER_GPU = "h100"  # the GPU the paper presets are sized for (estimate.device)


def paper_micro_batch(model: str, per_rank_batches: tuple[int, ...], seq_len: int) -> int:
    """The paper presets' train.micro_batch_size, by one written rule: the largest divisor of
    every training node's per-GPU batch (so accumulation is exact everywhere) whose estimated
    peak memory under bf16 and DDP (training/memory.py) stays within FIT_FRACTION of one
    PAPER_GPU. Without it each GPU would run its whole share in one pass (128 x 2,048 tokens:
    about 178 GiB at 70M, the logits alone 147)."""
    shape = memory_shape(model_config(model, vocab_size=PYTHIA_VOCAB))
    micro = largest_fitting_micro_batch(
        shape, per_rank_batch=gcd(*per_rank_batches), seq_len=seq_len, bf16=True, ddp=True,
        device_gib=gpu_memory_gib(PAPER_GPU) or 0.0,
    )  # fmt: skip
    if micro is None:
        raise ValueError(f"paper-{model}: not one sequence fits a {PAPER_GPU}")
    return micro


def smoke() -> dict[str, Any]:
    """Every node kind in about a minute on 2 cores: the grid tests run this."""
    return {
        "name": "smoke",
        "models": ["micro-2l-64"],
        "seeds": [0],
        "tokenizer": {"name": "train", "corpus": "c4", "vocab_size": 512, "n_docs": 300},
        "data": {"n_docs": 300, "max_chars": 4000},
        "pretrain": {
            "data": "c4",
            "steps": 24,
            "batch_size": 8,
            "seq_len": 64,
            "lr": 3e-3,
            "min_lr": 3e-4,
            "checkpoint_every": 8,
        },
        "mixtures": [
            {
                "name": "code",
                "data": "starcoder",
                "weights": [0.2],
                "start_steps": [12],
                "cpt": True,
            },
        ],
        "control": True,
        "ablation": {"mixture": "code", "start_steps": [12, 18], "weights": [0.2]},
        "sft": {
            "targets": ["pycode"],
            "lrs": [1e-3, 3e-3],
            "epochs": 1,
            "batch_size": 8,
            "seq_len": 64,
            "n_docs": 48,
        },
        "eval": {"datasets": ["c4"], "batch_size": 8, "max_batches": 2},
        "train_set": ["system.deterministic=true"],
    }


def micro() -> dict[str, Any]:
    """The paper's design at micro scale on the shared data (sizes chosen in docs/GRID.md)."""
    return {
        "name": "micro",
        "models": ["micro-2l-128"],
        "seeds": [0],
        "tokenizer": {"name": "train", "corpus": "c4", "vocab_size": 4096, "n_docs": 2500},
        "data": {"n_docs": 2000, "max_chars": 8000},
        "pretrain": {
            "data": "c4",
            "steps": 300,
            "batch_size": 16,
            "seq_len": 128,
            "lr": 2e-3,
            "min_lr": 2e-4,
            "checkpoint_every": 50,
        },
        # The paper's mixes and weights; starts scaled from its 61k-step run (code early, math
        # in the middle, the others late). Local stand-ins are flagged in `substitutes`.
        "mixtures": [
            {
                "name": "code",
                "data": "starcoder",
                "weights": [0.2],
                "start_steps": [100],
                "cpt": True,
            },
            {"name": "math", "data": "math", "weights": [0.12], "start_steps": [150], "cpt": True},
            {
                "name": "instruct",
                "data": "alpaca",
                "weights": [0.05],
                "start_steps": [200],
                "note": "alpaca: Stanford Alpaca stands in for FLAN",
            },
            {
                "name": "qa",
                "data": "social_iqa",
                "weights": [0.2],
                "start_steps": [200],
                "note": "social_iqa: Social IQa stands in for the KnowledgeQA mix",
            },
            {
                "name": "web2",
                "data": "fineweb",
                "weights": [0.2],
                "start_steps": [200],
                "note": "fineweb: a FineWeb subset stands in for DCLM",
            },
        ],
        "control": True,
        "ablation": {
            "mixture": "code",
            "start_steps": [100, 200],
            "weights": [0.2, 0.5],
            "targets": ["pycode"],
        },
        "sft": {
            "targets": ["gsm8k", "pycode", "lima", "sciq"],
            "lrs": [3e-4, 1e-3, 3e-3, 1e-2],
            "epochs": 2,
            "batch_size": 16,
            "seq_len": 128,
            "n_docs": 140,
        },
        "eval": {"datasets": ["c4"], "batch_size": 16, "max_batches": 8},
        "train_set": ["system.deterministic=true"],
    }


def study() -> dict[str, Any]:
    """A design that can decide "proximity predicts the gain" on CPU (issue 15, docs/STUDY.md).

    Against `micro`: two model sizes; 6 specialised datasets x 2 weights (+ CPT for code and
    math, + the start x weight ablation), so 12 mixtures x 6 targets = 72 pairs per size with
    PA spread in both directions; SFT on 550 examples per target (285 for OpenBookQA) for one
    epoch with >= 200 fixed validation examples, scored per example; local stand-ins formatted
    like the datasets they stand in for, so no prompt template is shared between a mixture and
    a target. Run in parts (by model size and seed) into one folder: see `make study`.
    """
    return {
        "name": "study",
        # The larger size is 4 layers x 128 (twice the depth, 1.4x the cost per token):
        # 4 x 256 costs 2.7x, so its two parts alone would take over 5 h on 2 cores, past the
        # 4 h the whole study is allowed (docs/STUDY.md, "Budget").
        "models": ["micro-2l-128", "micro-4l-128"],
        "seeds": [0, 1],
        "tokenizer": {"name": "train", "corpus": "c4", "vocab_size": 4096, "n_docs": 2500},
        # Every local C4 document (2,509), cut at 8,000 characters as in micro.
        "data": {"n_docs": None, "max_chars": 8000},
        "pretrain": {
            "data": "c4",
            "steps": 800,
            "batch_size": 16,
            "seq_len": 128,
            "lr": 2e-3,
            "min_lr": 2e-4,
            "checkpoint_every": 80,
        },
        "mixtures": _study_mixtures(),
        "control": True,
        "ablation": {
            "mixture": "code",
            "start_steps": [480, 640],
            "weights": [0.1, 0.5],
            "targets": ["pycode"],
        },
        "sft": _study_sft(),
        # 14 batches of 16 cover the (at most 215) validation examples of every target.
        "eval": {"datasets": ["c4"], "batch_size": 16, "max_batches": 14},
        "train_set": ["system.deterministic=true"],
    }


def _study_mixtures() -> list[dict[str, Any]]:
    """The study's mixtures (a fresh list per call: template_control edits its copy)."""
    # Midtraining over the last 20% of the run at 10% and 50%: two weights per domain give
    # the dose-response, and the 50% branches spread PA (at 40% the first part's PA std
    # over its 72 pairs was 0.028, short of the 0.03).
    return [
        {
            "name": "code",
            "data": "starcoder",
            "weights": [0.1, 0.5],
            "start_steps": [640],
            "cpt": True,
        },
        {
            "name": "math",
            "data": "math",
            "weights": [0.1, 0.5],
            "start_steps": [640],
            "cpt": True,
        },
        {
            "name": "mathword",
            "data": "gsm8k?split=test&format=plain",
            "weights": [0.1, 0.5],
            "start_steps": [640],
            "note": "GSM8K's test split (never an SFT example) stands in for the "
            "GSM8K-derived part of MathInstruct",
        },
        {"name": "instruct", "data": "flan", "weights": [0.1, 0.5], "start_steps": [640]},
        {"name": "legalweb", "data": "fineweb", "weights": [0.1, 0.5], "start_steps": [640]},
        {"name": "wiki", "data": "wikitext", "weights": [0.1, 0.5], "start_steps": [640]},
    ]


def _study_sft() -> dict[str, Any]:
    """The study's SFT section (a fresh dict per call: template_control edits its copy)."""
    return {
        "targets": ["gsm8k", "pycode", "lima", "sciq", "openbookqa", "social_iqa"],
        # The control's sweep (figures/study/lr_sweep_control.csv: 1e-3..3e-2 on
        # micro-2l-128 seed 0) put 3e-3 best for 5 targets, 1e-3 for LIMA, 1e-2 worse than
        # 3e-3 for all 6, 3e-2 worst; but the first part's midtrained branches chose the
        # top of [1e-3, 3e-3] in 77 of 92 selections, so 1e-2 is swept too. The report
        # counts selections at either edge.
        "lrs": [1e-3, 3e-3, 1e-2],
        # LIMA chose the bottom of that sweep in every group of the first three parts (45 of
        # 45; its control too), so its sweep goes one step lower (3e-4 then lost to 1e-3 in all
        # 60 groups); no group of any target chose 1e-2 (docs/STUDY.md, the LR section).
        "lrs_by_target": {"lima": [3e-4, 1e-3, 3e-3, 1e-2]},
        # One epoch, not the paper's 4: the 4 h CPU budget (docs/STUDY.md); every example
        # is seen once, so the validation loss measures transfer, not memorisation.
        "epochs": 1,
        "batch_size": 16,
        "seq_len": 128,
        # 215 held out so that GSM8K, whose longest prompts fill 128 tokens and are dropped,
        # still scores at least 200 validation examples.
        "n_docs": 765,
        "val_docs": 215,
    }


def template_control() -> dict[str, Any]:
    """The shared-template control (docs/STUDY.md): does a mixture that teaches the target's
    prompt template lower its loss beyond what PA sees? Alpaca at 40% in its own template
    (`### Instruction / ### Response`) and formatted like FLAN (no template), each fine-tuned on
    Code Alpaca in the Alpaca template and as raw code (the study's Pycode*). The study's
    micro-2l-128 seed-0 nodes are reused when run into the same folder (same pretraining
    checkpoints, same code branches)."""
    spec = study()
    spec["name"] = "template-control"
    spec["models"], spec["seeds"] = ["micro-2l-128"], [0]
    code = next(entry for entry in spec["mixtures"] if entry["name"] == "code")
    # Pinned to the weights and sweep it ran with (figures/study/template_control_results.csv)
    # before the study moved to 50% and added 1e-2, so the committed table stays reproducible.
    code = {**code, "weights": [0.1, 0.4]}
    spec["ablation"]["weights"] = [0.1, 0.4]
    spec["sft"]["lrs"] = [1e-3, 3e-3]
    spec["mixtures"] = [
        code,
        {"name": "instruct", "data": "flan", "weights": [0.4], "start_steps": [640]},
        {"name": "instruct-alpaca", "data": "alpaca", "weights": [0.4], "start_steps": [640]},
    ]
    spec["sft"]["targets"] = ["pycode", "code_alpaca"]
    return spec


def _paper(model: str) -> dict[str, Any]:
    pretrain_gpus, sft_gpus, batch, sft_batch, seq_len = 8, 1, 1024, 64, 2048
    micro = paper_micro_batch(model, (batch // pretrain_gpus, sft_batch // sft_gpus), seq_len)
    return {
        "name": f"paper-{model}",
        "models": [model],
        "seeds": [0, 1, 2, 3, 4],
        "tokenizer": {"name": "pythia"},
        "data": {},
        "pretrain": {
            "data": "c4",
            "steps": PAPER_STEPS,
            "batch_size": batch,
            "seq_len": seq_len,
            "lr": 3e-4,
            "min_lr": 1e-6,
            "checkpoint_every": 1000,
        },
        # PAPER.md's table. The KnowledgeQA mix (MiniCPM-style) has no public source we can name,
        # so it is left out; add it with `mixtures` in a YAML copy.
        "mixtures": [
            {
                "name": "code",
                "data": "starcoder",
                "weights": [0.2],
                "start_steps": [8000],
                "cpt": True,
            },
            {
                "name": "math",
                "data": "math",
                "weights": [0.12],
                "start_steps": [20000],
                "cpt": True,
            },
            {"name": "flan", "data": "flan", "weights": [0.05], "start_steps": [40000]},
            {"name": "dclm", "data": "dclm", "weights": [0.2], "start_steps": [40000]},
        ],
        "control": True,
        "ablation": {
            "mixture": "code",
            "start_steps": [20000, 30000, 40000, 50000],
            "weights": [0.1, 0.2, 0.3, 0.5, 0.8],
        },
        "sft": {
            "targets": ["gsm8k", "pycode", "lima", "sciq"],
            "lrs": [1e-5, 3e-5, 1e-4],
            "epochs": 4,
            "batch_size": sft_batch,
            "seq_len": seq_len,
        },
        "eval": {"datasets": ["c4"], "batch_size": 32, "max_batches": 50},
        "train_set": ["system.dtype=bf16", f"train.micro_batch_size={micro}"],
        "estimate": {"device": PAPER_GPU, "mfu": 0.4, "gpus": pretrain_gpus},
        # Starting points, never run (no GPU cluster here): one 8-GPU node per training node,
        # SFT on one GPU, data preparation on CPUs only (forced for that kind); check the
        # time limits against `--dry-run`'s estimate.
        "slurm": {
            "time_minutes": 2880,
            "gpus_per_node": pretrain_gpus,
            "cpus_per_task": 64,
            "midtrain": {"time_minutes": 1440},
            "sft": {"time_minutes": 240, "gpus_per_node": sft_gpus, "cpus_per_task": 8},
        },
    }


GRID_PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "smoke": smoke,
    "micro": micro,
    "study": study,
    "template-control": template_control,
    "paper-70m": lambda: _paper("70m"),
    "paper-160m": lambda: _paper("160m"),
}
