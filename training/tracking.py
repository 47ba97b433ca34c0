"""Optional experiment trackers behind `MetricsLog.write`: TensorBoard and Weights & Biases.

`log.tensorboard=true` writes event files (the run folder's `tensorboard/`, or `log.tb_dir`);
`log.wandb=PROJECT` logs to W&B. Both receive exactly the records metrics.jsonl gets: training
lines as `train/loss`, `train/lr`, `train/grad_norm`, `train/tokens_per_s`, `train/mfu`,
`train/tokens`; evaluations as `val/<dataset>/loss`; the x axis is the global step, so a
midtraining run continues its pretraining run's curves.

Neither may cost a run: they are optional installs (`pip install proximity[tracking]`), and a
tracker that cannot start or write is reported once on stderr and dropped while training goes
on. W&B runs offline (files under the run folder, `wandb sync` later) when `WANDB_MODE` says
so, when no API key is configured (an online start would ask for one), or when it cannot reach
the service within `INIT_TIMEOUT_S`; W&B itself buffers and retries uploads in its own process.
"""

from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

INIT_TIMEOUT_S = 30.0
EXTRA = "pip install 'proximity[tracking]'"


class Sink(Protocol):
    def write(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """(step, {tag: value}) for one metrics.jsonl record."""
    step = int(record.get("step", 0))
    if record.get("split") == "val":
        return step, {f"val/{record['dataset']}/loss": float(record["loss"])}
    out = {}
    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens"):
        value = record.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[f"train/{key}"] = float(value)
    return step, out


def warn(message: str) -> None:
    print(f"warning: {message}; training goes on without it", file=sys.stderr, flush=True)


class TensorBoardSink:
    """Event files via torch's SummaryWriter (needs the `tensorboard` package)."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # torch + an optional package

        # purge_step: a resumed run drops the events a killed attempt wrote past its checkpoint,
        # as metrics.jsonl does.
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)

    def write(self, record: dict[str, Any]) -> None:
        step, values = scalars(record)
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # a killed run keeps what it logged, like metrics.jsonl

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """One W&B run per training run; offline when there is no way to be online."""

    def __init__(self, project: str, folder: Path, run_info: dict[str, Any]) -> None:
        import wandb  # an optional package, seconds to import

        self.wandb = wandb
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")
        kwargs = dict(project=project, dir=str(folder), reinit="finish_previous", **run_info)
        settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S, quiet=True)
        try:
            self.run = wandb.init(mode=mode, settings=settings, **kwargs)
        except Exception as error:  # unreachable, refused, timed out: keep the data offline
            if mode == "offline":
                raise
            warn(f"W&B could not start online ({error}); logging offline to {folder}/wandb")
            self.run = wandb.init(mode="offline", settings=settings, **kwargs)

    def write(self, record: dict[str, Any]) -> None:
        step, values = scalars(record)
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def _has_api_key() -> bool:
    """A W&B key in the environment or ~/.netrc (what `wandb login` writes); no network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def open_sinks(log: Any, out_dir: Path, config: dict[str, Any], start_step: int) -> list[Sink]:
    """The trackers `log` (a LogConfig) asks for; one that cannot start is warned about and
    left out (a missing package names the extra to install)."""
    sinks: list[Sink] = []
    if log.tensorboard:
        folder = Path(log.tb_dir) if log.tb_dir else out_dir / "tensorboard"
        sinks += _start("TensorBoard", "tensorboard", lambda: TensorBoardSink(folder, start_step))
    if log.wandb:
        info = {"group": log.group, "job_type": log.job_type, "name": log.name, "config": config}
        sinks += _start("W&B", "wandb", lambda: WandbSink(log.wandb, out_dir, info))
    return sinks


def _start(what: str, package: str, make) -> list[Sink]:
    try:
        return [make()]
    except ImportError as error:
        if package not in str(error):
            warn(f"{what} logging could not start ({error})")
        else:
            warn(f"{what} logging needs the {package} package ({EXTRA})")
    except Exception as error:
        warn(f"{what} logging could not start ({type(error).__name__}: {error})")
    return []
