from __future__ import annotations

import random

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import GPTNeoXForCausalLM

from proximity.training.checkpoint import (
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from proximity.training.presets import model_config


def _model() -> GPTNeoXForCausalLM:
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(model_config("micro-2l-64", vocab_size=300))


def _save(root, step, model, **kwargs):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return save_checkpoint(
        root, step, model=model, optimizer=optimizer, state={"phase": "pretrain"},
        config_yaml="phase: pretrain\n", **kwargs,
    )  # fmt: skip


def test_checkpoint_loads_with_from_pretrained(tmp_path, pythia_tokenizer_path):
    model = _model()
    path = save_checkpoint(
        tmp_path, 7, model=model, optimizer=None, state={"phase": "pretrain"},
        config_yaml="phase: pretrain\n", tokenizer=Tokenizer.from_file(str(pythia_tokenizer_path)),
    )  # fmt: skip
    loaded = GPTNeoXForCausalLM.from_pretrained(path / "model")
    ids = torch.randint(0, 300, (1, 12))
    assert torch.equal(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    assert (path / "model" / "tokenizer.json").exists()
    assert load_checkpoint(tmp_path).step == 7


def test_latest_ignores_unfinished_writes_and_prunes_periodic_ones(tmp_path):
    model = _model()
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, model, keep_last=2, protected_steps={20})
    # A save killed half-way leaves only a temporary folder, never a real name.
    (tmp_path / ".tmp-step-000050-123" / "model").mkdir(parents=True)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 30, 40]
    assert latest_checkpoint(tmp_path).name == "step-000040"
    # LATEST missing (killed between rename and pointer write): the highest complete step wins.
    (tmp_path / "LATEST").unlink()
    assert latest_checkpoint(tmp_path).name == "step-000040"


def test_resaving_a_step_replaces_it_whole(tmp_path):
    model = _model()
    _save(tmp_path, 5, model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    path = _save(tmp_path, 5, model)
    loaded = GPTNeoXForCausalLM.from_pretrained(path / "model")
    assert torch.equal(next(loaded.parameters()), next(model.parameters()))
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith("step-")] == ["LATEST"]


def test_rng_states_round_trip():
    state = capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    random.random(), np.random.rand(), torch.rand(1)
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_optimizer_state_is_restored(tmp_path):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.randint(0, 300, (2, 8))).logits.sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, 1, model=model, optimizer=optimizer, state={}, config_yaml="")
    restored = load_checkpoint(tmp_path).optimizer_state()
    original = optimizer.state_dict()
    for key, value in original["state"][0].items():
        assert torch.equal(restored["state"][0][key], value)
