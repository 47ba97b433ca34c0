"""The `proximity` command line.

Core commands live here; commands from other packages (`training`, `analysis`)
register through the `proximity.commands` entry-point group, so the core package
never imports them (no upward imports).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from proximity.errors import ProximityError

app = typer.Typer(
    name="proximity",
    help="Domain proximity for language-model midtraining.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
CORE_COMMANDS = ("similarity", "advantage")


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
            err_console.print(f"[yellow]warning:[/] `proximity {entry.name}` unavailable: {error}")
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


def main() -> None:
    """Console-script entry: run the app, turning `ProximityError` into one line."""
    _register_core_commands()
    if len(sys.argv) < 2 or sys.argv[1] not in CORE_COMMANDS:
        _register_plugins()  # a core command runs without importing the others (~50 ms)
    try:
        app(standalone_mode=False)
    except ProximityError as error:
        err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exit_:
        sys.exit(exit_.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(130)
    except Exception as error:  # click usage errors arrive here in non-standalone mode
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        raise
