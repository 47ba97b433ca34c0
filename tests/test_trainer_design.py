"""GPU-scale correctness checked on CPU: MFU per GPU, peak FLOP/s by part, deterministic
settings, AdamW state across fused/non-fused, the chunked evaluation loss, batch prefetching,
throughput without evaluation time, host syncs only on logged steps, torch.compile, and rank
0's resume decision reaching every rank."""

from __future__ import annotations

import copy
import math
import os
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from trainer_utils import tiny_config
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

import proximity.training.loop
import proximity.training.throughput
from proximity.errors import ProximityError
from proximity.training.checkpoint import latest_checkpoint
from proximity.training.data.batches import BatchPrefetcher
from proximity.training.loop import load_optimizer_state, set_deterministic, train
from proximity.training.losses import IGNORE_INDEX, chunked_loss_sum, lm_loss
from proximity.training.metrics_log import read_metrics
from proximity.training.throughput import mfu, peak_flops_for


def _tiny_model(seed: int = 0) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    return GPTNeoXForCausalLM(config)


def test_h100_pcie_and_sxm_peaks_are_told_apart():
    # The names torch.cuda.get_device_name reports (nvidia-smi's product names).
    assert peak_flops_for("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_for("NVIDIA H100 80GB HBM3") == 989e12  # SXM5
    assert peak_flops_for("NVIDIA H100 NVL") == 835e12
    assert peak_flops_for("NVIDIA H200") == 989e12
    assert peak_flops_for("NVIDIA H200 NVL") == 835e12
    assert peak_flops_for("h100") == 989e12  # a grid spec's estimate.device
    assert peak_flops_for("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_for("Some Future GPU") is None


def test_mfu_is_per_gpu_not_multiplied_by_the_world_size():
    # 8 GPUs each at half of a 1,000 FLOP/s peak: 8 x 500 FLOP/s over all, MFU 0.5.
    assert mfu(flops_per_token=10.0, tokens_per_s=400.0, world_size=8, peak=1000.0) == 0.5
    assert mfu(10.0, 50.0, 1, 1000.0) == 0.5


def test_deterministic_sets_what_cuda_needs(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)  # fmt: skip
    try:
        set_deterministic()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1:]


def test_a_non_fused_checkpoint_continues_exactly_in_a_fused_adamw():
    """A CPU (non-fused) AdamW state loaded into a fused optimizer: the next step equals the
    non-fused optimizer carrying on (reference), and `step` sits where fused AdamW wants it."""
    model = _tiny_model()
    x = torch.randint(0, 97, (2, 16))

    def step(m, opt):
        opt.zero_grad()
        lm_loss(m, x[:, :-1], x[:, 1:]).backward()
        opt.step()

    plain = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        step(model, plain)
    saved = copy.deepcopy(plain.state_dict())
    twin = copy.deepcopy(model)
    fused = torch.optim.AdamW(twin.parameters(), lr=1e-2, fused=True)
    load_optimizer_state(fused, saved, torch.device("cpu"))
    assert fused.param_groups[0]["fused"] is True
    step(model, plain)
    step(twin, fused)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_chunked_evaluation_loss_equals_the_full_logits_loss():
    model = _tiny_model().eval()
    inputs = torch.randint(0, 97, (3, 20))
    targets = torch.randint(0, 97, (3, 20))
    targets[0, :7] = IGNORE_INDEX  # a masked prompt
    with torch.no_grad():
        logits = model(input_ids=inputs).logits  # the reference: every logit at once
        reference = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        for chunk in (1, 7, 60, 4096):
            got = chunked_loss_sum(model, inputs, targets, chunk=chunk)
            assert got.dtype == torch.float64
            assert float(got) == pytest.approx(float(reference), rel=1e-6)


def test_prefetched_batches_are_the_batches_of_their_steps():
    calls: list[int] = []

    def make(step: int):
        calls.append(step)
        return torch.full((2, 3), step), torch.full((2, 3), -step)

    fetcher = BatchPrefetcher(make, first_step=5, stop_step=9, pin=False)
    try:
        for step in (5, 6, 7, 3, 4, 8):  # 3 is a jump back: built on demand, in order
            inputs, targets = fetcher.get(step)
            assert int(inputs[0, 0]) == step and int(targets[0, 0]) == -step
    finally:
        fetcher.close()
    assert calls[:4] == [5, 6, 7, 8]  # one step ahead, never past stop_step
    assert max(calls) == 8


def test_throughput_leaves_out_evaluation_time(tokenizer_file, shared_data, tmp_path, monkeypatch):
    """A fake clock: each reading advances 1 ms, each evaluation 1,000 s. Counted in, the
    evaluation would put throughput below 1 token/s; left out, it is thousands."""
    clock = {"now": 0.0}

    def perf_counter() -> float:
        clock["now"] += 1e-3
        return clock["now"]

    def slow_evaluate(*args, **kwargs):
        clock["now"] += 1000.0
        return {"c4": 1.0}

    clock_module = types.SimpleNamespace(perf_counter=perf_counter)
    monkeypatch.setattr(proximity.training.throughput, "time", clock_module)
    monkeypatch.setattr(proximity.training.loop, "evaluate", slow_evaluate)
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, train={"steps": 8, "log_every": 4},
        eval={"every": 2}, checkpoint={"every": 2},
    )  # fmt: skip
    train(cfg)
    lines = [m for m in read_metrics(tmp_path / "metrics.jsonl") if m["split"] == "train"]
    assert [m["step"] for m in lines] == [4, 8]
    assert all(m["tokens_per_s"] > 1000 for m in lines)


