"""The JSONL metrics file every phase appends to (one line per step and dataset).

`{"phase": "midtrain", "step": 400, "tokens": 3276800, "split": "val", "dataset": "c4",
  "loss": 4.81, "lr": 0.00031}`; training lines have `"split": "train"` plus tokens_per_s (and
mfu on GPUs). docs/RESULTS.md is the contract the analysis reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from proximity.training.tracking import open_sinks, warn


class MetricsLog:
    """Append-only JSONL; each line is flushed so a killed run keeps what it measured."""

    def __init__(self, path: Path, enabled: bool = True, tracking: Any = None):
        """`tracking`: the run's RunConfig when its `log` section asks for TensorBoard or W&B
        (training/tracking.py); they get every record written here, started on the first."""
        self.path = path
        self.enabled = enabled
        self.tracking = tracking if enabled else None
        self.sinks: list[Any] | None = None
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, phase: str, step: int, *, redo_evals_at_step: bool = False) -> None:
        """Cut the tail that will be written again: `phase`'s lines past `step` (a killed run's
        work after its last checkpoint), and with `redo_evals_at_step` its evaluations AT `step`
        too (a finished run resumed evaluates its end again). A fresh start at step s passes
        s - 1, so a killed attempt's lines from s on go.

        The file is never rewritten: lines are only appended, and this cuts it in place
        (`os.truncate`) at the first such line or the first line cut short by a kill, so every
        line before it keeps its bytes.
        """
        if not (self.enabled and self.path.exists()):
            return

        def _redone(record: dict[str, Any]) -> bool:
            at = record.get("step", 0)
            return at > step or (redo_evals_at_step and at == step and record.get("split") == "val")

        offset = 0
        with self.path.open("rb") as file:
            for raw in file:
                try:
                    record = json.loads(raw)
                    complete = raw.endswith(b"\n")
                except (json.JSONDecodeError, UnicodeDecodeError):
                    complete = False
                if not complete or (record.get("phase") == phase and _redone(record)):
                    break
                offset += len(raw)
        os.truncate(self.path, offset)

    def write(self, **record: Any) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        for sink in self._sinks(record):
            try:
                sink.write(record)
            except Exception as error:  # a tracker never stops training
                warn(f"{type(sink).__name__} failed ({type(error).__name__}: {error})")
                self.sinks.remove(sink)

    def _sinks(self, first: dict[str, Any]) -> list[Any]:
        if self.sinks is None:
            self.sinks = []
            cfg = self.tracking
            if cfg is not None and (cfg.log.tensorboard or cfg.log.wandb):
                start = int(first.get("step", 0))
                self.sinks = open_sinks(cfg.log, Path(cfg.out_dir), cfg.to_dict(), start)
        return list(self.sinks)

    def close(self) -> None:
        """Finish the trackers (W&B uploads or writes its offline files here)."""
        for sink in self.sinks or []:
            try:
                sink.close()
            except Exception as error:
                warn(f"{type(sink).__name__} did not close cleanly ({error})")
        self.sinks = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
