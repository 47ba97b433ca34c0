"""`proximity train prepare`: sharded, parallel, resumable tokenisation whose bytes do not depend
on the number of workers; runs read the prepared builds; other ranks wait on the manifest."""

from __future__ import annotations

import filecmp

import pytest
from trainer_utils import tiny_config
from typer.testing import CliRunner

import proximity.training.data.tokenized
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.cli import train_app
from proximity.training.data.prepare import prepare, prepare_run
from proximity.training.data.tokenized import TokenizedDataset, tokenize_dataset
from proximity.training.loop import train

FILES = ("train.bin", "val.bin", "val_docs.npy", "manifest.json")


def _one_shot_reference(texts, tokenizer, eos_id, val_fraction, seed):
    """Independent of the sharded writer: every document encoded alone, split by the hash."""
    import numpy as np

    from proximity.training.data.tokenized import hash_uniform

    held_out = hash_uniform(np.arange(len(texts)), seed) < val_fraction
    out = {"train": [], "val": []}
    for text, is_val in zip(texts, held_out, strict=True):
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        out["val" if is_val else "train"] += [*ids, eos_id]
    return out


def test_the_same_bytes_for_any_number_of_workers(shared_data, pythia_tokenizer_path, tmp_path,
                                                  monkeypatch):  # fmt: skip
    from proximity.data import load_texts

    monkeypatch.setattr(
        proximity.training.data.tokenized, "SHARD_DOCS", 70
    )  # 600 documents: 9 shards
    tokenizer = load_tokenizer(str(pythia_tokenizer_path))
    kwargs = dict(data_dir=shared_data, n_docs=600, max_chars=3000, progress=False)
    one = prepare("c4", tokenizer, tmp_path / "one", workers=1, **kwargs)[0]
    two = prepare("c4", tokenizer, tmp_path / "two", workers=2, **kwargs)[0]
    for name in FILES:
        assert filecmp.cmp(one.directory / name, two.directory / name, shallow=False), name
    assert not (two.directory / "parts").exists()  # the shards are removed once joined
    texts = list(load_texts("c4", n_docs=600, max_chars=3000, data_dir=shared_data))
    reference = _one_shot_reference(texts, tokenizer, one.eos_id, 0.05, 0)
    assert one.train.tolist() == reference["train"] and one.val.tolist() == reference["val"]


def test_a_killed_build_resumes_at_the_first_unfinished_shard(
    shared_data, tokenizer_file, tmp_path, monkeypatch
):
    monkeypatch.setattr(
        proximity.training.data.tokenized, "SHARD_DOCS", 50
    )  # 300 documents: 6 shards
    tokenizer = load_tokenizer(str(tokenizer_file))
    real = proximity.training.data.tokenized._tokenize_shard
    calls: list[int] = []

    def dies_at_shard_3(job, parts, index, *args, **kwargs):
        if index == 3:
            raise KeyboardInterrupt  # the kill
        calls.append(index)
        return real(job, parts, index, *args, **kwargs)

    kwargs = dict(data_dir=shared_data, n_docs=300, progress=False)
    monkeypatch.setattr(proximity.training.data.tokenized, "_tokenize_shard", dies_at_shard_3)
    with pytest.raises(KeyboardInterrupt):
        prepare("c4", tokenizer, tmp_path / "resumed", **kwargs)
    assert calls == [0, 1, 2]

    def counted(job, parts, index, *args, **kwargs):
        calls.append(index)
        return real(job, parts, index, *args, **kwargs)

    calls.clear()
    monkeypatch.setattr(proximity.training.data.tokenized, "_tokenize_shard", counted)
    resumed = prepare("c4", tokenizer, tmp_path / "resumed", **kwargs)[0]
    assert calls == [3, 4, 5]  # the finished shards were not tokenised again
    fresh = prepare("c4", tokenizer, tmp_path / "fresh", **kwargs)[0]
    for name in FILES:
        assert filecmp.cmp(resumed.directory / name, fresh.directory / name, shallow=False)


def test_builders_of_the_same_dataset_at_once_all_get_the_one_build(
    shared_data, tokenizer_file, tmp_path, monkeypatch
):
    """A grid on --jobs 2 makes nodes read one eval set side by side: no builder may join
    shards another has deleted; every one returns the finished build, identical to a lone one."""
    import threading

    monkeypatch.setattr(
        proximity.training.data.tokenized, "SHARD_DOCS", 20
    )  # many shards: a wide window
    tokenizer = load_tokenizer(str(tokenizer_file))
    kwargs = dict(data_dir=shared_data, n_docs=300, progress=False)
    start = threading.Barrier(3)
    results, errors = [], []

    def build() -> None:
        start.wait(timeout=60)
        try:
            results.append(prepare("c4", tokenizer, tmp_path / "shared", **kwargs)[0])
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    alone = prepare("c4", tokenizer, tmp_path / "alone", **kwargs)[0]
    assert len({result.directory for result in results}) == 1
    for name in FILES:
        assert filecmp.cmp(results[0].directory / name, alone.directory / name, shallow=False)


def test_a_run_reads_the_builds_prepare_run_made(shared_data, tokenizer_file, tmp_path):
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path / "run",
        data={"train": "c4:0.5+python_stdlib:0.5", "cache_dir": str(tmp_path / "tokens")},
        train={"steps": 2}, eval={"datasets": ["c4"]},
    )  # fmt: skip
    builds = prepare_run(cfg, progress=False)
    assert {b.manifest["spec"] for b in builds} == {"c4", "python_stdlib"}
    made = {p: p.stat().st_mtime_ns for p in (tmp_path / "tokens").rglob("*")}
    train(cfg)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "tokens").rglob("*")} == made


def test_a_waiting_rank_fails_in_one_line_when_no_build_appears(tokenizer_file, shared_data,
                                                                 tmp_path):  # fmt: skip
    tokenizer = load_tokenizer(str(tokenizer_file))
    kwargs = dict(cache_dir=tmp_path, data_dir=shared_data, n_docs=40, progress=False)
    with pytest.raises(ProximityError, match=r"waited 0 s for .*manifest\.json.*train prepare"):
        tokenize_dataset("c4", tokenizer, build=False, wait_timeout_s=0.0, **kwargs)
    built = tokenize_dataset("c4", tokenizer, **kwargs)
    waited = tokenize_dataset("c4", tokenizer, build=False, wait_timeout_s=0.0, **kwargs)
    assert isinstance(waited, TokenizedDataset) and waited.directory == built.directory


def test_prepare_command_writes_builds_a_config_then_finds(shared_data, tokenizer_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        train_app,
        ["prepare", "c4", "--tokenizer", str(tokenizer_file), "--out", str(tmp_path / "tok"),
         "--workers", "2", "--data-dir", str(shared_data), "--n-docs", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "c4:" in result.output and "train /" in result.output
    cfg = tiny_config(
        tokenizer_file, shared_data, tmp_path / "run",
        data={"cache_dir": str(tmp_path / "tok"), "n_docs": 100, "max_chars": None},
    )  # fmt: skip
    before = sorted(p.name for p in (tmp_path / "tok").iterdir())
    assert len(prepare_run(cfg, progress=False)) == 1
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == before  # found, not rebuilt
    bad = runner.invoke(train_app, ["prepare", "c4"])
    assert isinstance(bad.exception, ProximityError) and "--out" in str(bad.exception)
