"""Saving a grid's parts and merging them: nothing lost, nothing counted twice, no machine path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from proximity.errors import ProximityError
from proximity.training.grid.merge_parts import collect, main, merge


def _fake_part(run_dir, rows):
    """A grid folder as a finished part leaves it: results.csv and each node's scored examples."""
    table = pd.DataFrame(rows)
    run_dir.mkdir(parents=True)
    table.to_csv(run_dir / "results.csv", index=False)
    for row in rows:
        node = run_dir / "nodes" / row["node_id"]
        node.mkdir(parents=True)
        losses = np.arange(3, dtype=np.float64) + len(row["node_id"])
        np.savez(node / "val_examples.npz", loss_sum=losses, tokens=np.array([2, 3, 4]))
    (run_dir / "nodes" / "tokenizer-abc").mkdir()
    (run_dir / "nodes" / "tokenizer-abc" / "tokenizer.json").write_text("{}")


def test_parts_merge_into_one_table_with_the_selected_runs_scored_examples(tmp_path):
    first = [
        {"model": "a", "seed": 0, "node_id": "sft-1", "selected": True, "sft_val_loss": 2.0},
        {"model": "a", "seed": 0, "node_id": "sft-2", "selected": False, "sft_val_loss": 2.5},
    ]
    second = [
        {"model": "b", "seed": 0, "node_id": "sft-33", "selected": True, "sft_val_loss": 1.5},
        first[0],  # a row both parts hold (the shared folder's table): counted once
    ]
    _fake_part(tmp_path / "run1", first)
    figures = tmp_path / "figures"
    collect(tmp_path / "run1", figures, "a-seed0")
    _fake_part(tmp_path / "run2", second)
    collect(tmp_path / "run2", figures, "b-seed0")
    summary = merge(figures, spec="smoke")
    merged = pd.read_csv(figures / "results.csv")
    assert sorted(merged.node_id) == ["sft-1", "sft-2", "sft-33"]
    assert summary == {"parts": 2, "rows": 3, "scored_runs": 2}
    with np.load(figures / "val_examples.npz") as scored:
        assert sorted(scored.files) == [
            "sft-1/loss_sum", "sft-1/tokens", "sft-33/loss_sum", "sft-33/tokens",
        ]  # fmt: skip
        assert scored["sft-33/loss_sum"].tolist() == [6.0, 7.0, 8.0]
    grid = yaml.safe_load((figures / "grid.yaml").read_text())
    assert grid["name"] == "smoke" and grid["data"]["data_dir"] is None
    assert (figures / "nodes" / "tokenizer-abc" / "tokenizer.json").exists()


def test_merging_nothing_says_what_to_run(tmp_path):
    with pytest.raises(ProximityError, match="study-part"):
        merge(tmp_path, spec=None)


def test_a_copied_grid_yaml_keeps_every_setting_but_the_machines_data_folder(tmp_path, capsys):
    source = {"name": "micro", "seeds": [0, 1], "data": {"data_dir": "/some/machine/data",
                                                       "n_docs": 2000}}  # fmt: skip
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(source))
    assert main(["spec", str(tmp_path / "grid.yaml"), str(tmp_path / "figures")]) == 0
    copied = yaml.safe_load((tmp_path / "figures" / "grid.yaml").read_text())
    assert copied == {"name": "micro", "seeds": [0, 1], "data": {"data_dir": None, "n_docs": 2000}}
    assert main(["spec", str(tmp_path / "missing.yaml"), str(tmp_path / "figures")]) == 2
    assert "missing.yaml: no such grid.yaml" in capsys.readouterr().err
