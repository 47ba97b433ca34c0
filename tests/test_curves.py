"""Figure 6's curves retraced: which run is shown, and the check that a retraced run's losses
equal the ones the figures report before its curves are copied beside them."""

from __future__ import annotations

import json

import pandas as pd
from grid_utils import generated_results, write_grid

from proximity.analysis.curves import folder_example, main, retrace_check
from proximity.analysis.figure_set import readable_curves


def test_the_example_is_the_main_branch_that_helped_most_and_a_retrace_is_checked(tmp_path, capsys):
    # gain grows with the mixture's and the target's position: the last pair helps most
    results = generated_results(seeds=(0, 1))
    folder = write_grid(results, tmp_path / "figures")
    run = folder_example(folder)
    chosen = results[(results["node_id"] == run["node_id"])].iloc[0]
    mains = results[(results["branch_kind"] == "midtrain") & ~results["ablation"]]
    assert chosen["seed"] == 0 and chosen["mixture"] == mains["mixture"].iloc[-1]

    assert retrace_check(tmp_path / "runs", folder)[0].endswith(
        "run the chain first (make study-curves)"
    )
    nodes = {c: tmp_path / "runs" / "nodes" / str(run[c]) for c in ("pretrain_node_id",
             "branch_node_id", "node_id")}  # fmt: skip
    for folder_of_node in nodes.values():
        folder_of_node.mkdir(parents=True)
    node = nodes["node_id"]

    def evaluated_at(column: str, *steps: int) -> None:
        (nodes[column] / "metrics.jsonl").write_text(
            "".join(
                json.dumps({"phase": "sft", "step": s, "split": "val", "dataset": "x", "loss": 1.0})
                + "\n"
                for s in steps
            )
        )

    for column in nodes:  # the grid's own runs, evaluated at their ends only: no curves
        evaluated_at(column, 0, 8)
    val_end = {
        chosen["target_spec"]: float(chosen["sft_val_loss"]),
        "c4": float(chosen["c4_val_loss"]),
    }
    (node / "result.json").write_text(json.dumps({"val_end": val_end}))
    lines = retrace_check(tmp_path / "runs", folder)
    assert sum("evaluated at 2 step(s) only" in line for line in lines) == 3
    assert main(["copy", str(tmp_path / "runs"), str(folder)]) == 2
    evaluated_at("node_id", 0, 4, 8)  # the SFT run dense, its pretraining still sparse
    lines = retrace_check(tmp_path / "runs", folder)
    refused = [line for line in lines if not line.endswith("equal")]
    assert len(refused) == 2
    assert refused[0].startswith(f"{run['pretrain_node_id']}: evaluated at 2")
    assert refused[1].startswith(f"{run['branch_node_id']}: evaluated at 2")
    evaluated_at("pretrain_node_id", 0, 4, 8)
    evaluated_at("branch_node_id", 0, 4, 8)
    assert all(line.endswith("equal") for line in retrace_check(tmp_path / "runs", folder))
    assert main(["copy", str(tmp_path / "runs"), str(folder)]) == 0
    assert (folder / "nodes" / str(run["node_id"]) / "metrics.jsonl").exists()

    val_end["c4"] += 1e-6  # a retrace that drifted: nothing copied, exit 2
    (node / "result.json").write_text(json.dumps({"val_end": val_end}))
    (folder / "nodes" / str(run["node_id"]) / "metrics.jsonl").unlink()
    assert main(["copy", str(tmp_path / "runs"), str(folder)]) == 2
    assert "c4_val_loss" in capsys.readouterr().out
    assert not (folder / "nodes" / str(run["node_id"]) / "metrics.jsonl").exists()


def test_figure_6_names_its_series_as_figure_2_does():
    spec = "c4:0.5+gsm8k?format=plain&split=test:0.5"
    run = pd.Series({"mixture": "mathword", "mixture_spec": spec, "pretrain_spec": "c4",
                     "target": "gsm8k"})  # fmt: skip
    curves = pd.DataFrame({"dataset": ["c4", "gsm8k?format=plain&split=test", run["mixture_spec"],
                                       "gsm8k", "sciq?split=validation"]})  # fmt: skip
    named = readable_curves(curves, run)["dataset"].tolist()
    assert named == ["c4", "mathword: gsm8k", "mathword mixture", "gsm8k", "sciq"]
    starred = run.copy()
    starred["mixture"], starred["mixture_spec"] = "code", "c4:0.9+starcoder*:0.1"
    assert readable_curves(pd.DataFrame({"dataset": ["starcoder"]}), starred)[
        "dataset"
    ].tolist() == ["code: starcoder"]
    # A stand-in with options, as mark_stand_ins stars it: the star sits before the `?`.
    starred["mixture"], starred["mixture_spec"] = "mathword", "c4:0.5+gsm8k*?split=test:0.5"
    assert readable_curves(pd.DataFrame({"dataset": ["gsm8k?split=test"]}), starred)[
        "dataset"
    ].tolist() == ["mathword: gsm8k"]


def test_figure_6_names_hub_datasets_and_templates_holding_colons():
    """Specs a user writes that splitting on ":" would break."""
    spec = "hf:allenai/c4:0.9+hf:bigcode/starcoderdata:0.1"
    run = pd.Series({"mixture": "code", "mixture_spec": spec, "pretrain_spec": "hf:allenai/c4",
                     "target": "mbpp"})  # fmt: skip
    curves = pd.DataFrame({"dataset": ["hf:allenai/c4", "hf:bigcode/starcoderdata", spec]})
    assert readable_curves(curves, run)["dataset"].tolist() == [
        "hf:allenai/c4", "code: starcoderdata", "code mixture"
    ]  # fmt: skip
    templated = "sciq?template=Q: {question} A: {correct_answer}"
    run = run.copy()
    run["mixture"], run["pretrain_spec"] = "qa", "c4"
    run["mixture_spec"] = f"c4:0.8+{templated}:0.2"
    assert readable_curves(pd.DataFrame({"dataset": [templated]}), run)["dataset"].tolist() == [
        "qa: sciq"
    ]
