"""The grid's totals and time-left estimate (training/grid/progress.py), on hand-made node
folders whose answer is worked out by hand in each test."""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from pathlib import Path

from proximity.training.grid.nodes import LOCK, node_dir, node_lock
from proximity.training.grid.progress import snapshot, summary_lines

NODES = [
    {"id": "tokenizer-t", "kind": "tokenizer", "label": "tok", "tokens": None},
    {"id": "pretrain-p", "kind": "pretrain", "label": "pre", "tokens": 1000},
    {"id": "midtrain-m1", "kind": "midtrain", "label": "m1", "tokens": 500},
    {"id": "midtrain-m2", "kind": "midtrain", "label": "m2", "tokens": 1000},
    {"id": "midtrain-m3", "kind": "midtrain", "label": "m3", "tokens": 250},
    {"id": "sft-s1", "kind": "sft", "label": "s1", "tokens": None},
    {"id": "sft-s2", "kind": "sft", "label": "s2", "tokens": None},
    {"id": "sft-s3", "kind": "sft", "label": "s3", "tokens": None},
]


def _done(out: Path, nid: str, wall: float, tokens: int | None) -> None:
    folder = node_dir(out, nid)
    folder.mkdir(parents=True, exist_ok=True)
    result = {"wall_time_s": wall, **({"tokens": tokens} if tokens is not None else {})}
    (folder / "result.json").write_text(json.dumps(result))


def _grid(out: Path) -> None:
    for node in NODES:
        node_dir(out, node["id"]).mkdir(parents=True, exist_ok=True)
    _done(out, "tokenizer-t", 1.0, None)
    _done(out, "pretrain-p", 10.0, 1000)
    _done(out, "midtrain-m1", 4.0, 500)  # midtraining: 4 s / 500 tokens = 8 ms a token
    _done(out, "sft-s1", 3.0, 100)  # SFT: 3 s a node (its tokens are unknown in the plan)
    (node_dir(out, "sft-s3") / "error.txt").write_text("boom\n")  # failed: never counted


def test_time_left_sums_each_unfinished_node_over_the_nodes_running_now(tmp_path):
    _grid(tmp_path)
    now = time.time()
    with ExitStack() as stack:
        for nid in ("midtrain-m3", "sft-s2"):  # running for 1 s each
            assert stack.enter_context(node_lock(node_dir(tmp_path, nid)))
            os.utime(node_dir(tmp_path, nid) / LOCK, (now - 1.0, now - 1.0))
        snap = snapshot(tmp_path, NODES, now=now)
    # m2: 1000 x 8 ms = 8 s; m3: 250 x 8 ms - 1 s run = 1 s; s2: 3 s - 1 s = 2 s; 2 running
    assert abs(snap.left_s - (8.0 + 1.0 + 2.0) / 2) < 1e-6
    assert snap.done == {"tokenizer": 1, "pretrain": 1, "midtrain": 1, "sft": 1}
    assert snap.total == {"tokenizer": 1, "pretrain": 1, "midtrain": 3, "sft": 3}
    assert snap.tokens_done == 1000 + 500 + 100
    assert snap.tokens_total == 1600 + 1000 + 250 and snap.tokens_unknown == 2
    assert set(snap.running) == {"midtrain-m3", "sft-s2"} and snap.failed == ["sft-s3"]
    lines = summary_lines(snap)
    assert lines[0].startswith("nodes done: 4/8 (tokenizer 1/1, pretrain 1/1, midtrain 1/3")
    assert "1 failed" in lines[0] and "tokens trained: 1.6k/2.85k" in lines[1]
    assert "time left: ~5.5 s" in lines[2]


def test_a_kind_with_nothing_measured_is_named_not_guessed(tmp_path):
    node_dir(tmp_path, "pretrain-p").mkdir(parents=True)
    _done(tmp_path, "tokenizer-t", 1.0, None)
    nodes = [n for n in NODES if n["kind"] in ("tokenizer", "pretrain", "sft")]
    snap = snapshot(tmp_path, nodes)
    assert snap.left_s is None
    assert "time left: ? (for 1 pretrain, 3 sft nodes" in summary_lines(snap)[2]


def test_the_first_pretraining_node_is_timed_by_its_logged_throughput(tmp_path):
    _done(tmp_path, "tokenizer-t", 1.0, None)
    folder = node_dir(tmp_path, "pretrain-p")
    folder.mkdir(parents=True)
    lines = [{"split": "train", "tokens_per_s": 50.0}, {"split": "val", "loss": 3.0},
             {"split": "train", "tokens_per_s": 100.0}, {"split": "val", "loss": 2.9}]  # fmt: skip
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    now = time.time()
    with node_lock(folder):
        os.utime(folder / LOCK, (now - 2.0, now - 2.0))
        snap = snapshot(tmp_path, NODES[:2], now=now)
    assert abs(snap.left_s - (1000 / 100.0 - 2.0)) < 1e-6  # the latest rate, less 2 s run


def test_status_prints_the_same_totals(tmp_path):
    from typer.testing import CliRunner

    from proximity.training.grid.cli import grid_app

    _grid(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps({"name": "g", "nodes": NODES}))
    result = CliRunner().invoke(grid_app, ["status", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    for line in summary_lines(snapshot(tmp_path, NODES)):
        assert " ".join(line.split()) in text
    # nothing runs: m2 8 s + m3 2 s + s2 3 s, one at a time
    assert "time left: ~13.0 s" in text and "nodes done: 4/8" in text
