"""What DDP on a GPU cluster relies on, run on CPU with 2 gloo processes under torchrun:
ranks follow rank 0's resume decision inside the real loop, and torch.compile of the DDP model
(with gradient accumulation under `no_sync`) trains the same model as one eager process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from trainer_utils import state_dicts_equal, tiny_config
from transformers import GPTNeoXForCausalLM

from proximity.training.checkpoint import load_checkpoint
from proximity.training.loop import train
from proximity.training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(config: Path, *flags: str) -> subprocess.CompletedProcess:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    return subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(WORKER), str(config), *flags],
        capture_output=True, text=True, cwd=REPO, timeout=400,
    )  # fmt: skip


def _train_losses(out: Path) -> list[float]:
    return [m["loss"] for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"]


def _weights(out: Path) -> GPTNeoXForCausalLM:
    return GPTNeoXForCausalLM.from_pretrained(load_checkpoint(out).model_dir)


@pytest.mark.slow
def test_a_rank_that_sees_no_checkpoint_still_resumes_with_rank_0(
    tokenizer_file, shared_data, tmp_path
):
    """Without the broadcast, rank 1 would start fresh at step 0 while rank 0 resumes at step
    6: their collectives would not match and the run would fail or hang (timeout)."""
    cfg = tiny_config(tokenizer_file, shared_data, tmp_path / "ddp", checkpoint={"every": 6})
    first = train(tiny_config(
        tokenizer_file, shared_data, tmp_path / "ddp", checkpoint={"every": 6},
        train={"steps": 12, "max_steps_this_run": 6},
    ))  # fmt: skip
    assert first.step == 6 and not first.finished
    config = tmp_path / "ddp.yaml"
    cfg.save(config)
    run = _torchrun(config, "--resume", "--lagging-followers")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rank 1 finished=True step=12" in run.stdout
    steps = [m["step"] for m in read_metrics(tmp_path / "ddp" / "metrics.jsonl")
             if m["split"] == "train"]  # fmt: skip
    assert steps == list(range(1, 13))  # 1-6 before, 7-12 resumed: none redone from 0

    whole = train(tiny_config(tokenizer_file, shared_data, tmp_path / "one"))
    assert whole.finished
    a, b = _weights(tmp_path / "ddp").state_dict(), _weights(tmp_path / "one").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


@pytest.mark.slow
def test_compiled_ddp_with_accumulation_matches_one_eager_process(
    tokenizer_file, shared_data, tmp_path
):
    """The GPU recipe's order (DDP, then torch.compile; no_sync on all but the last
    micro-batch), with inductor on CPU: 2 ranks x 2 accumulation steps x 2 rows."""
    compiled = tiny_config(
        tokenizer_file, shared_data, tmp_path / "compiled",
        train={"steps": 3, "micro_batch_size": 2},
        system={"compile": True, "deterministic": False},
    )  # fmt: skip
    config = tmp_path / "compiled.yaml"
    compiled.save(config)
    run = _torchrun(config)
    assert run.returncode == 0, run.stderr[-3000:]
    eager = train(tiny_config(tokenizer_file, shared_data, tmp_path / "eager", train={"steps": 3}))
    assert eager.finished
    assert len(_train_losses(tmp_path / "compiled")) == 3
    assert _train_losses(tmp_path / "compiled") == pytest.approx(
        _train_losses(tmp_path / "eager"), rel=1e-4
    )
    a = _weights(tmp_path / "compiled")
    b = _weights(tmp_path / "eager")
    assert not state_dicts_equal(a, GPTNeoXForCausalLM(a.config))  # trained, not fresh
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-4) for k in sa)


@pytest.mark.slow
def test_a_grid_node_resumes_on_rank_0s_decision_when_a_rank_sees_no_checkpoint(
    tokenizer_file, shared_data, tmp_path
):
    """Issue 16 item 7: the grid worker decided `resume` on each rank, so rank 1, seeing no
    checkpoint, refused the folder rank 0 resumed in and torchrun stopped the node."""
    import json

    folder = tmp_path / "node"
    cfg = tiny_config(tokenizer_file, shared_data, folder, checkpoint={"every": 6})
    first = train(tiny_config(
        tokenizer_file, shared_data, folder, checkpoint={"every": 6},
        train={"steps": 12, "max_steps_this_run": 6},
    ))  # fmt: skip
    assert first.step == 6 and not first.finished
    node = {"id": "pretrain-test", "kind": "pretrain", "label": "test", "run_config": cfg.to_dict()}
    (folder / "node.json").write_text(json.dumps(node))
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    run = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2",
         str(WORKER.with_name("grid_ddp_worker.py")), str(folder), "--threads", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=400,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    result = json.loads((folder / "result.json").read_text())
    assert result["end_step"] == 12
    steps = [m["step"] for m in read_metrics(folder / "metrics.jsonl") if m["split"] == "train"]
    assert steps == list(range(1, 13))  # resumed at 6, nothing redone from 0