def test_a_nan_between_logged_steps_never_reaches_a_checkpoint(
    tokenizer_file, shared_data, tmp_path, monkeypatch
):
    calls = {"n": 0}

    def poisoned_loss(model, inputs, targets):
        calls["n"] += 1
        loss = lm_loss(model, inputs, targets)
        return loss * math.nan if calls["n"] >= 3 else loss  # step 3 goes bad, unlogged

    monkeypatch.setattr(proximity.training.loop, "lm_loss", poisoned_loss)
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path, train={"log_every": 5}, checkpoint={"every": 2}
    )
    with pytest.raises(ProximityError, match=r"non-finite at step 4.*step-000002"):
        train(cfg)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-000002"


@pytest.mark.slow
def test_compiled_training_matches_eager_on_cpu(tokenizer_file, shared_data, tmp_path):
    """torch.compile (inductor, CPU) trains the same model as eager, up to kernel rounding."""
    eager = train(tiny_config(tokenizer_file, shared_data, tmp_path / "eager", train={"steps": 3}))
    compiled = train(
        tiny_config(
            tokenizer_file, shared_data, tmp_path / "compiled", train={"steps": 3},
            system={"compile": True, "deterministic": False},
        )
    )  # fmt: skip

    def losses(name):
        lines = read_metrics(tmp_path / name / "metrics.jsonl")
        return [m["loss"] for m in lines if m["split"] == "train"]

    assert compiled.finished and len(losses("compiled")) == 3
    assert losses("compiled") == pytest.approx(losses("eager"), rel=1e-4)
    assert compiled.eval_losses["c4"] == pytest.approx(eager.eval_losses["c4"], rel=1e-4)


def _broadcast_worker(rank: int, init_file: str, results: str) -> None:
    import torch.distributed as dist

    from proximity.training import distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    info = distributed.DistInfo(rank, rank, 2, torch.device("cpu"))
    decided = distributed.broadcast_object("resume step-000005" if rank == 0 else None, info)
    gathered = distributed.gather_objects(f"rng of rank {rank}", info)
    Path(results, f"{rank}.txt").write_text(f"{decided}|{','.join(gathered)}")
    dist.destroy_process_group()


def test_every_rank_follows_rank_0s_resume_decision(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_broadcast_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        decided, gathered = (tmp_path / f"{rank}.txt").read_text().split("|")
        assert decided == "resume step-000005"  # rank 1 saw None itself
        assert gathered == "rng of rank 0,rng of rank 1"
