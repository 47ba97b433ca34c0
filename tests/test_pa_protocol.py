"""PA measured on the text the models are trained and scored on (`correlate --max-tokens` and
the grid-derived defaults), recorded so `recommend` measures PA the same way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from grid_utils import generated_results, write_grid

from proximity.analysis.cli import recorded_options
from proximity.analysis.correlate import pa_protocol
from proximity.settings import SimilaritySettings
from proximity.similarity import advantage_table
from proximity.stats import StatsOptions

PROXIMITY = str(Path(sys.executable).parent / "proximity")
ROOT = Path(__file__).resolve().parents[1]
STUDY_SFT = {"seq_len": 128, "n_docs": 765, "val_docs": 215}


def test_a_grid_with_a_fixed_validation_set_defaults_to_its_trained_text():
    protocol = pa_protocol({"sft": STUDY_SFT})
    assert protocol.text == "trained" and protocol.tokenizer == "grid"
    assert protocol.options.max_tokens == 128 and protocol.options.n_docs == 765


def test_the_committed_micro_grid_keeps_the_papers_protocol():
    config = yaml.safe_load((ROOT / "figures" / "micro" / "grid.yaml").read_text())
    assert config["sft"]["seq_len"] == 128  # recorded, but micro has no fixed validation set
    protocol = pa_protocol(config)
    assert protocol.text == "paper" and protocol.tokenizer == "pythia"
    assert protocol.options == StatsOptions()  # 1,000 documents of up to 512 tokens


def test_options_given_override_the_defaults_and_zero_means_whole_documents():
    protocol = pa_protocol({"sft": STUDY_SFT}, tokenizer="pythia", n_docs=50, max_tokens=0)
    assert (protocol.tokenizer, protocol.options.n_docs) == ("pythia", 50)
    assert protocol.options.max_tokens is None
    assert "--max-tokens 0" in protocol.why
    assert pa_protocol({}, max_tokens=64).options.max_tokens == 64


def test_recommend_reuses_the_recorded_cut():
    inputs = {"tokenizer": "/x/tokenizer.json", "mixture": "expected",
              "stats_options": {**StatsOptions(n_docs=765, max_tokens=128).__dict__}}  # fmt: skip
    options, tokenizer, _ = recorded_options(
        inputs, Path("s.json"), tokenizer=None, n_docs=None, mixture=None
    )
    assert options.max_tokens == 128 and options.n_docs == 765
    assert tokenizer == "/x/tokenizer.json"


def test_correlate_measures_pa_on_the_cut_text_with_the_grids_tokenizer(shared_data, tmp_path):
    """A grid with a fixed validation set: PA with the grid's tokenizer on documents cut to
    sft.seq_len tokens (equal to proximity's own advantage with those options), Pythia's
    beside it, and the options recorded."""
    gpt2 = shared_data / "tokenizers" / "gpt2" / "tokenizer.json"
    root = write_grid(generated_results(seeds=(0,)), tmp_path / "grid", shared_data, str(gpt2))
    config = yaml.safe_load((root / "grid.yaml").read_text())
    config["sft"] = {"seq_len": 32, "n_docs": 60, "val_docs": 10}
    (root / "grid.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    done = subprocess.run(
        [PROXIMITY, "correlate", str(root), "--out", str(out), "--no-plot"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    statistics = json.loads((out / "statistics.json").read_text())
    inputs = statistics["inputs"]
    assert inputs["tokenizer"] == str(gpt2)
    assert inputs["stats_options"]["max_tokens"] == 32 and inputs["stats_options"]["n_docs"] == 60
    assert "sft.seq_len" not in inputs["pa_protocol"] and "seq_len 32" in inputs["pa_protocol"]
    assert statistics["tokenizer_comparison"]["tokenizer"] == "pythia"
    direct = advantage_table(
        "c4", "pycode", ["c4:0.8+starcoder:0.2"],
        SimilaritySettings(options=StatsOptions(n_docs=60, max_tokens=32)),
        tokenizer=str(gpt2), data_dir=shared_data,
    )  # fmt: skip
    points = statistics["relations"][0]["points"]
    (row,) = [p for p in points if p["mixture"] == "starcoder" and p["target"] == "pycode"]
    assert abs(row["advantage"] - direct["advantage"].item()) < 1e-12
    whole = advantage_table(
        "c4", "pycode", ["c4:0.8+starcoder:0.2"],
        SimilaritySettings(options=StatsOptions(n_docs=60, max_tokens=None)),
        tokenizer=str(gpt2), data_dir=shared_data,
    )  # fmt: skip
    assert abs(row["advantage"] - whole["advantage"].item()) > 1e-6  # the cut matters
