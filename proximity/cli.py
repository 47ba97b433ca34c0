"""The `proximity` command line.

Core commands live here; commands from other packages (`training`, `analysis`)
register through the `proximity.commands` entry-point group, so the core package
never imports them (no upward imports).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from proximity import __version__
from proximity.errors import ProximityError

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


def _err_console():
    """rich, for the few messages that need it: `import proximity.cli` (help, --version, every
    command's start) does not pay for it (~40 ms)."""
    from rich.console import Console

    return Console(stderr=True)


CORE_COMMANDS = ("similarity", "advantage")


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


def _register_plugins() -> None:
    """Add the sub-apps that other installed packages declare."""
    # Imported here: importlib.metadata costs ~40 ms, and core commands never need it.
    from importlib.metadata import entry_points

    for entry in entry_points(group="proximity.commands"):
        try:
            sub_app = entry.load()
        except ImportError as error:
            # A broken optional part (e.g. training without torch) must not take down
            # `proximity similarity`; say what is missing instead.
            _err_console().print(
                f"[yellow]warning:[/] `proximity {entry.name}` unavailable: {error}"
            )
            continue
        command = _single_command(sub_app)
        if command is not None:
            # A one-command app (its callback is the command): register the function itself, so
            # `--help` reads `proximity correlate RUNS_DIR [OPTIONS]`, not `... COMMAND [ARGS]`.
            app.command(
                name=entry.name,
                help=command.help or sub_app.info.help,
                context_settings=command.context_settings or sub_app.info.context_settings,
            )(command.callback)
        else:
            app.add_typer(sub_app, name=entry.name)


def _single_command(sub_app: typer.Typer) -> typer.models.TyperInfo | None:
    """The callback of an app that has no sub-commands, else None."""
    callback = sub_app.registered_callback
    if callback is None or sub_app.registered_commands or sub_app.registered_groups:
        return None
    return callback


def _register_core_commands() -> None:
    # Imported here so `proximity --help` stays fast and each module registers itself.
    from proximity import commands  # noqa: F401


def run_app(typer_app: typer.Typer) -> None:
    """Run a typer app as a console script: usage errors as click shows them, `ProximityError`
    as one line, both with exit status 2 and no traceback.

    Standalone mode lets typer itself print a usage error (the usage line, a hint and the
    message) and exit 2; that works whichever click typer uses (typer 0.28 bundles its own
    copy as `typer._click`, whose exceptions `click.ClickException` does not catch).
    `ProximityError` is ours, so typer lets it through to here.
    """
    try:
        typer_app(standalone_mode=True)
    except ProximityError as error:
        from rich.markup import escape

        # escaped, no emoji codes: `[x]` and `:abc:` in a message are the user's own text
        message = escape(str(error))
        _err_console().print(
            f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, emoji=False
        )
        sys.exit(2)


def main() -> None:
    """Console-script entry: `proximity ...` with its plugin commands registered."""
    _register_core_commands()
    if len(sys.argv) < 2 or sys.argv[1] not in (*CORE_COMMANDS, "--version"):
        _register_plugins()  # a core command runs without importing the others (~50 ms)
    run_app(app)
