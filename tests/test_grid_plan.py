"""The grid plan: field-named spec errors, node identity, shared prefixes, the control branch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from trainer_utils import state_dicts_equal, tiny_config, train_tiny_tokenizer
from transformers import GPTNeoXForCausalLM
from typer.testing import CliRunner

from proximity.errors import ProximityError
from proximity.training.checkpoint import load_checkpoint
from proximity.training.grid.cli import grid_app
from proximity.training.grid.estimate import estimate, naive_tokens
from proximity.training.grid.plan import build_plan, node_id
from proximity.training.grid.results import COLUMNS
from proximity.training.grid.spec import check_datasets, load_grid
from proximity.training.loop import train

CONTRACT_COLUMNS = [  # docs/RESULTS.md, in its order
    "model", "seed", "branch_kind", "mixture", "mixture_spec", "pretrain_spec", "weight",
    "start_step", "ablation", "target", "target_spec", "lr", "selected", "sft_val_loss",
    "c4_val_loss", "target_val_loss_before", "c4_val_loss_before", "tokens_pretrain",
    "tokens_midtrain", "tokens_sft", "sft_train_examples", "sft_val_examples", "sft_truncated",
    "sft_dropped", "sft_steps", "wall_time_s", "node_id", "branch_node_id",
    "pretrain_node_id", "substitutes",
]  # fmt: skip


def ids(plan, kind=None):
    return [n.id for n in plan.nodes if kind is None or n.kind == kind]


def test_results_columns_follow_the_contract():
    assert COLUMNS == CONTRACT_COLUMNS


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("sft.lrss=[1e-3]", "sft.lrss"),
        ("pretrain.steps=many", "pretrain.steps"),
        ("models=[nano]", "models[0]"),
        ("seeds=[0, 0]", "seeds"),
        ("ablation.mixture=poetry", "ablation.mixture"),
        ("train_set=[optim.lrr=1]", "optim.lrr"),
    ],
)
def test_a_wrong_key_or_value_names_the_field(override, field):
    with pytest.raises(ProximityError, match=field.replace("[", r"\[").replace("]", r"\]")):
        build_plan(load_grid("smoke", [override]))


@pytest.mark.parametrize(
    ("override", "field"),
    [
        (
            "sft.targets=[gsm8k, pycodee]",
            r"grid sft\.targets\[1\]: unknown dataset 'pycodee': did you mean pycode",
        ),
        ("pretrain.data=c44", r"grid pretrain\.data: unknown dataset 'c44'"),
        ("eval.datasets=[c4x]", r"grid eval\.datasets\[0\]: unknown dataset 'c4x'"),
        ("tokenizer.corpus=c4x", r"grid tokenizer\.corpus: unknown dataset 'c4x'"),
    ],
)
def test_a_misspelt_dataset_names_its_field_before_anything_runs(
    shared_data, tmp_path, override, field
):
    result = CliRunner().invoke(
        grid_app,
        ["smoke", "--dry-run", "--data-dir", str(shared_data), "--set", override],
    )
    assert result.exit_code != 0
    assert re.search(field, " ".join(str(result.exception).split())), result.exception


def test_a_misspelt_mixture_dataset_names_its_entry(shared_data):
    grid = load_grid("micro")
    grid.mixtures[0].data = "starcodr"
    with pytest.raises(ProximityError, match=r"grid mixtures\[0\] \(code\)\.data: .*starcoder"):
        check_datasets(grid, str(shared_data))
    check_datasets(load_grid("micro"), str(shared_data))  # the preset itself resolves


def test_bad_mixture_weight_and_start_name_the_entry(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(
        "pretrain: {steps: 10}\nmixtures:\n  - {name: code, data: starcoder, weights: [1.5],"
        " start_steps: [5]}\n"
    )
    with pytest.raises(ProximityError, match=r"mixtures\[0\] \(code\)\.weights"):
        load_grid(str(spec))
    spec.write_text(
        "pretrain: {steps: 10}\nmixtures:\n  - {name: code, data: x, start_steps: [10]}"
    )
    with pytest.raises(ProximityError, match=r"start_steps: 10 not in \(0, 10\)"):
        load_grid(str(spec))
    with pytest.raises(ProximityError, match="not a preset"):
        load_grid("no-such-grid")


def test_identity_is_stable_and_ignores_what_does_not_change_numbers():
    a = build_plan(load_grid("smoke"))
    assert ids(a) == ids(build_plan(load_grid("smoke")))
    assert len(set(ids(a))) == len(a.nodes)  # nothing is planned twice
    same = build_plan(
        load_grid("smoke", ["data.data_dir=/elsewhere", "pretrain.checkpoint_every=4"])
    )
    assert ids(same) == ids(a)
    # More seeds keep seed 0's nodes: `--seeds 0,1,2` on a folder that ran seed 0 reuses them.
    more = build_plan(load_grid("smoke", seeds="0,1"))
    assert set(ids(a)) < set(ids(more))
    assert len(ids(more, "pretrain")) == 2 and len(ids(more, "tokenizer")) == 1


def test_a_changed_setting_makes_new_nodes_downstream_only():
    a = build_plan(load_grid("smoke"))
    lr = build_plan(load_grid("smoke", ["sft.lrs=[1e-3, 1e-2]"]))
    assert ids(lr, "midtrain") == ids(a, "midtrain") and ids(lr, "pretrain") == ids(a, "pretrain")
    changed = set(ids(lr, "sft")) - set(ids(a, "sft"))
    assert len(changed) == len(ids(a, "sft")) // 2  # the 3e-3 runs became 1e-2 runs
    steps = build_plan(load_grid("smoke", ["pretrain.steps=30"]))
    # upstream of pretraining, the tokenizer and the data preparation do not depend on its length
    upstream = set(ids(a, "tokenizer")) | set(ids(a, "prepare"))
    assert ids(steps, "tokenizer") == ids(a, "tokenizer")
    assert ids(steps, "prepare") == ids(a, "prepare")
    assert not (set(ids(steps)) - upstream) & set(ids(a))
    # The hash covers parents: the same settings under another parent are another node.
    assert node_id("sft", {"x": 1}, ["p1"], None) != node_id("sft", {"x": 1}, ["p2"], None)


def test_smoke_plan_shares_prefixes_and_counts_tokens_by_hand(shared_data):
    plan = build_plan(load_grid("smoke"))
    kinds = [n.kind for n in plan.nodes]
    assert kinds.count("pretrain") == 1 and kinds.count("tokenizer") == 1
    # code@12 (main, also the first ablation point), cpt@12, and the ablation's code@18
    assert kinds.count("midtrain") == 3
    by_kind = {b.kind: b for b in plan.branches}
    control = by_kind["control"]
    pretrain = next(n for n in plan.nodes if n.kind == "pretrain")
    assert control.node is pretrain and control.start_step == 24 and control.weight == 0.0
    assert pretrain.settings["checkpoint"]["steps"] == [12, 18]  # every start kept
    assert [b.ablation for b in plan.branches] == [False, False, False, True]
    assert {b.mixture_spec for b in plan.branches} == {
        "c4", "c4:0.8+starcoder:0.2", "starcoder"
    }  # fmt: skip
    # 4 branch ends x 1 target x 2 LRs; parents are branch ends.
    assert len(plan.sft_nodes()) == 8
    assert {n.parents[0] for n in plan.sft_nodes()} == {b.node.id for b in plan.branches}
    counts: dict = {}
    est = estimate(plan, str(shared_data), measure=False, sft_counts=counts)
    # pretrain: 24 steps x 8 x 64; midtrain from 12 and 18 to 24
    assert est[pretrain.id].tokens == 24 * 512
    assert sorted(est[i].tokens for i in ids(plan, "midtrain")) == [6 * 512, 12 * 512, 12 * 512]
    sft = est[plan.sft_nodes()[0].id].tokens
    kept = counts["pycode"].examples  # after the held-out split and the length filter
    assert 30 < kept < int(48 * 0.9)  # some examples' prompts alone fill 64 tokens
    assert sft == 1 * (kept // 8) * 8 * 64  # epochs x steps/epoch x batch x seq_len
    shared = 24 * 512 + 30 * 512 + 8 * sft
    assert sum(e.tokens for e in est.values()) == shared
    # naive: each SFT run retrains pretraining to its start plus its branch
    naive = 2 * (24 + 24 + 24 + 24) * 512 + 8 * sft
    assert naive_tokens(plan, est) == naive


def test_paper_presets_show_the_papers_token_counts():
    plan = build_plan(load_grid("paper-70m"))
    pretrain = [n for n in plan.nodes if n.kind == "pretrain"]
    assert len(pretrain) == 5  # five seeds
    assert pretrain[0].tokens == 61_035 * 1024 * 2048  # 128B tokens
    assert abs(pretrain[0].tokens - 128e9) / 128e9 < 0.001
    assert plan.spec.ablation.weights == [0.1, 0.2, 0.3, 0.5, 0.8]
    training = [n for n in plan.nodes if n.kind in ("pretrain", "midtrain", "sft")]
    assert {n.settings["model"]["preset"] for n in training} == {"70m"}


def test_control_branch_is_the_pretraining_run_itself(shared_data, tmp_path):
    """C4 from step s with the same seed = pretraining: why the grid never trains a control."""
    tokenizer = train_tiny_tokenizer(shared_data, tmp_path / "tok")
    pre = tiny_config(tokenizer, shared_data, tmp_path / "pre", checkpoint={"steps": [6]})
    train(pre)
    mid = tiny_config(
        tokenizer, shared_data, tmp_path / "mid", phase="midtrain",
        model={"preset": "micro-2l-64", "seq_len": 64,
               "init_from": str(tmp_path / "pre" / "checkpoints" / "step-000006")},
    )  # fmt: skip
    train(mid)
    a = GPTNeoXForCausalLM.from_pretrained(load_checkpoint(tmp_path / "pre").model_dir)
    b = GPTNeoXForCausalLM.from_pretrained(load_checkpoint(tmp_path / "mid").model_dir)
    assert load_checkpoint(tmp_path / "mid").step == 12
    assert state_dicts_equal(a, b)
    # and the test can fail: a different mixture from the same start is not the same model
    other = tiny_config(
        tokenizer, shared_data, tmp_path / "other", phase="midtrain",
        data={"train": "c4:0.8+starcoder:0.2"},
        model={"preset": "micro-2l-64", "seq_len": 64,
               "init_from": str(tmp_path / "pre" / "checkpoints" / "step-000006")},
    )  # fmt: skip
    train(other)
    c = GPTNeoXForCausalLM.from_pretrained(load_checkpoint(tmp_path / "other").model_dir)
    assert not state_dicts_equal(a, c)


def test_the_prepare_node_orders_the_grid_but_leaves_every_id_as_it_was():
    """Reference: the node ids in figures/micro/results.csv, written by a grid run made before
    the prepare node existed. Adding it (an ordering dependency that only fills content-keyed
    caches) must not rename a single node, or every finished grid would be run again."""
    committed = Path(__file__).parents[1] / "figures" / "micro" / "results.csv"
    if not committed.exists():
        pytest.skip(f"{committed} is not in this checkout")
    import pandas as pd

    spec = load_grid("micro", seeds="0,1,2")
    plan = build_plan(spec)
    table = pd.read_csv(committed)
    assert set(table.node_id) == {n.id for n in plan.nodes if n.kind == "sft"}
    assert set(table.pretrain_node_id) == {n.id for n in plan.nodes if n.kind == "pretrain"}
    (prepare,) = [n for n in plan.nodes if n.kind == "prepare"]
    by_id = plan.by_id()
    for node in plan.nodes:
        if node.kind == "pretrain":
            assert prepare.id in node.parents
    order = [n.id for n in plan.nodes]
    assert all(order.index(p) < order.index(n.id) for n in plan.nodes for p in n.parents)
    # it prepares what the SFT nodes read too: each target at the SFT sequence length
    read = {(c["phase"], c["data"]["train"]) for c in prepare.settings["configs"]}
    assert {("sft", t) for t in spec.sft.targets} <= read
    assert by_id[prepare.parents[0]].kind == "tokenizer"


def test_denser_evaluation_renames_no_node_and_reaches_every_phase():
    study = ['models=["micro-2l-128"]', "seeds=[0]"]
    plain = build_plan(load_grid("study", study))
    dense = build_plan(load_grid("study", [*study, "eval.every=40", "eval.sft_every=4"]))
    assert [n.id for n in dense.nodes] == [n.id for n in plain.nodes]
    every = {n.kind: n.settings["eval"]["every"] for n in dense.nodes if "eval" in n.settings}
    assert every == {"pretrain": 40, "midtrain": 40, "sft": 4}
    with pytest.raises(ProximityError, match=r"eval\.every"):
        load_grid("study", [*study, "eval.every=-1"])


def test_only_keeps_a_node_and_what_it_needs():
    plan = build_plan(load_grid("study", ['models=["micro-2l-128"]', "seeds=[0]"]))
    sft = next(n for n in plan.sft_nodes() if "mathword:0.5@640" in n.label and "gsm8k" in n.label)
    part = plan.only([sft.id])
    kinds = sorted(n.kind for n in part.nodes)
    assert kinds == ["midtrain", "prepare", "pretrain", "sft", "tokenizer"]
    by_id = part.by_id()
    assert all(parent in by_id for n in part.nodes for parent in n.parents)  # closed
    # the branch it fine-tunes, and the control (whose end is the pretraining node it needs)
    assert sorted(b.kind for b in part.branches) == ["control", "midtrain"]
    with pytest.raises(ProximityError, match="--only sft-000000000000: not a node"):
        plan.only(["sft-000000000000"])


def test_only_a_kind_keeps_every_node_of_it_beside_named_nodes():
    plan = build_plan(load_grid("study", []))  # two sizes x two seeds
    sft = plan.sft_nodes()[-1]
    part = plan.only(["pretrain", sft.id])
    pretrains = {n.id for n in plan.nodes if n.kind == "pretrain"}
    assert len(pretrains) == 4 and pretrains <= set(part.by_id())
    assert [n.id for n in part.nodes if n.kind == "sft"] == [sft.id]
    # the SFT run's branch, and nothing else past pretraining
    assert [n.kind for n in part.nodes].count("midtrain") <= 1
    with pytest.raises(ProximityError, match=r"nor a node kind .*pretrain"):
        plan.only(["pretraining"])


def test_a_targets_own_sweep_adds_its_runs_and_renames_none():
    smoke = load_grid("smoke")
    target, lrs = smoke.sft.targets[0], smoke.sft.lrs
    wider = [min(lrs) / 3, *lrs]
    a = build_plan(smoke)
    b = build_plan(load_grid("smoke", [f"sft.lrs_by_target.{target}={wider}"]))
    assert set(ids(a)) < set(ids(b))  # every finished node is kept under its id

    def swept(plan):
        pairs = {}
        for n in plan.sft_nodes():
            key = (n.parents[0], n.settings["data"]["train"])
            pairs.setdefault(key, set()).add(n.settings["optim"]["lr"])
        return pairs

    for (_, trained), got in swept(b).items():
        assert got == set(wider if trained == target else lrs)
    assert len(set(ids(b)) - set(ids(a))) == len(a.branches)  # one new run per branch


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.lrs_by_target.poetry=[1e-3]", r"sft\.lrs_by_target\.poetry.*not one of sft\.targets"),
        ("sft.lrs_by_target.pycode=[]", r"sft\.lrs_by_target\.pycode.*at least one"),
        ("sft.lrs_by_target.pycode=[-1e-3]", r"sft\.lrs_by_target\.pycode.*must be positive"),
        ("sft.lrs_by_target.pycode=[fast]", r"sft\.lrs_by_target\.pycode\[0\]: expected a number"),
        ("sft.lrs_by_target=3", r"sft\.lrs_by_target: expected a mapping"),
    ],
)
def test_a_bad_per_target_sweep_names_its_key(override, message):
    with pytest.raises(ProximityError, match=message):
        load_grid("smoke", [override])


def test_an_unreadable_sft_target_is_counted_as_unknown_and_says_why(tmp_path):
    from proximity.training.grid.estimate import sft_examples

    plan = build_plan(load_grid("smoke"))
    missing = tmp_path / "absent.jsonl"
    count = sft_examples(str(missing), plan, None, None, "exact")
    assert count.examples is None
    assert count.how.startswith("not readable here (") and "absent.jsonl" in count.how
