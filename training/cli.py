"""`proximity train pretrain|midtrain|sft`: run one phase from a YAML config.

    proximity train pretrain --config configs/micro-pretrain.yaml --set optim.lr=1e-3
    proximity train midtrain --config configs/micro-midtrain.yaml --out runs/mid-code
    proximity train sft --config configs/micro-sft.yaml --resume
    proximity train keys          # every settable key
    proximity train prepare c4 --tokenizer pythia --out data/tokens --workers 8

Also runnable as `python -m proximity.training.cli ...`, which is what torchrun launches (see
loop.py).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

from proximity.app import HELP_OPTIONS
from proximity.cli import run_app
from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.config import RunConfig, config_fields, field_help

train_app = typer.Typer(
    help="Pretrain, midtrain and fine-tune Pythia-style models (see configs/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # `python -m proximity.training.cli -h` as well as `proximity train -h`
    context_settings=HELP_OPTIONS,
)

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="YAML run configuration.")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a config field: section.key=value (repeatable)."),
]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue from the latest checkpoint in the output folder.")
]
OutOption = Annotated[
    Path | None, typer.Option("--out", "-o", help="Output folder (overrides out_dir).")
]


PHASES = {
    "pretrain": "Pretrain from scratch (or from model.init_from) for train.tokens or train.steps.",
    "midtrain": "Continue a pretraining checkpoint (model.init_from) on a new mixture, same final "
    "step.",
    "sft": "Fine-tune a checkpoint on a target dataset (data.train) for train.epochs.",
}


def _phase_command(phase: str) -> None:
    """Register `proximity train PHASE`: the three phases differ only in `phase=` (one loop)."""

    def command(
        config: ConfigOption,
        set_: SetOption = None,
        resume: ResumeOption = False,
        out: OutOption = None,
    ) -> None:
        extra = [f"phase={phase}", *(set_ or [])]
        if out is not None:
            extra.append(f"out_dir={out}")
        cfg = RunConfig.from_yaml(config, extra)  # a config error is reported before torch loads
        from proximity.training.loop import train  # torch: seconds to import

        result = train(cfg, resume=resume)
        if not result.finished:
            raise typer.Exit(3)  # stopped early on purpose (train.max_steps_this_run)

    writes = "Writes config.yaml, metrics.jsonl and checkpoints/ into out_dir (--out)."
    command.__doc__ = f"{PHASES[phase]}\n\n{writes}"
    train_app.command(phase)(command)


for _phase in PHASES:
    _phase_command(_phase)


@train_app.command()
def prepare(
    spec: Annotated[
        str | None, typer.Argument(help="Dataset spec or mixture (e.g. c4:0.8+starcoder:0.2).")
    ] = None,
    tokenizer: Annotated[
        str, typer.Option("--tokenizer", "-t", help="pythia, a tokenizer.json, or a hub name.")
    ] = "pythia",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder of builds (a run's data.cache_dir)."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Tokenising processes.")] = 1,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Prepare everything this run config reads instead."),
    ] = None,
    set_: SetOption = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Local data folder (else the hub).")
    ] = None,
    n_docs: Annotated[int | None, typer.Option("--n-docs", help="Documents to read.")] = None,
    max_chars: Annotated[
        int | None, typer.Option("--max-chars", help="Cut each document to this many chars.")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Documents held out (data.val_fraction).")
    ] = 0.05,
) -> None:
    """Tokenise datasets into memory-mapped builds before training (resumable, parallel).

    Writes one build folder per dataset under --out (with --config: the run's data.cache_dir).
    """
    from proximity.training.data import (
        prepare as preparing,  # torch (SFT data): seconds, off `train --help`
    )

    if workers < 1:
        raise ProximityError(f"--workers must be at least 1, got {workers}")
    if config is not None:
        extra = [*(set_ or []), *([f"data.cache_dir={out}"] if out else [])]
        builds = preparing.prepare_run(RunConfig.from_yaml(config, extra), workers)
    elif spec is not None and out is not None:
        builds = preparing.prepare(
            spec, load_tokenizer(tokenizer, data_dir=data_dir), out, workers=workers,
            data_dir=data_dir, n_docs=n_docs, max_chars=max_chars, val_fraction=val_fraction,
        )  # fmt: skip
    else:
        raise ProximityError("prepare needs SPEC and --out, or --config")
    for build in builds:
        typer.echo(
            f"{build.manifest['spec']}: {build.manifest['n_train_tokens']:,} train / "
            f"{build.manifest['n_val_tokens']:,} val tokens in {build.directory}"
        )


@train_app.command()
def keys() -> None:
    """List every config key that --set and the YAML files accept, its default and meaning.

    Prints only; writes nothing.
    """
    defaults = RunConfig().to_dict()
    helps = field_help()
    for key in config_fields():
        value = defaults
        for part in key.split("."):
            value = value[part]
        typer.echo(f"{key} = {value!r}")
        for line in textwrap.wrap(helps.get(key, ""), 92):
            typer.echo(f"    {line}")


def main() -> None:
    """`python -m proximity.training.cli`: the same usage and one-line errors as the `proximity`
    command."""
    run_app(train_app)


if __name__ == "__main__":
    main()
