"""`proximity train ...`: YAML + --set overrides, one-line errors, stop and --resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from trainer_utils import tiny_config, train_tiny_tokenizer
from typer.testing import CliRunner

from proximity.errors import ProximityError
from proximity.training.checkpoint import latest_checkpoint
from proximity.training.cli import train_app
from proximity.training.metrics_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def config_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    tokenizer = train_tiny_tokenizer(shared_data, folder / "tokenizer")
    cfg = tiny_config(tokenizer, shared_data, folder / "unused")
    path = folder / "pretrain.yaml"
    cfg.save(path)
    return path


def test_pretrain_stop_and_resume_through_the_cli(config_file, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--config", str(config_file), "--out", str(out)]
    stopped = runner.invoke(train_app, [*args, "--set", "train.max_steps_this_run=4"])
    assert stopped.exit_code == 3, stopped.output  # stopped early on purpose
    assert latest_checkpoint(out / "checkpoints").name == "step-000004"
    resumed = runner.invoke(train_app, [*args, "--resume", "--set", "optim.grad_clip=1.0"])
    assert resumed.exit_code == 0, resumed.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["out_dir"] == str(out) and saved["phase"] == "pretrain"
    assert latest_checkpoint(out / "checkpoints").name == "step-000012"
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if m["split"] == "train"]
    assert steps == list(range(1, 13))


def test_bad_override_raises_a_proximity_error_naming_the_field(config_file, tmp_path):
    result = runner.invoke(train_app, ["sft", "--config", str(config_file), "--set", "optim.lrr=1"])
    assert isinstance(result.exception, ProximityError)
    assert "optim.lrr" in str(result.exception)


def test_command_line_prints_one_line_errors(config_file):
    cmd = [sys.executable, "-m", "proximity.training.cli", "pretrain", "--config", str(config_file),
           "--set", "optim.lr=fast"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: optim.lr: expected a number, got 'fast'"


def test_keys_lists_every_field_with_its_default():
    result = runner.invoke(train_app, ["keys"])
    assert result.exit_code == 0
    assert "optim.lr = 0.0006" in result.output
    assert "checkpoint.steps = []" in result.output
    # Each key is followed by its help: the comment above its field in training/config.py.
    from proximity.training.config import config_fields

    lines = result.output.splitlines()
    keys = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert [lines[i].split(" = ")[0] for i in keys] == config_fields()
    assert all(i + 1 < len(lines) and lines[i + 1].startswith("    ") for i in keys)
    assert "    Peak learning rate." in lines[lines.index("optim.lr = 0.0006") + 1]


def test_ddp_with_two_cpu_processes_matches_one_process(config_file, tmp_path):
    """torchrun + gloo on CPU: the global batch is split over ranks and accumulation steps,
    so the losses equal a single process's (up to float summation order)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed beside this Python")
    common = ["pretrain", "--config", str(config_file), "--set", "train.steps=4"]
    ddp = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "proximity.training.cli",
         *common,
         "--out", str(tmp_path / "ddp"), "--set", "train.micro_batch_size=2"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert runner.invoke(train_app, [*common, "--out", str(tmp_path / "one")]).exit_code == 0

    def losses(name):
        lines = read_metrics(tmp_path / name / "metrics.jsonl")
        return [m["loss"] for m in lines if m["split"] == "train"]

    assert losses("ddp") == pytest.approx(losses("one"), rel=1e-5)
    assert len(losses("ddp")) == 4
