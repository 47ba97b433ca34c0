"""configs/*-paper.yaml hold the paper's settings (PAPER.md, "Experimental design"), transcribed
here by hand from the paper's text rather than read back from the configs' own comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from proximity.training.config import RunConfig
from proximity.training.presets import PRESETS

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize(("name", "preset"), [("pythia-70m", "70m"), ("pythia-160m", "160m")])
def test_pretraining_configs_are_the_papers(name, preset):
    cfg = RunConfig.from_yaml(CONFIGS / f"{name}-paper.yaml")
    assert cfg.phase == "pretrain" and cfg.model.preset == preset
    assert cfg.data.train == "c4" and cfg.data.tokenizer == "pythia"
    assert cfg.model.seq_len == 2048 and cfg.train.batch_size == 1024
    # 128B tokens = 61,035 steps x 1,024 sequences x 2,048 tokens.
    assert cfg.train.steps == 61035
    assert cfg.train.steps * 1024 * 2048 == pytest.approx(128e9, rel=1e-3)
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_fraction) == (3e-4, 1e-6, 0.1)
    assert (cfg.optim.beta1, cfg.optim.beta2, cfg.optim.weight_decay) == (0.9, 0.95, 0.1)
    assert cfg.system.dtype == "bf16"
    # The midtraining start points: starcoder ~6k-10k, math 20k, the rest 40k; ablations
    # 20k/30k/40k/50k.
    assert {6000, 10000, 20000, 30000, 40000, 50000} <= set(cfg.checkpoint.steps)
    # The global batch splits evenly over 8 GPUs and the per-GPU micro-batch.
    assert (1024 // 8) % cfg.train.micro_batch_size == 0


def test_sft_config_is_the_papers():
    cfg = RunConfig.from_yaml(CONFIGS / "pythia-sft-paper.yaml")
    assert cfg.phase == "sft" and cfg.train.epochs == 4 and cfg.optim.warmup_fraction == 0.1
    assert cfg.model.seq_len == 2048 and cfg.model.preset in PRESETS
    assert cfg.data.mask_prompt is None  # the target decides: on for GSM8K (the registry)
    assert cfg.train.batch_size % cfg.train.micro_batch_size == 0
    # Forgetting is measured on the C4 documents pretraining held out: the same split, so the
    # same val_fraction as the pretraining configs (else ~all "held-out" documents were trained).
    for name in ("pythia-70m", "pythia-160m"):
        pretrain = RunConfig.from_yaml(CONFIGS / f"{name}-paper.yaml")
        assert cfg.data.val_fraction == pretrain.data.val_fraction
    # A bounded C4 evaluation (the whole held-out split every eval would dwarf the SFT).
    assert cfg.eval.max_batches is not None
