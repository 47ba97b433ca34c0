"""The start-evaluation cache: a hit is bitwise the evaluation it replaces and runs no model;
anything that could change the number (weights, batches, threads) misses."""

from __future__ import annotations

import torch
from transformers import GPTNeoXForCausalLM

from proximity.training import start_evals
from proximity.training.evaluate import EvalSet, evaluate
from proximity.training.losses import IGNORE_INDEX
from proximity.training.presets import model_config
from proximity.training.start_evals import StartEvalCache, evaluate_start

CPU = torch.device("cpu")


def _model(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(model_config("micro-2l-64", vocab_size=97)).eval()


def _sets(shift: int = 0) -> list[EvalSet]:
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randint(0, 97, (6, 10), generator=generator)
    targets = (torch.randint(0, 97, (6, 10), generator=generator) + shift) % 97
    targets[0, :4] = IGNORE_INDEX
    return [
        EvalSet("target", lambda: iter([(inputs[:3], targets[:3]), (inputs[3:], targets[3:])])),
        EvalSet("c4", lambda: iter([(inputs[2:], targets[:4])])),
    ]


class _CountingForward:
    """Counts the model's forward calls (the base model's, which every loss path runs)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        model.gpt_neox.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


def _start(model, sets, cache, write=True):
    return evaluate_start(model, sets, cache, device=CPU, autocast=None, bf16=False, write=write)


def test_a_hit_is_bitwise_the_evaluation_and_runs_no_model(tmp_path):
    model, sets = _model(), _sets()
    counter = _CountingForward(model)
    cache = StartEvalCache(tmp_path / "cache")
    computed = evaluate(model, sets, device=CPU)
    first = _start(model, sets, cache)
    calls_after_first = counter.calls
    second = _start(model, sets, StartEvalCache(tmp_path / "cache"))  # another run, same folder
    assert first == computed and second == computed  # exact floats, per set
    assert calls_after_first > counter.calls - calls_after_first == 0
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2  # one entry per eval set


def test_other_weights_batches_or_threads_miss(tmp_path):
    cache = StartEvalCache(tmp_path / "cache")
    model, sets = _model(), _sets()
    _start(model, sets, cache)

    changed = _model()
    with torch.no_grad():
        changed.get_output_embeddings().weight[0, 0] += 1e-3  # one weight
    counter = _CountingForward(changed)
    assert _start(changed, sets, cache) == evaluate(changed, sets, device=CPU)
    assert counter.calls > 0

    other_sets = _sets(shift=1)  # other targets in the batches
    counter = _CountingForward(model)
    assert _start(model, other_sets, cache) == evaluate(model, other_sets, device=CPU)
    assert counter.calls > 0

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # rounding may differ with the thread count
        counter.calls = 0
        _start(model, sets, cache)
        assert counter.calls > 0
    finally:
        torch.set_num_threads(threads)


def test_no_write_leaves_the_folder_empty_and_an_unwritable_folder_never_fails(tmp_path):
    model, sets = _model(), _sets()
    _start(model, sets, StartEvalCache(tmp_path / "ro"), write=False)
    assert not (tmp_path / "ro").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert _start(model, sets, StartEvalCache(blocker / "cache")) == evaluate(
        model, sets, device=CPU
    )


def test_another_cpu_misses_and_unreadable_code_means_no_caching(tmp_path, monkeypatch):
    model, sets = _model(), _sets()
    cache = StartEvalCache(tmp_path / "cache")
    _start(model, sets, cache)
    counter = _CountingForward(model)
    # a grid folder moved to (or shared with) a machine whose vector width rounds differently
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    _start(model, sets, cache)
    assert counter.calls > 0 and len(list((tmp_path / "cache").glob("*.json"))) == 4
    monkeypatch.setattr(start_evals.inspect, "getsourcefile", lambda _: "/nonexistent.py")
    fresh = StartEvalCache(tmp_path / "fresh")
    assert _start(model, sets, fresh) == evaluate(model, sets, device=CPU)
    assert not (tmp_path / "fresh").exists()
