"""The `proximity` typer app: the root command every sub-command is added to.

A module of its own so that proximity/commands.py (which adds `similarity` and `advantage`
to it) and proximity/cli.py (which loads those and the plugin commands, then runs it) each
import it, and not each other.
"""

from __future__ import annotations

from typing import Annotated

import typer

from proximity import __version__

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
"""`-h` as well as `--help`, like most command lines; sub-commands inherit it from the root."""

app = typer.Typer(
    name="proximity",
    help="Domain proximity for language-model midtraining.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings=HELP_OPTIONS,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"proximity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """Domain proximity for language-model midtraining."""
