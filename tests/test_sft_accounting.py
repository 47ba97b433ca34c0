"""SFT loss accounting: every trained token of the global batch weighs the same, whatever the
micro-batch size, gradient accumulation and number of processes.

Reference: Hugging Face's own masked loss on the whole global batch
(`GPTNeoXForCausalLM(input_ids, labels=...).loss`, the mean over its trained tokens).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_utils import tiny_config
from transformers import GPTNeoXForCausalLM

from proximity.training.checkpoint import load_checkpoint
from proximity.training.loop import train
from proximity.training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
N_DOCS = 48  # 43 train examples at 10% held out: 5 steps of 8


@pytest.fixture(scope="module")
def pretrained(tokenizer_file: Path, shared_data: Path, tmp_path_factory) -> Path:
    """A start with uneven per-token losses (at fresh weights every token costs ~log(vocab),
    so any weighting of the tokens would give the same mean and the test could not fail)."""
    out = tmp_path_factory.mktemp("pretrain")
    train(tiny_config(tokenizer_file, shared_data, out, train={"steps": 30, "log_every": 10}))
    return out


def _sft_config(tokenizer_file, shared_data, out, init_from, **train_section):
    return tiny_config(
        tokenizer_file, shared_data, out, phase="sft",
        model={"seq_len": 512, "init_from": str(init_from)},
        data={"train": "gsm8k", "n_docs": N_DOCS, "mask_prompt": True},
        train={"steps": None, "epochs": 1, "batch_size": 8, **train_section},
        eval={"every": 0, "datasets": []},
    )  # fmt: skip


def _train_losses(out: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    model = GPTNeoXForCausalLM.from_pretrained(load_checkpoint(out).model_dir)
    return model.state_dict()


def _sft_split(cfg):
    """The training examples, rebuilt from the data module (not the loop)."""
    from proximity.tokenizer import load_tokenizer
    from proximity.training.data.sft_data import build_sft_data
    from proximity.training.phases import SPLIT_SEED

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    split, _ = build_sft_data(
        "gsm8k", tokenizer, seq_len=512, mask_prompt=True, data_dir=cfg.data.data_dir,
        n_docs=N_DOCS, val_fraction=cfg.data.sft_val_fraction, seed=SPLIT_SEED,
    )  # fmt: skip
    return split


def _first_global_batch(cfg):
    """The step-0 batch, rebuilt from the data module (not the loop) at the fresh weights."""
    split = _sft_split(cfg)
    input_ids, labels = next(split.batches(8, epoch=0, seed=cfg.train.seed))
    model = GPTNeoXForCausalLM.from_pretrained(load_checkpoint(cfg.model.init_from).model_dir)
    return model.eval(), input_ids, labels


def test_sft_loss_is_the_global_batch_token_mean_for_any_geometry(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    whole = _sft_config(tokenizer_file, shared_data, tmp_path / "whole", pretrained)
    train(whole)
    accum = _sft_config(
        tokenizer_file, shared_data, tmp_path / "accum", pretrained, micro_batch_size=2
    )
    train(accum)

    model, input_ids, labels = _first_global_batch(whole)
    with torch.no_grad():
        reference = float(model(input_ids=input_ids, labels=labels).loss)
        # What averaging per micro-batch (the old accounting) would log: the rows carry
        # different numbers of trained tokens, so it is measurably not the token mean.
        per_micro = [
            float(model(input_ids=input_ids[i : i + 2], labels=labels[i : i + 2]).loss)
            for i in range(0, 8, 2)
        ]
    assert abs(sum(per_micro) / 4 - reference) > 1e-3  # the check below can fail
    for name in ("whole", "accum"):
        assert _train_losses(tmp_path / name)[0] == pytest.approx(reference, rel=1e-5)
    assert _train_losses(tmp_path / "accum") == pytest.approx(
        _train_losses(tmp_path / "whole"), rel=1e-5
    )
    a, b = _final_weights(tmp_path / "whole"), _final_weights(tmp_path / "accum")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_sft_throughput_counts_the_batches_real_width_not_seq_len(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    """Tokens/s and MFU of SFT follow the tokens the model ran on: each batch is as wide as
    its longest example, far less than seq_len for GSM8K; counting steps x batch x seq_len
    would overstate both (about 8x at 2,048)."""
    cfg = _sft_config(tokenizer_file, shared_data, tmp_path / "run", pretrained)
    train(cfg)
    split = _sft_split(cfg)
    steps = len(split) // 8
    batches = itertools.islice(split.batches(8, epoch=0, seed=cfg.train.seed), steps)
    widths = [input_ids.shape[1] for input_ids, _ in batches]
    logged = [m for m in read_metrics(tmp_path / "run" / "metrics.jsonl") if m["split"] == "train"]
    # The model reads width - 1 positions of each row (inputs and targets are shifted by one).
    assert logged[-1]["tokens"] == 8 * sum(width - 1 for width in widths)
    assert logged[-1]["tokens"] < steps * 8 * cfg.model.seq_len  # GSM8K examples are short


@pytest.mark.slow
def test_two_process_gloo_sft_with_prompt_masking_equals_one_process(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    config = tmp_path / "sft.yaml"
    _sft_config(tokenizer_file, shared_data, tmp_path / "unused", pretrained).save(config)
    ddp = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "proximity.training.cli", "sft",
         "--config", str(config), "--out", str(tmp_path / "ddp"),
         "--set", "train.micro_batch_size=1"],  # 2 ranks x 4 accumulation steps x 1 row
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    train(_sft_config(tokenizer_file, shared_data, tmp_path / "one", pretrained))

    losses = _train_losses(tmp_path / "ddp")
    assert len(losses) == 5
    assert losses == pytest.approx(_train_losses(tmp_path / "one"), rel=1e-5)
    a, b = _final_weights(tmp_path / "ddp"), _final_weights(tmp_path / "one")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # Each rank's generators were gathered into the checkpoint, in rank order.
    assert len(load_checkpoint(tmp_path / "ddp").state["rng_per_rank"]) == 2
