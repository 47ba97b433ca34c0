from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from proximity.errors import ProximityError
from proximity.training.config import RunConfig, config_fields

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig.from_dict(
        {"phase": "midtrain", "model": {"init_from": "runs/x", "seq_len": 64}},
        ["optim.lr=1e-3", "checkpoint.steps=[100, 200]", "eval.datasets=[c4, gsm8k]"],
    )
    cfg.save(tmp_path / "run.yaml")
    again = RunConfig.from_yaml(tmp_path / "run.yaml")
    assert again == cfg
    assert again.to_dict() == yaml.safe_load(cfg.to_yaml())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_configs_load_and_round_trip(path):
    cfg = RunConfig.from_yaml(path)
    assert RunConfig.from_dict(yaml.safe_load(cfg.to_yaml())) == cfg


def test_overrides_are_typed_like_their_fields():
    cfg = RunConfig.from_dict(
        {},
        [
            "optim.lr=6e-4",  # PyYAML reads this as a string
            "train.tokens=1e6",  # ... and this as a float
            "train.steps=null",
            "system.compile=true",
            "eval.datasets=c4",  # one item becomes a list
            "model.revision=3000",
        ],
    )
    assert cfg.optim.lr == 6e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.train.tokens == 1_000_000 and isinstance(cfg.train.tokens, int)
    assert cfg.train.steps is None and cfg.system.compile is True
    assert cfg.eval.datasets == ["c4"] and cfg.model.revision == "3000"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", r"unknown config key 'optim.lrr' \(optim has: lr, min_lr"),
        ("optimizer.lr=1", r"unknown config key 'optimizer'"),
        ("optim.lr=fast", r"optim.lr: expected a number, got 'fast'"),
        ("train.steps=1.5", r"train.steps: expected an integer"),
        ("system.dtype=fp16", r"system.dtype: expected one of 'auto', 'bf16', 'fp32'"),
        ("system.compile=maybe", r"system.compile: expected true/false"),
        ("optim.lr=-1", r"optim.lr: must be positive"),
        ("optim.min_lr=1", r"optim.min_lr: must be in \[0, optim.lr\]"),
        ("train.batch_size=0", r"train.batch_size: must be positive"),
        ("optim=3", r"optim: expected a section"),
        ("optim.lr", r"section.key=value"),
    ],
)
def test_bad_key_or_value_names_the_field(override, message):
    with pytest.raises(ProximityError, match=message):
        RunConfig.from_dict({}, [override])


def test_bad_yaml_and_missing_file_are_one_line_errors(tmp_path):
    with pytest.raises(ProximityError, match="config file not found"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ProximityError, match="not valid YAML"):
        RunConfig.from_yaml(bad)
    bad.write_text("optim:\n  lr: 1e-3\n  warmup: 10\n")
    with pytest.raises(ProximityError, match=r"optim\.warmup"):
        RunConfig.from_yaml(bad)


def test_every_field_is_listed():
    keys = config_fields()
    assert {"optim.lr", "train.tokens", "model.init_from", "checkpoint.steps"} <= set(keys)
