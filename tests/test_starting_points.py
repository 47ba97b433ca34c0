"""Starting points that are checked: midtraining keeps the run's geometry, seed and tokenizer;
a start at the final step is refused; files are written through the one fsync'ing helper; the
metrics file is only appended to and cut, never rewritten."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from trainer_utils import tiny_config

import proximity.atomic
from proximity.errors import ProximityError
from proximity.training.loop import train
from proximity.training.metrics_log import MetricsLog


def _midtrain(tokenizer_file, shared_data, out, init_from, **sections):
    return tiny_config(
        tokenizer_file, shared_data, out, phase="midtrain",
        model={"init_from": str(init_from), **sections.pop("model", {})},
        train={"steps": None, **sections.pop("train", {})}, **sections,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train": {"batch_size": 4}}, r"^train\.batch_size=4 differs from .*'s 8; .*set train\."),
        ({"model": {"seq_len": 32}}, r"^model\.seq_len=32 differs from .*'s 64;"),
        ({"train": {"seed": 1}}, r"^train\.seed=1 differs from .*'s 0;"),
    ],
)
def test_midtraining_refuses_a_setting_that_differs_from_its_checkpoint(
    tokenizer_file, shared_data, pretrained, tmp_path, override, message
):
    start = pretrained / "checkpoints" / "step-000006"
    cfg = _midtrain(tokenizer_file, shared_data, tmp_path, start, **override)
    with pytest.raises(ProximityError, match=message):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # refused before anything was written


def test_midtraining_refuses_another_tokenizer(
    tokenizer_file, shared_data, pretrained, pythia_tokenizer_path, tmp_path
):
    start = pretrained / "checkpoints" / "step-000006"
    cfg = _midtrain(
        tokenizer_file, shared_data, tmp_path, start,
        data={"tokenizer": str(pythia_tokenizer_path)},
    )  # fmt: skip
    with pytest.raises(ProximityError, match=r"is not the tokenizer .* trained with; set data\."):
        train(cfg)


def test_a_start_at_the_final_step_is_refused_in_one_line(
    tokenizer_file, shared_data, pretrained, tmp_path
):
    """`init_from=<run folder>` resolves to its final checkpoint: nothing would be trained."""
    cfg = _midtrain(tokenizer_file, shared_data, tmp_path, pretrained)
    with pytest.raises(ProximityError, match=r"at step 12, the run's final step is 12") as error:
        train(cfg)
    assert "\n" not in str(error.value)


def test_config_checkpoint_pointer_manifest_and_tokenizer_go_through_the_fsync_helper(
    tokenizer_file, shared_data, tmp_path, monkeypatch
):
    from proximity.tokenizer import load_tokenizer
    from proximity.training.data.tokenized import tokenize_dataset
    from proximity.training.tokenizer_training import save_tokenizer

    synced: list[str] = []
    real = proximity.atomic.fsync_path
    monkeypatch.setattr(
        proximity.atomic, "fsync_path", lambda path: (synced.append(Path(path).name), real(path))
    )
    cfg = tiny_config(tokenizer_file, shared_data, tmp_path / "run", train={"steps": 2})
    cfg.save(tmp_path / "config.yaml")
    tokenizer = load_tokenizer(str(tokenizer_file))
    save_tokenizer(tokenizer, tmp_path / "tok")
    tokenize_dataset(
        "c4", tokenizer, cache_dir=tmp_path / "cache", data_dir=shared_data, n_docs=20,
        progress=False,
    )  # fmt: skip
    train(cfg)
    for name in ("config.yaml", "tokenizer.json", "manifest.json", "LATEST"):
        assert any(s.startswith(f".{name}.") for s in synced), name  # its temporary file


def test_atomic_write_syncs_the_data_before_the_rename_makes_it_visible(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(
        os, "replace", lambda a, b: (events.append(f"replace {Path(b).name}"), real_replace(a, b))
    )
    proximity.atomic.write_text_atomic(tmp_path / "out.txt", "hello")
    assert (tmp_path / "out.txt").read_text() == "hello"
    # the file's data, then the rename, then the folder entry
    assert events == ["fsync", "replace out.txt", "fsync"]


def test_metrics_are_cut_in_place_after_the_resumed_step_never_rewritten(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [json.dumps({"phase": "pretrain", "step": s, "loss": 1.0 / s}) for s in range(1, 8)]
    kept = "".join(line + "\n" for line in lines[:5]).encode()
    path.write_bytes(kept + "".join(line + "\n" for line in lines[5:]).encode() + b'{"phase": "pre')
    inode = path.stat().st_ino
    log = MetricsLog(path)
    log.truncate_after("pretrain", 5)
    assert path.read_bytes() == kept  # the lines up to step 5, byte for byte
    assert path.stat().st_ino == inode  # the same file, not a rewritten copy
    log.write(phase="pretrain", step=6, loss=0.5)
    assert json.loads(path.read_text().splitlines()[-1])["step"] == 6


def test_a_line_cut_short_by_a_kill_is_dropped_with_what_follows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"phase": "sft", "step": 1}\n{"phase": "sft", "st\n')
    MetricsLog(path).truncate_after("sft", 10)
    assert path.read_bytes() == b'{"phase": "sft", "step": 1}\n'


def _val_lines(out: Path) -> list[tuple[int, str]]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["dataset"]) for r in lines if r["split"] == "val"]


def test_a_fresh_start_over_a_killed_attempt_logs_each_evaluation_once(
    tokenizer_file, shared_data, tmp_path
):
    """An attempt killed before its first checkpoint leaves step-0 lines; starting again
    (no checkpoint, so not a resume) must not log them a second time."""
    cfg = tiny_config(tokenizer_file, shared_data, tmp_path, eval={"every": 6})
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"phase": "pretrain", "step": 0, "split": "val", "dataset": "c4", "loss": 9.0})
        + "\n"
    )
    train(cfg)
    evals = _val_lines(tmp_path)
    assert evals == [(0, "c4"), (6, "c4"), (12, "c4")]
    assert len(set(evals)) == len(evals)


def test_resuming_a_finished_run_evaluates_its_end_once(tokenizer_file, shared_data, tmp_path):
    cfg = tiny_config(tokenizer_file, shared_data, tmp_path, eval={"every": 6})
    train(cfg)
    before = _val_lines(tmp_path)
    result = train(cfg, resume=True)
    assert result.finished
    assert _val_lines(tmp_path) == before == [(0, "c4"), (6, "c4"), (12, "c4")]
