"""`proximity train pretrain|midtrain|sft`: run one phase from a YAML config.

    proximity train pretrain --config configs/micro-pretrain.yaml --set optim.lr=1e-3
    proximity train midtrain --config configs/micro-midtrain.yaml --out runs/mid-code
    proximity train sft --config configs/micro-sft.yaml --resume
    proximity train keys          # every settable key

Also runnable as `python -m training.cli ...`, which is what torchrun launches (see loop.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from training.config import RunConfig, config_fields

train_app = typer.Typer(
    help="Pretrain, midtrain and fine-tune Pythia-style models (see configs/).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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


def _run(phase: str, config: Path, overrides: list[str] | None, resume: bool, out: Path | None):
    from training.loop import train

    extra = [f"phase={phase}", *(overrides or [])]
    if out is not None:
        extra.append(f"out_dir={out}")
    cfg = RunConfig.from_yaml(config, extra)
    result = train(cfg, resume=resume)
    if not result.finished:
        raise typer.Exit(3)  # stopped early on purpose (train.max_steps_this_run)


@train_app.command()
def pretrain(
    config: ConfigOption,
    set_: SetOption = None,
    resume: ResumeOption = False,
    out: OutOption = None,
) -> None:
    """Pretrain from scratch (or from model.init_from) for train.tokens or train.steps."""
    _run("pretrain", config, set_, resume, out)


@train_app.command()
def midtrain(
    config: ConfigOption,
    set_: SetOption = None,
    resume: ResumeOption = False,
    out: OutOption = None,
) -> None:
    """Continue a pretraining checkpoint (model.init_from) on a new mixture, same final step."""
    _run("midtrain", config, set_, resume, out)


@train_app.command()
def sft(
    config: ConfigOption,
    set_: SetOption = None,
    resume: ResumeOption = False,
    out: OutOption = None,
) -> None:
    """Fine-tune a checkpoint on a target dataset (data.train) for train.epochs."""
    _run("sft", config, set_, resume, out)


@train_app.command()
def keys() -> None:
    """List every config key that --set and the YAML files accept, with its default."""
    defaults = RunConfig().to_dict()
    for key in config_fields():
        value = defaults
        for part in key.split("."):
            value = value[part]
        typer.echo(f"{key} = {value!r}")


def main() -> None:
    """`python -m training.cli`: the same one-line errors as the `proximity` command."""
    import sys

    import click

    from proximity.errors import ProximityError

    try:
        train_app(standalone_mode=False)
    except ProximityError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.ClickException as error:  # usage errors, in non-standalone mode
        error.show()
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
