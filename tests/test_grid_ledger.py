"""The grid ledger (training/grid/ledger.py): the bookkeeping both executors share."""

from __future__ import annotations

from proximity.training.grid.ledger import Ledger
from proximity.training.grid.nodes import ERROR, RESULT, node_dir
from proximity.training.grid.plan import build_plan
from proximity.training.grid.spec import load_grid


def test_a_failed_node_skips_every_dependent_in_one_pass_and_the_rest_stay_ready(tmp_path):
    plan = build_plan(load_grid("smoke"))
    tok, prepare, pretrain = plan.nodes[:3]
    assert (tok.kind, prepare.kind, pretrain.kind) == ("tokenizer", "prepare", "pretrain")
    for node in (tok, prepare):
        node_dir(tmp_path, node.id).mkdir(parents=True)
        (node_dir(tmp_path, node.id) / RESULT).write_text("{}")
    events: list[tuple[str, str, str]] = []
    ledger = Ledger(plan, tmp_path, lambda event, node, text: events.append((event, node.id, text)))
    assert ledger.done == {tok.id, prepare.id}  # what the folders say at the start

    assert [n.id for n in ledger.ready()] == [pretrain.id]  # every other node waits on it
    assert [n.id for n in ledger.ready({pretrain.id})] == []  # excluded: e.g. running now

    node_dir(tmp_path, pretrain.id).mkdir(parents=True)
    ledger.fail(pretrain, "worker process ended with status -9\n\nlog tail\n")
    assert (node_dir(tmp_path, pretrain.id) / ERROR).read_text().startswith("worker process")
    assert list(ledger.ready()) == []
    rest = [n.id for n in plan.nodes[3:]]
    assert [e for e in events if e[0] == "skip"] == [("skip", i, "a parent failed") for i in rest]

    outcome = ledger.outcome()
    assert outcome.done == [tok.id, prepare.id] and outcome.ran == []
    assert outcome.failed == {pretrain.id: "worker process ended with status -9"}
    assert outcome.skipped == rest  # plan order


def test_a_node_finished_now_is_told_once_and_counted_as_ran(tmp_path):
    plan = build_plan(load_grid("smoke"))
    tok = plan.nodes[0]
    events: list[tuple[str, str, str]] = []
    ledger = Ledger(plan, tmp_path, lambda event, node, text: events.append((event, node.id, text)))
    assert [n.id for n in ledger.ready()] == [tok.id]
    ledger.finished(tok, "(worker process 1)")
    ledger.skip(plan.nodes[1], "job 7 cancelled")
    assert events == [
        ("done", tok.id, "(worker process 1)"),
        ("skip", plan.nodes[1].id, "a parent failed (job 7 cancelled)"),
    ]
    outcome = ledger.outcome()
    assert outcome.done == outcome.ran == [tok.id] and outcome.skipped == [plan.nodes[1].id]
