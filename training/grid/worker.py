"""Run grid nodes in this process:
`python -m proximity.training.grid.worker NODE_DIR... [--threads N]`.

The local executor and Slurm jobs both launch this. It takes the node's lock (exit 75 if another
process holds it), resumes from the node's own latest checkpoint when a killed attempt left one
(the trainer resumes bitwise on CPU), and writes result.json atomically as the very last step.
A failure writes error.txt (first line: the error) and exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from proximity.data import load_texts
from proximity.errors import ProximityError
from proximity.training.config import RunConfig
from proximity.training.grid.nodes import (
    ATTEMPTS,
    ERROR,
    NODE_FILE,
    RESULT,
    node_lock,
    write_json_atomic,
)
from proximity.training.tokenizer_training import save_tokenizer, train_tokenizer

EXIT_BUSY = 75  # another process runs this node (EX_TEMPFAIL)
CPUS_PER_PREPARE_WORKER = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("node_dirs", type=Path, nargs="+")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    codes = [run_one(folder.resolve(), args.threads) for folder in args.node_dirs]
    return max(codes, key=lambda code: (code != 0, code))


def global_rank() -> int:
    """This process's rank under torchrun (RANK), else 0."""
    return int(os.environ.get("RANK", "0"))


def run_one(folder: Path, threads: int | None) -> int:
    """One node, under its lock. Several per process share the cost of importing torch.

    Under torchrun (a DDP node, e.g. a multi-GPU Slurm job) rank 0 owns the node's files (lock,
    attempts, error, result); the other ranks only train alongside it.
    """
    if global_rank() != 0:
        return _run_as_follower(folder, threads)
    with node_lock(folder) as held:
        if not held:
            print(f"{folder.name}: another process runs this node", file=sys.stderr)
            return EXIT_BUSY
        if (folder / RESULT).exists():
            return 0
        (folder / ERROR).unlink(missing_ok=True)
        node = json.loads((folder / NODE_FILE).read_text())
        print(f"== {node['id']}: {node['label']}", flush=True)
        with (folder / ATTEMPTS).open("a") as attempts:  # one line per run of this node
            attempts.write(f"{time.time():.3f} pid {os.getpid()} {os.uname().nodename}\n")
        try:
            result = run_node(node, folder, threads)
        except (Exception, KeyboardInterrupt) as error:
            message = str(error) if isinstance(error, ProximityError) else repr(error)
            (folder / ERROR).write_text(f"{message}\n\n{traceback.format_exc()}")
            print(f"error: {message}", file=sys.stderr, flush=True)
            if isinstance(error, KeyboardInterrupt):
                raise
            return 2 if isinstance(error, ProximityError) else 1
        if result is None:
            return 3  # stopped early on purpose (train.max_steps_this_run); rerun resumes
        write_json_atomic(folder / RESULT, result)
    return 0


def _run_as_follower(folder: Path, threads: int | None) -> int:
    """A rank > 0 of a DDP node: train with rank 0, write nothing of the node's own files."""
    if (folder / RESULT).exists():
        return 0
    node = json.loads((folder / NODE_FILE).read_text())
    try:
        run_node(node, folder, threads)
    except Exception as error:
        print(f"error (rank {global_rank()}): {error!r}", file=sys.stderr, flush=True)
        return 2 if isinstance(error, ProximityError) else 1
    return 0


def run_node(node: dict[str, Any], folder: Path, threads: int | None) -> dict[str, Any] | None:
    started = time.perf_counter()
    if node["kind"] == "tokenizer":
        result = _tokenizer(node, folder)
    elif node["kind"] == "prepare":
        result = _prepare(node, threads)
    else:
        result = _training(node, folder, threads)
        if result is None:
            return None
    return {
        "id": node["id"],
        "kind": node["kind"],
        **result,
        "wall_time_s": round(time.perf_counter() - started, 3),
    }


def _tokenizer(node: dict[str, Any], folder: Path) -> dict[str, Any]:
    s = node["settings"]
    texts = list(
        load_texts(
            s["corpus"], n_docs=s["n_docs"], max_chars=s["max_chars"], data_dir=node.get("data_dir")
        )
    )
    tokenizer = train_tokenizer(texts, s["vocab_size"])
    save_tokenizer(tokenizer, folder, info={**s, "n_texts": len(texts)})
    return {"vocab_size": tokenizer.get_vocab_size(with_added_tokens=True)}


def _prepare(node: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """Tokenise what every training node of the grid reads into the shared token cache
    (`proximity train prepare` for each distinct data setting; finished builds are reused).

    One tokenising process per CPUS_PER_PREPARE_WORKER CPUs of the job (each runs a Rust
    thread pool; on 2 cores one process is fastest, measured), at least data.prepare_workers.
    A setting whose data cannot be read is reported and left out, not fatal: the nodes that
    read it fail with that error when they run, and the rest of the grid goes on.
    """
    from proximity.training.data.prepare import (
        prepare_run,  # torch: a tokenizer node's worker never needs it
    )

    builds, failed = {}, []
    for settings in node["run_configs"]:
        cfg = RunConfig.from_dict(settings)
        workers = max(cfg.data.prepare_workers, (threads or 1) // CPUS_PER_PREPARE_WORKER)
        try:
            for build in prepare_run(cfg, workers=workers, progress=False):
                builds[str(build.directory)] = build.manifest["n_train_tokens"]
        except ProximityError as error:
            failed.append(f"{cfg.phase} {cfg.data.train}: {error}")
            print(f"prepare: {failed[-1]} (the nodes that read it will fail)", file=sys.stderr)
    return {"builds": len(builds), "train_tokens": sum(builds.values()), "failed": failed}


def _training(node: dict[str, Any], folder: Path, threads: int | None) -> dict[str, Any] | None:
    # torch: a tokenizer node's worker never needs it
    from proximity.training.checkpoint import latest_checkpoint
    from proximity.training.loop import train
    from proximity.training.metrics_log import read_metrics

    overrides = [f"system.threads={threads}"] if threads else []
    cfg = RunConfig.from_dict(node["run_config"], overrides)
    main = global_rank() == 0  # under torchrun only rank 0 touches the node's files
    if main and latest_checkpoint(folder / "checkpoints") is None:
        (folder / "metrics.jsonl").unlink(missing_ok=True)  # a killed attempt's partial lines
    # Resume or not is rank 0's decision, broadcast inside the loop: a rank whose view of a
    # shared filesystem lags must not start fresh while rank 0 resumes.
    run = train(cfg, resume=None)
    if not run.finished or not main:
        return None  # a rank > 0 stops here: rank 0 may still be writing the metrics it reads
    records = [r for r in read_metrics(folder / "metrics.jsonl") if r.get("phase") == cfg.phase]
    val = [r for r in records if r.get("split") == "val"]
    first, last = min(r["step"] for r in val), max(r["step"] for r in val)
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_len
    if node["kind"] == "sft" and not node.get("keep_checkpoints", False):
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)  # nothing branches from SFT
    return {
        "start_step": first,
        "end_step": last,
        "tokens": (last - first) * tokens_per_step,
        "val_start": {r["dataset"]: r["loss"] for r in val if r["step"] == first},
        "val_end": {r["dataset"]: r["loss"] for r in val if r["step"] == last},
        "train_loss_end": run.train_loss,
        **({"examples": run.data_counts} if run.data_counts else {}),
    }


if __name__ == "__main__":
    sys.exit(main())
