"""`log.tensorboard` and `log.wandb` (training/tracking.py): a real tiny run's trackers are read
back from their files and must hold exactly what metrics.jsonl (the analysis's contract) holds.

TensorBoard is read with tensorboard's own EventAccumulator; the offline W&B run file is read
record by record (its LevelDB-log framing, then wandb's own protobuf `Record`), since wandb
ships no reader for it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from proximity.training.metrics_log import read_metrics
from proximity.training.tracking import scalars

pytest.importorskip("tensorboard")


@pytest.fixture(scope="module")
def tracked_run(shared_data, tmp_path_factory):
    """A 12-step pretraining run with both trackers (W&B offline), evaluated every 4 steps."""
    from trainer_utils import tiny_config, train_tiny_tokenizer

    from proximity.training.loop import train

    folder = tmp_path_factory.mktemp("tracked")
    tokenizer = train_tiny_tokenizer(shared_data, folder / "tokenizer.json")
    log = {"tensorboard": True, "wandb": "proximity-test" if _has_wandb() else None}
    cfg = tiny_config(tokenizer, shared_data, folder / "run", log=log, eval={"every": 4},
                      optim={"grad_clip": 1.0})  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WANDB_MODE", "offline")
        patch.setenv("WANDB_SILENT", "true")
        train(cfg)
    return folder / "run"


def _has_wandb() -> bool:
    try:
        import wandb  # noqa: F401
    except ImportError:
        return False
    return True


def _expected(run: Path) -> dict[str, dict[int, float]]:
    expected: dict[str, dict[int, float]] = {}
    for record in read_metrics(run / "metrics.jsonl"):
        step, values = scalars(record)
        for tag, value in values.items():
            expected.setdefault(tag, {})[step] = value
    return expected


def test_tensorboard_events_hold_every_metric_of_the_jsonl(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    expected = _expected(tracked_run)
    # what the issue asks for, where the run produces it (mfu is GPU-only)
    assert {
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/tokens_per_s",
        "val/c4/loss",
    } <= set(expected)
    assert set(expected["val/c4/loss"]) == {0, 4, 8, 12}  # the evaluations, start to end
    events = EventAccumulator(str(tracked_run / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == set(expected)
    for tag, by_step in expected.items():
        got = {e.step: e.value for e in events.Scalars(tag)}
        assert got.keys() == by_step.keys(), tag
        for step, value in by_step.items():  # event files store float32
            assert got[step] == pytest.approx(value, rel=1e-6), (tag, step)


def _wandb_records(path: Path):
    """Records of a .wandb file: a 7-byte header, then LevelDB log framing (32 KiB blocks;
    each piece: crc32 (4), length (2), type (1: full, 2: first, 3: middle, 4: last))."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4 : pos + 7])
        if length == 0 and kind == 0:
            break
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_offline_wandb_run_holds_the_same_metrics_and_the_grouping(tracked_run):
    if not _has_wandb():
        pytest.skip("wandb not installed (pip install 'proximity[tracking]')")
    (path,) = (tracked_run / "wandb").glob("offline-run-*/run-*.wandb")  # one run, offline
    got: dict[str, dict[int, float]] = {}
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
               for item in record.history.item}  # fmt: skip
        step = record.history.step.num
        for tag, value in row.items():
            if not tag.startswith("_"):
                got.setdefault(tag, {})[step] = value
    expected = _expected(tracked_run)
    assert got.keys() == expected.keys()
    for tag, by_step in expected.items():
        assert got[tag] == pytest.approx(by_step, rel=1e-12), tag


def test_a_grid_groups_tracked_nodes_by_grid_and_kind(tmp_path):
    """train_set's log.* reach every training node; W&B group = the grid, job type = kind,
    TensorBoard under DIR/tensorboard/<kind>/<node id>; node ids do not change."""
    from proximity.training.grid.ledger import node_payload
    from proximity.training.grid.plan import build_plan
    from proximity.training.grid.spec import load_grid

    plain = build_plan(load_grid("smoke", [], None))
    extra = [*plain.spec.train_set, "log.tensorboard=true", "log.wandb=p"]  # keep the preset's
    tracked = build_plan(load_grid("smoke", [f"train_set=[{', '.join(extra)}]"], None))
    assert [n.id for n in plain.nodes] == [n.id for n in tracked.nodes]
    out = tmp_path / "g"
    kinds = set()
    for node in tracked.nodes:
        if node.kind in ("tokenizer", "prepare"):
            continue
        log = node_payload(tracked, node, out, None)["run_config"]["log"]
        kinds.add(log["job_type"])
        assert log["wandb"] == "p" and log["tensorboard"] is True
        assert (log["group"], log["job_type"], log["name"]) == ("smoke g", node.kind, node.id)
        assert log["tb_dir"] == str(out / "tensorboard" / node.kind / node.id)
    assert kinds == {"pretrain", "midtrain", "sft"}


def test_a_tracker_that_cannot_start_never_stops_the_run(tmp_path, capsys, monkeypatch):
    """A sink whose package is missing is warned about once and left out; metrics.jsonl
    is still written."""
    import builtins

    from proximity.training.config import RunConfig
    from proximity.training.metrics_log import MetricsLog

    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    cfg = RunConfig.from_dict({"out_dir": str(tmp_path)}, ["log.wandb=p"])
    log = MetricsLog(tmp_path / "metrics.jsonl", tracking=cfg)
    log.write(phase="pretrain", step=1, split="train", loss=2.0)
    log.write(phase="pretrain", step=2, split="train", loss=1.0)
    log.close()
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2
    err = capsys.readouterr().err
    assert err.count("W&B logging needs the wandb package") == 1 and "proximity[tracking]" in err


def test_wandb_without_a_key_logs_offline_at_once(tmp_path, monkeypatch):
    """No WANDB_MODE and no API key (nothing in the environment or ~/.netrc): an online start
    would ask for a key or wait on the network, so the run is logged offline instead."""
    if not _has_wandb():
        pytest.skip("wandb not installed")
    import time

    from proximity.training.config import RunConfig
    from proximity.training.metrics_log import MetricsLog

    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = RunConfig.from_dict({"out_dir": str(tmp_path)}, ["log.wandb=p"])
    started = time.monotonic()
    log = MetricsLog(tmp_path / "metrics.jsonl", tracking=cfg)
    log.write(phase="pretrain", step=1, split="train", loss=2.0)
    log.close()
    assert time.monotonic() - started < 60
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
