"""`proximity train-grid` end to end on the smoke grid: results, resumption, kill -9, locks.

Every run here is a real `train-grid` process (the command users type); each node is a real
trainer run on the shared data.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from proximity.training.grid.local import available_cores
from proximity.training.grid.nodes import LOCK, is_locked, node_lock
from proximity.training.grid.progress import fmt_seconds

pytestmark = pytest.mark.slow
CLI = "from proximity.cli import main; main()"
VOLATILE = ["wall_time_s"]  # the only column that may differ between equal runs


def grid_command(out: Path, *extra: str, spec: str = "smoke") -> list[str]:
    return [sys.executable, "-c", CLI, "train-grid", spec, "--out", str(out), *extra]


def run_grid(out: Path, shared: Path, *extra: str, spec: str = "smoke", check: bool = True):
    done = subprocess.run(
        grid_command(out, "--data-dir", str(shared), *extra, spec=spec),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def attempts(out: Path) -> dict[str, int]:
    return {
        folder.name: len((folder / "attempts.txt").read_text().splitlines())
        for folder in (out / "nodes").iterdir()
        if (folder / "attempts.txt").exists()
    }


@pytest.fixture(scope="module")
def smoke_run(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grid") / "smoke"
    # --progress draws the live display although stdout is a pipe; its frames are kept
    done = run_grid(out, shared_data, "--progress")
    (out.parent / "screen.txt").write_text(done.stdout)
    return out


def test_the_live_display_shows_totals_time_left_and_agrees_with_status(smoke_run):
    """While the smoke grid ran, the live display showed the nodes done by kind, the tokens,
    and a time-left estimate; at the end `status` shows the same totals, and the per-node
    lines went to grid.log (not the screen) with each node's own time, the one status shows."""
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", (smoke_run.parent / "screen.txt").read_text())
    frames = " ".join(screen.split())
    assert not re.search(r"\d\d:\d\d:\d\d (start|done) ", screen)  # per-node lines: grid.log
    frame = r"nodes done: (\d+)/14 (?:(?!nodes done:).)*?time left: ~([\d.]+) (s|min)"
    midway = re.findall(frame, frames)  # within one frame
    assert any(0 < int(done) < 14 for done, _, _ in midway), frames[-2000:]
    assert "running now" in frames and "tokens trained:" in frames
    status = subprocess.run(
        [sys.executable, "-c", CLI, "train-grid", "status", str(smoke_run)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    text = " ".join(status.stdout.split())
    results = [json.loads(p.read_text()) for p in smoke_run.glob("nodes/*/result.json")]
    tokens = sum(r.get("tokens", 0) for r in results)
    assert (
        "nodes done: 14/14 (tokenizer 1/1, prepare 1/1, pretrain 1/1, midtrain 3/3, sft 8/8)"
        in text
    )
    assert f"tokens trained: {tokens / 1000:.3g}k/{tokens / 1000:.3g}k" in text
    assert "time left: ~0.0 s" in text
    log = (smoke_run / "grid.log").read_text()
    for r in results:  # the log's time for each node is the one status prints (result.json)
        (line,) = [x for x in log.splitlines() if f"done  {r['id']}" in x]
        took = re.search(r"took (.+?) \(", line).group(1)
        assert took == fmt_seconds(r["wall_time_s"])
        (row,) = [x for x in status.stdout.splitlines() if r["id"] in x]
        assert f" {took} " in row


def test_the_prepare_node_made_every_build_before_training_read_it(smoke_run):
    """Data preparation is its own node: every build in the grid's token cache is one it made
    (a training node that found its data missing would have added another), and each was
    finished before the first pretraining node started."""
    (prepare,) = (smoke_run / "nodes").glob("prepare-*")
    made = json.loads((prepare / "result.json").read_text())
    builds = [b for b in (smoke_run / "cache" / "tokens").iterdir() if not b.name.startswith(".")]
    assert made["builds"] == len(builds) >= 3  # pretraining data, the code mix's part, pycode
    (pretrain,) = (smoke_run / "nodes").glob("pretrain-*")
    started = float((pretrain / "attempts.txt").read_text().split()[0])
    assert all((b / "manifest.json").stat().st_mtime <= started for b in builds)


def test_results_table(smoke_run):
    table = pd.read_csv(smoke_run / "results.csv")  # no arguments, as the contract promises
    parquet = pd.read_parquet(smoke_run / "results.parquet")
    pd.testing.assert_frame_equal(table, parquet, check_dtype=False)
    assert len(table) == 8  # 4 branch ends x pycode x 2 LRs
    assert sorted(table.branch_kind.unique()) == ["control", "cpt", "midtrain"]
    assert table.notna().drop(columns="substitutes").all().all()
    for column in ["sft_val_loss", "c4_val_loss", "target_val_loss_before", "c4_val_loss_before"]:
        assert table[column].between(1, 20).all(), column
    # selected = the LR with the lowest target validation loss, one per branch end and target
    groups = table.groupby(["model", "seed", "branch_node_id", "target"])
    assert (groups.selected.sum() == 1).all()
    best = table.loc[groups.sft_val_loss.idxmin()]
    assert best.selected.all()
    # "before SFT" is the branch end, whatever the LR
    assert (groups.target_val_loss_before.nunique() == 1).all()
    control = table[table.branch_kind == "control"]
    assert (control.start_step == 24).all() and (control.tokens_midtrain == 0).all()
    assert (control.branch_node_id == control.pretrain_node_id).all()
    code = table[(table.branch_kind == "midtrain") & ~table.ablation]
    assert (code.mixture_spec == "c4:0.8+starcoder:0.2").all() and (code.weight == 0.2).all()
    assert (code.tokens_pretrain == 12 * 8 * 64).all()
    assert (code.tokens_midtrain == 12 * 8 * 64).all()
    ablation = table[table.ablation]
    assert (ablation.start_step == 18).all() and (ablation.tokens_midtrain == 6 * 8 * 64).all()
    assert table.substitutes.str.contains("Code Alpaca").all()  # pycode is a stand-in here
    assert table[table.branch_kind != "control"].substitutes.str.contains("CPython").all()
    # the values are the nodes' own: the SFT node's metrics say the same
    row = table.iloc[0]
    metrics = [
        json.loads(line)
        for line in (smoke_run / "nodes" / row.node_id / "metrics.jsonl").read_text().splitlines()
    ]
    last = [m for m in metrics if m["split"] == "val" and m["dataset"] == "pycode"][-1]
    assert last["loss"] == row.sft_val_loss
    grid = (smoke_run / "grid.yaml").read_text()
    assert "starcoder" in grid and "data_dir:" in grid


def test_dry_run_after_the_tokenizer_node_counts_sft_tokens_as_trained(smoke_run, shared_data):
    """--dry-run --out DIR counts SFT examples with the grid's trained tokenizer and the
    trainer's length filter: its SFT tokens equal what each SFT node trained (results.csv).
    Before the tokenizer node has run it says its count is approximate."""
    from proximity.training.grid.estimate import estimate
    from proximity.training.grid.plan import build_plan
    from proximity.training.grid.spec import load_grid

    plan = build_plan(load_grid("smoke"))
    tokenizer = next(n for n in plan.nodes if n.kind == "tokenizer")
    trained = smoke_run / "nodes" / tokenizer.id / "tokenizer.json"
    counts: dict = {}
    est = estimate(plan, str(shared_data), measure=False, trained_tokenizer=str(trained),
                   sft_counts=counts)  # fmt: skip
    table = pd.read_csv(smoke_run / "results.csv")
    for row in table.itertuples():
        assert est[row.node_id].tokens == row.tokens_sft
    assert counts["pycode"].how == "exact"
    before = run_grid(smoke_run, shared_data, "--dry-run", spec="smoke")
    assert "(exact)" in before.stdout
    fresh = subprocess.run(
        grid_command(smoke_run.parent / "elsewhere", "--data-dir", str(shared_data), "--dry-run"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "approximate: counted with the Pythia tokenizer" in " ".join(fresh.stdout.split())


def test_sft_nodes_score_each_validation_example_and_count_what_they_kept(smoke_run):
    """val_examples.npz holds one loss per validation example whose token-weighted mean is the
    node's reported validation loss (to float32 rounding: examples are scored one at a time,
    the mean in padded batches), and results.csv counts the examples and steps."""
    table = pd.read_csv(smoke_run / "results.csv")
    for row in table.itertuples():
        scored = np.load(smoke_run / "nodes" / row.node_id / "val_examples.npz")
        assert len(scored["loss_sum"]) == row.sft_val_examples > 0
        mean = scored["loss_sum"].sum() / scored["tokens"].sum()
        assert mean == pytest.approx(row.sft_val_loss, rel=1e-6)
    assert (table.sft_train_examples + table.sft_val_examples + table.sft_dropped <= 48).all()
    assert (table.sft_steps == table.sft_train_examples // 8).all()  # 1 epoch, batch 8


def test_pretraining_csv_puts_the_model_beside_its_n_gram_baselines(smoke_run):
    pretraining = pd.read_csv(smoke_run / "pretraining.csv")
    assert len(pretraining) == 1 and pretraining.steps.iloc[0] == 24
    row = pretraining.iloc[0]
    results = pd.read_csv(smoke_run / "results.csv")
    control = results[results.branch_kind == "control"].iloc[0]
    assert row.c4_val_loss == pytest.approx(control.c4_val_loss_before)  # the same model
    assert 0 < row.bigram_val_loss < row.unigram_val_loss < np.log(512) + 0.5
    assert row.scored_tokens == 2 * 8 * 64  # eval.max_batches x batch_size windows of seq_len


def test_rerun_skips_done_nodes_and_status_reports_them(smoke_run, shared_data):
    before = attempts(smoke_run)
    assert before and set(before.values()) == {1}
    done = run_grid(smoke_run, shared_data)
    assert "(0 now" in " ".join(done.stdout.split())
    assert attempts(smoke_run) == before
    status = subprocess.run(
        [sys.executable, "-c", CLI, "train-grid", "status", str(smoke_run)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert status.returncode == 0, status.stderr
    assert "14 done" in status.stdout  # prepare included


def _wait(predicate, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, f"grid ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)  # the grid and every worker it started
    process.wait()


def test_kill_9_inside_and_between_nodes_then_rerun_equals_uninterrupted(
    smoke_run, shared_data, tmp_path
):
    out = tmp_path / "killed"
    command = grid_command(out, "--data-dir", str(shared_data))
    logs = open(tmp_path / "log.txt", "w")  # noqa: SIM115

    def start() -> subprocess.Popen:
        return subprocess.Popen(command, stdout=logs, stderr=logs, start_new_session=True)

    def pretrain_dir() -> Path | None:
        found = list((out / "nodes").glob("pretrain-*")) if (out / "nodes").exists() else []
        return found[0] if found else None

    # 1. inside the pretraining node, once it has written a checkpoint
    grid = start()
    _wait(
        lambda: (p := pretrain_dir()) is not None and (p / "checkpoints" / "LATEST").exists(),
        grid, "a pretraining checkpoint",
    )  # fmt: skip
    _kill_group(grid)
    assert not (pretrain_dir() / "result.json").exists()
    # 2. between nodes: after the first SFT result, while others are pending
    grid = start()
    _wait(lambda: len(list(out.glob("nodes/sft-*/result.json"))) >= 1, grid, "an SFT result")
    _kill_group(grid)
    assert len(list(out.glob("nodes/sft-*/result.json"))) < 8
    # 3. the same command finishes the grid
    run_grid(out, shared_data)
    logs.close()
    resumed = pd.read_csv(out / "results.csv").drop(columns=VOLATILE)
    clean = pd.read_csv(smoke_run / "results.csv").drop(columns=VOLATILE)
    pd.testing.assert_frame_equal(resumed, clean, check_exact=True)
    # the pretraining node resumed from its checkpoint rather than starting over: its second
    # attempt logged where it continued from (an attempt that started over logs "fresh weights"
    # twice and would end equal too, since the run is deterministic)
    assert attempts(out)[pretrain_dir().name] == 2
    log = (pretrain_dir() / "log.txt").read_text()
    assert log.count("fresh weights; steps 0 -> 24") == 1
    assert re.search(r"resumed from \S+step-0*(\d+) at step \1; steps \1 -> 24", log)


def test_two_grid_processes_never_run_a_node_twice(shared_data, tmp_path):
    spec = tmp_path / "small.yaml"
    spec.write_text(
        "name: small\nmodels: [micro-2l-64]\n"
        "tokenizer: {name: train, corpus: c4, vocab_size: 512, n_docs: 300}\n"
        "data: {n_docs: 300, max_chars: 4000}\n"
        "pretrain: {steps: 12, batch_size: 8, seq_len: 64, lr: 3.0e-3, min_lr: 3.0e-4}\n"
        "sft: {targets: [pycode], lrs: [1.0e-3, 3.0e-3, 1.0e-2], epochs: 1, batch_size: 8,"
        " seq_len: 64, n_docs: 48}\n"
        "eval: {datasets: [c4], batch_size: 8, max_batches: 2}\n"
        "train_set: [system.deterministic=true]\n"
    )
    out = tmp_path / "shared"
    command = grid_command(out, "--data-dir", str(shared_data), spec=str(spec))
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for process in (first, second):
        output = process.communicate(timeout=600)[0].decode()
        assert process.returncode == 0, output[-3000:]
    counts = attempts(out)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts  # prepare included
    assert len(pd.read_csv(out / "results.csv")) == 3


def test_a_failed_node_skips_its_dependents_and_a_rerun_retries_it(shared_data, tmp_path):
    def spec_with(data: Path) -> Path:
        spec = tmp_path / f"{data.stem}.yaml"
        spec.write_text(
            "name: bad\nmodels: [micro-2l-64]\n"
            "tokenizer: {name: train, corpus: c4, vocab_size: 512, n_docs: 300}\n"
            "data: {n_docs: 300, max_chars: 4000}\n"
            "pretrain: {steps: 8, batch_size: 8, seq_len: 64, lr: 3.0e-3, min_lr: 3.0e-4}\n"
            f"mixtures: [{{name: gone, data: {data}, start_steps: [4]}}]\n"
            "sft: {targets: [pycode], lrs: [1.0e-3], epochs: 1, batch_size: 8, seq_len: 64,"
            " n_docs: 48}\n"
            "eval: {datasets: [c4], batch_size: 8, max_batches: 2}\n"
        )
        return spec

    # A file that does not exist is refused before anything runs (exit 2, no node folder).
    out = tmp_path / "bad"
    missing = run_grid(out, shared_data, spec=str(spec_with(tmp_path / "missing.jsonl")),
                       check=False)  # fmt: skip
    assert missing.returncode == 2 and "mixtures[0] (gone).data" in missing.stderr
    assert not (out / "nodes").exists()
    # One that exists but cannot be read fails its node when it runs; the rest goes on.
    broken = tmp_path / "broken.jsonl"
    broken.write_text("not json\n")
    spec = spec_with(broken)
    done = run_grid(out, shared_data, spec=str(spec), check=False)
    text = " ".join(done.stdout.split())
    assert done.returncode == 1, text
    assert "1 failed, 1 skipped" in text and "broken.jsonl:1: malformed JSON" in text
    table = pd.read_csv(out / "results.csv")
    assert list(table.branch_kind) == ["control"]  # the other branch went on
    (failed,) = out.glob("nodes/midtrain-*")
    assert (failed / "error.txt").read_text().strip()
    # the prepare node reported the unreadable data and let the rest of the grid go on
    (prepare,) = out.glob("nodes/prepare-*")
    (reported,) = json.loads((prepare / "result.json").read_text())["failed"]
    assert "broken.jsonl" in reported
    run_grid(out, shared_data, spec=str(spec), check=False)
    assert attempts(out)[failed.name] == 2  # retried


def test_node_lock_is_held_by_a_live_process_only(tmp_path):
    folder = tmp_path / "node"
    folder.mkdir()
    (folder / LOCK).write_text("12345 a-dead-host\n")  # left by a killed process
    assert not is_locked(folder)
    with node_lock(folder) as held:
        assert held
        holder = subprocess.run(
            [sys.executable, "-c", f"from proximity.training.grid.nodes import is_locked; "
             f"from pathlib import Path; print(is_locked(Path({str(folder)!r})))"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert holder.stdout.strip() == "True"
        with node_lock(folder) as again:  # flock is per open file: a second open is refused
            assert not again
    assert not is_locked(folder)


def test_status_shows_done_running_failed_and_pending_nodes(tmp_path):
    """`train-grid status` reads each node's own files: result.json (done), a held lock
    (running), error.txt (failed, with its first line), nothing (pending)."""
    import time as clock

    from typer.testing import CliRunner

    from proximity.training.grid.cli import grid_app

    out = tmp_path / "grid"
    nodes = [{"id": f"sft-{state}", "kind": "sft", "label": "gsm8k lr 1e-3"}
             for state in ("done", "running", "failed", "pending")]  # fmt: skip
    out.mkdir()
    (out / "plan.json").write_text(json.dumps({"name": "g", "nodes": nodes}))
    for node in nodes:
        (out / "nodes" / node["id"]).mkdir(parents=True)
    (out / "nodes" / "sft-done" / "result.json").write_text(json.dumps({"wall_time_s": 75}))
    (out / "nodes" / "sft-failed" / "error.txt").write_text("CUDA out of memory\ntraceback\n")
    with node_lock(out / "nodes" / "sft-running") as held:
        assert held
        clock.sleep(0.01)
        result = CliRunner().invoke(grid_app, ["status", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    cells = {
        cols[1]: cols[4:6]  # node -> (state, time)
        for cols in ([c.strip() for c in line.split("│")] for line in result.output.splitlines())
        if len(cols) > 6 and cols[1].startswith("sft-")
    }
    assert cells["sft-done"] == ["done", "1.2 min"]
    assert cells["sft-running"][0] == "running" and cells["sft-running"][1].endswith("so far")
    assert cells["sft-failed"] == ["failed", "CUDA out of memory"]
    assert cells["sft-pending"] == ["pending", ""]
    assert "1 done, 1 failed, 1 pending, 1 running" in result.output


def test_sft_nodes_rerun_alone_with_no_start_cache_equal_the_grid(smoke_run, tmp_path):
    """The grid shares start evaluations (training/start_evals.py) and runs ready nodes of one
    kind, whatever their parent, in one process. Two SFT runs of different branches, rerun
    each in a process of its own with an empty start-evaluation cache, must give the grid's
    numbers bit for bit: start and end losses, training loss, per-example losses."""
    table = pd.read_csv(smoke_run / "results.csv")
    chosen = table.groupby("branch_node_id").node_id.last().iloc[:2]  # the later LR of each
    threads = str(available_cores())  # what the grid's one job gave each node
    for node_id in chosen:
        grid_node = smoke_run / "nodes" / node_id
        alone = tmp_path / node_id
        alone.mkdir()
        node = json.loads((grid_node / "node.json").read_text())
        cache = tmp_path / f"cache-{node_id}"
        cache.mkdir()
        (cache / "tokens").symlink_to(Path(node["run_config"]["data"]["cache_dir"]))
        node["run_config"]["data"]["cache_dir"] = str(cache / "tokens")
        node["run_config"]["out_dir"] = str(alone)
        (alone / "node.json").write_text(json.dumps(node))
        done = subprocess.run(
            [sys.executable, "-m", "proximity.training.grid.worker", str(alone),
             "--threads", threads],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert (cache / "start-evaluations").is_dir()  # evaluated here, not read from the grid
        ours, grids = (json.loads((d / "result.json").read_text()) for d in (alone, grid_node))
        for key in ("val_start", "val_end", "train_loss_end", "examples", "tokens"):
            assert ours[key] == grids[key], key  # exact floats
        assert (alone / "val_examples.npz").read_bytes() == (
            grid_node / "val_examples.npz"
        ).read_bytes()
    # the grid shared: fewer start-evaluation entries than SFT runs x their two eval sets
    entries = list((smoke_run / "cache" / "start-evaluations").glob("*.json"))
    assert 0 < len(entries) < 2 * len(table)
