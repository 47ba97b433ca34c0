"""A training process killed with SIGKILL at an arbitrary moment resumes to the same result.

test_loop.py stops a run cleanly between steps; this kills a real process while it is
stepping and writing a checkpoint after every step, so a kill can land mid-write. The resumed
run must still end bitwise equal to an uninterrupted one: that needs atomic checkpoints (a
half-written one is never picked up) and a data position that is a pure function of the step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainer_utils import state_dicts_equal, tiny_config, train_tiny_tokenizer
from transformers import GPTNeoXForCausalLM

from proximity.training.checkpoint import latest_checkpoint
from proximity.training.loop import train
from proximity.training.metrics_log import read_metrics

STEPS = 30


def _launch(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proximity.training.cli",
            "pretrain",
            "--config",
            str(config),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )


def _wait_for_checkpoint_step(root: Path, step: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        latest = latest_checkpoint(root)
        if latest is not None and int(latest.name.split("-")[1]) >= step:
            return
        if process.poll() is not None:
            pytest.fail(f"training exited early: {process.stderr.read()}")
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared within 120 s")


def test_sigkilled_run_resumes_to_the_uninterrupted_result(shared_data, tmp_path):
    tokenizer = train_tiny_tokenizer(shared_data, tmp_path / "tokenizer")
    settings = {"train": {"steps": STEPS}, "checkpoint": {"every": 1, "keep_last": 2}}
    whole = train(tiny_config(tokenizer, shared_data, tmp_path / "whole", **settings))

    out = tmp_path / "killed"
    config = tmp_path / "killed.yaml"
    tiny_config(tokenizer, shared_data, out, **settings).save(config)
    process = _launch(config)
    _wait_for_checkpoint_step(out / "checkpoints", STEPS // 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = int(latest_checkpoint(out / "checkpoints").name.split("-")[1])
    assert killed_at < STEPS, "the run finished before it could be killed"

    resumed = _launch(config, "--resume")
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr

    final = latest_checkpoint(out / "checkpoints")
    assert final.name == f"step-{STEPS:06d}"
    assert state_dicts_equal(
        GPTNeoXForCausalLM.from_pretrained(whole.last_checkpoint / "model"),
        GPTNeoXForCausalLM.from_pretrained(final / "model"),
    )
    losses = [m["loss"] for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"]
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"]
    assert steps == list(range(1, STEPS + 1))  # each step logged once across the kill
    assert losses[-1] == whole.train_loss
