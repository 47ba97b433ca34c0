"""The training loop on the real C4 sample: it learns, resumes exactly, continues schedules and
stops cleanly on a non-finite loss."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from trainer_utils import state_dicts_equal, tiny_config
from transformers import GPTNeoXForCausalLM

import proximity.training.loop
from proximity.errors import ProximityError
from proximity.training.checkpoint import latest_checkpoint, load_checkpoint
from proximity.training.loop import train
from proximity.training.losses import IGNORE_INDEX, lm_loss, sft_batch
from proximity.training.metrics_log import read_metrics
from proximity.training.starts import new_schedule


def _final_train_loss(out: Path) -> float:
    lines = [m for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"]
    return lines[-1]["loss"]


def test_tiny_model_loss_falls_on_c4(tokenizer_file, shared_data, tmp_path):
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, train={"steps": 40}, eval={"every": 20}
    )
    result = train(cfg)
    val = [m["loss"] for m in read_metrics(tmp_path / "metrics.jsonl") if m["split"] == "val"]
    assert len(val) == 3  # steps 0, 20, 40
    assert val[0] > math.log(512) - 0.5  # starts near uniform over the vocabulary
    assert val[0] > val[1] > val[2]
    assert val[-1] < val[0] - 0.5
    assert result.eval_losses["c4"] == val[-1]


def test_killed_and_resumed_run_ends_bitwise_equal(tokenizer_file, shared_data, tmp_path):
    whole = train(tiny_config(tokenizer_file, shared_data, tmp_path / "whole"))
    first = train(
        tiny_config(
            tokenizer_file, shared_data, tmp_path / "split", train={"max_steps_this_run": 5}
        )
    )
    assert not first.finished and first.step == 5
    assert latest_checkpoint(tmp_path / "split" / "checkpoints").name == "step-000005"
    second = train(tiny_config(tokenizer_file, shared_data, tmp_path / "split"), resume=True)
    assert second.finished and second.step == whole.step == 12
    assert second.train_loss == whole.train_loss  # bitwise, not approximately
    assert second.eval_losses == whole.eval_losses
    model_a = GPTNeoXForCausalLM.from_pretrained(whole.last_checkpoint / "model")
    model_b = GPTNeoXForCausalLM.from_pretrained(second.last_checkpoint / "model")
    assert state_dicts_equal(model_a, model_b)
    # The metrics of the resumed run read as one run: each step logged once.
    metrics = read_metrics(tmp_path / "split" / "metrics.jsonl")
    train_steps = [m["step"] for m in metrics if m["split"] == "train"]
    assert train_steps == list(range(1, 13))


def test_evaluating_within_a_run_changes_none_of_its_numbers(tokenizer_file, shared_data, tmp_path):
    """Why a grid leaves `eval.every` out of a node's identity (grid/plan.py NEUTRAL_KEYS): a
    run evaluated every 3 steps ends with the same weights and losses as one evaluated at its
    ends only, so curves can be retraced for nodes already run."""
    ends = train(tiny_config(tokenizer_file, shared_data, tmp_path / "ends"))
    dense = train(tiny_config(tokenizer_file, shared_data, tmp_path / "dense", eval={"every": 3}))
    val_steps = {m["step"] for m in read_metrics(tmp_path / "dense" / "metrics.jsonl")
                 if m["split"] == "val"}  # fmt: skip
    assert val_steps == {0, 3, 6, 9, 12}
    assert dense.train_loss == ends.train_loss and dense.eval_losses == ends.eval_losses
    model_a = GPTNeoXForCausalLM.from_pretrained(ends.last_checkpoint / "model")
    model_b = GPTNeoXForCausalLM.from_pretrained(dense.last_checkpoint / "model")
    assert state_dicts_equal(model_a, model_b)


def test_existing_run_needs_resume(tokenizer_file, shared_data, pretrained):
    with pytest.raises(ProximityError, match="--resume"):
        train(tiny_config(tokenizer_file, shared_data, pretrained))


def test_midtraining_continues_schedule_and_ends_at_the_same_step(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    start = pretrained / "checkpoints" / "step-000006"
    mixture = "c4:0.5+python_stdlib:0.5"
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, phase="midtrain",
        model={"init_from": str(start)}, data={"train": mixture},
        optim={"lr": 1.0},  # ignored: the schedule comes from the checkpoint
        train={"steps": None}, eval={"every": 0, "datasets": ["c4"]},
    )  # fmt: skip
    result = train(cfg)
    assert result.finished and result.step == 12
    pretrain_schedule = new_schedule(tiny_config(tokenizer_file, shared_data, pretrained), 12)
    lines = [m for m in read_metrics(tmp_path / "metrics.jsonl") if m["split"] == "train"]
    assert lines[0]["step"] == 7  # the first update after step 6
    assert lines[0]["lr"] == pretrain_schedule.lr(6)
    assert [m["lr"] for m in lines] == [pretrain_schedule.lr(s) for s in range(6, 12)]
    assert set(result.eval_losses) == {"c4", "python_stdlib"}


def test_control_midtraining_reproduces_the_uninterrupted_pretraining_run(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    """Midtraining on the pretraining data alone is the paper's control: it must equal just
    carrying on, which checks that weights, AdamW moments, schedule and data position all carry."""
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, phase="midtrain",
        model={"init_from": str(pretrained / "checkpoints" / "step-000006")},
    )  # fmt: skip
    result = train(cfg)
    assert result.train_loss == _final_train_loss(pretrained)


def test_midtraining_refuses_a_different_final_step(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, phase="midtrain",
        model={"init_from": str(pretrained / "checkpoints" / "step-000006")}, train={"steps": 20},
    )  # fmt: skip
    with pytest.raises(ProximityError, match=r"train\.steps"):
        train(cfg)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tokenizer_file, shared_data, tmp_path, monkeypatch
):
    calls = {"n": 0}

    def poisoned_loss(model, inputs, targets):
        calls["n"] += 1
        loss = lm_loss(model, inputs, targets)
        return loss * math.nan if calls["n"] >= 8 else loss  # the 8th step goes bad

    monkeypatch.setattr(proximity.training.loop, "lm_loss", poisoned_loss)
    cfg = tiny_config(tokenizer_file, shared_data, tmp_path, checkpoint={"every": 5})
    with pytest.raises(ProximityError, match=r"loss is nan at step 8.*step-000005"):
        train(cfg)
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(root).name == "step-000005"
    assert [p.name for p in root.iterdir() if p.name.startswith("step-")] == ["step-000005"]
    checkpoint = load_checkpoint(root)
    model = GPTNeoXForCausalLM.from_pretrained(checkpoint.model_dir)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_sft_on_gsm8k_masks_the_prompt_and_evaluates_forgetting(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    from proximity.tokenizer import load_tokenizer
    from proximity.training.data.sft_data import build_sft_data

    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, phase="sft",
        model={"init_from": str(pretrained), "seq_len": 256},
        data={"train": "gsm8k", "n_docs": 80},
        train={"steps": None, "epochs": 2, "batch_size": 8},
        eval={"every": 0, "datasets": ["c4"]},
    )  # fmt: skip
    result = train(cfg)
    assert result.finished
    tokenizer = load_tokenizer(str(tokenizer_file))
    train_split, val = build_sft_data(
        "gsm8k", tokenizer, seq_len=256, mask_prompt=True, data_dir=shared_data, n_docs=80
    )
    assert result.total_steps == 2 * (len(train_split) // 8)  # epochs x full batches
    assert set(result.eval_losses) == {"gsm8k", "c4"}

    # The loss the loop optimises ignores masked prompt tokens exactly.
    inputs, targets = sft_batch(torch.as_tensor(val.input_ids), torch.as_tensor(val.labels))
    model = GPTNeoXForCausalLM.from_pretrained(result.last_checkpoint / "model").eval()
    with torch.no_grad():
        logits = model(input_ids=inputs).logits
        per_token = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets.clamp(min=0), reduction="none"
        )
        keep = targets != IGNORE_INDEX
        pad_id = tokenizer.token_to_id("<|padding|>")
        n_masked_prompt = int((~keep).sum()) - int((inputs == pad_id).sum())
        assert n_masked_prompt > 0  # the prompt really is masked, not only the padding
        assert torch.allclose(lm_loss(model, inputs, targets), per_token[keep].mean(), atol=1e-5)
        # Training on the prompt too would give a different loss: the mask matters.
        ids = torch.as_tensor(val.input_ids)
        unmasked = torch.where(ids == pad_id, IGNORE_INDEX, ids)[:, 1:]
        assert not torch.allclose(lm_loss(model, inputs, unmasked), per_token[keep].mean())
