"""SFT examples prepared on disk: the same arrays as building them in memory, reused, waited for."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.data import sft_prepared
from proximity.training.data.sft_data import build_sft_data
from proximity.training.data.sft_prepared import prepare_sft

N_DOCS = 120


@pytest.fixture(scope="module")
def pythia(pythia_tokenizer_path: Path):
    return load_tokenizer(str(pythia_tokenizer_path))


def _options(shared_data: Path, **changes) -> dict:
    options = {"seq_len": 256, "mask_prompt": True, "data_dir": shared_data, "n_docs": N_DOCS}
    return options | changes


def test_a_prepared_build_holds_the_in_memory_arrays_memory_mapped(pythia, shared_data, tmp_path):
    """Reference: build_sft_data on the same arguments, kept in memory; the build must hold the
    same tokens, offsets and masks, and serve them as read-only memory maps, not loaded copies."""
    expected = build_sft_data("gsm8k", pythia, **_options(shared_data))
    prepared = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))
    for want, got in zip(expected, (prepared.train, prepared.val), strict=True):
        assert len(got) == len(want) > 0
        for name in ("tokens", "offsets", "n_masked"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
            assert isinstance(getattr(got, name), np.memmap)
        assert (got.seq_len, got.pad_id) == (want.seq_len, want.pad_id)
        # The padded batches a run trains on are the same, row for row.
        rows = np.arange(len(want))
        for a, b in zip(got.rows(rows), want.rows(rows), strict=True):
            np.testing.assert_array_equal(a, b)
    assert prepared.manifest["splits"]["train"]["loss_tokens"] == expected[0].n_loss_tokens


def test_a_second_call_reuses_the_build_and_a_changed_setting_makes_a_new_one(
    pythia, shared_data, tmp_path, monkeypatch
):
    first = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))

    def no_tokenising(*args, **kwargs):
        raise AssertionError("the finished build should have been reused")

    monkeypatch.setattr(sft_prepared, "build_sft_data", no_tokenising)
    again = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))
    assert again.directory == first.directory
    np.testing.assert_array_equal(again.train.tokens, first.train.tokens)
    monkeypatch.undo()

    shorter = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data, seq_len=64))
    unmasked = prepare_sft(
        "gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data, mask_prompt=False)
    )
    assert len({first.directory, shorter.directory, unmasked.directory}) == 3
    assert shorter.train.n_truncated > first.train.n_truncated
    assert unmasked.train.n_masked.sum() == 0 < first.train.n_masked.sum()


def test_a_folder_without_its_manifest_is_rebuilt(pythia, shared_data, tmp_path):
    """A build killed before its manifest: arrays present but unfinished, so built again."""
    first = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))
    expected = np.array(first.train.tokens)
    (first.directory / "manifest.json").unlink()
    (first.directory / "train_tokens.npy").write_bytes(b"truncated")
    again = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))
    np.testing.assert_array_equal(again.train.tokens, expected)


def test_processes_building_the_same_target_at_once_all_get_the_one_build(
    pythia, shared_data, tmp_path, monkeypatch
):
    """A grid on --jobs 2 runs SFT nodes of one target side by side: every builder must come
    back with the complete build, and exactly one folder may be left, with nothing half-made."""
    builders = 4
    all_built = threading.Barrier(builders)
    real_build = sft_prepared.build_sft_data

    def build_then_wait_for_the_others(*args, **kwargs):
        splits = real_build(*args, **kwargs)
        all_built.wait(timeout=60)  # so that every builder writes at the same moment
        return splits

    monkeypatch.setattr(sft_prepared, "build_sft_data", build_then_wait_for_the_others)
    results, errors = [], []

    def build() -> None:
        try:
            built = prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))
            results.append(built)
        except Exception as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(builders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == builders
    expected = build_sft_data("gsm8k", pythia, **_options(shared_data))[0]
    for result in results:
        np.testing.assert_array_equal(result.train.tokens, expected.tokens)
    assert [p.name for p in tmp_path.iterdir()] == [results[0].directory.name]


def test_other_ranks_wait_for_the_manifest_and_give_up_with_one_line(
    pythia, shared_data, tmp_path, monkeypatch
):
    monkeypatch.setattr("proximity.training.data.tokenized._WAIT_POLL_S", 0.05)
    with pytest.raises(ProximityError, match="proximity train prepare"):
        prepare_sft(
            "gsm8k", pythia, cache_dir=tmp_path, build=False, wait_timeout_s=0.2,
            **_options(shared_data),
        )  # fmt: skip

    # A waiting rank returns as soon as rank 0 (here a thread, started late) has finished.
    def rank0() -> None:
        time.sleep(0.3)
        prepare_sft("gsm8k", pythia, cache_dir=tmp_path, **_options(shared_data))

    builder = threading.Thread(target=rank0)
    builder.start()
    waited = prepare_sft(
        "gsm8k", pythia, cache_dir=tmp_path, build=False, wait_timeout_s=60,
        **_options(shared_data),
    )  # fmt: skip
    builder.join()
    assert len(waited.train) > 0


def test_prepare_with_an_sft_config_builds_what_the_run_then_reads(shared_data, tmp_path):
    """`proximity train prepare --config SFT.yaml` makes the build the SFT run finds: the run's
    own lookup (build=False: wait only) gets it at once."""
    from proximity.training.cli import train_app
    from proximity.training.config import RunConfig
    from proximity.training.phases import sft_build

    config = Path(__file__).parents[1] / "configs" / "micro-sft.yaml"

    sets = [
        f"data.data_dir={shared_data}",
        "data.train=gsm8k",
        "data.n_docs=80",
        "data.tokenizer=pythia",
        "eval.datasets=[]",
    ]
    args = ["prepare", "--config", str(config), "--out", str(tmp_path)]
    result = CliRunner().invoke(train_app, [*args, *[x for s in sets for x in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert "gsm8k" in result.output and "train /" in result.output
    cfg = RunConfig.from_yaml(config, [*sets, f"data.cache_dir={tmp_path}"])
    tokenizer = load_tokenizer("pythia", data_dir=str(shared_data))
    found = sft_build(cfg, tokenizer, build=False)
    assert found.directory.parent == tmp_path and len(found.train) > 0
