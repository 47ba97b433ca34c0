"""The `proximity` command line.

The app itself is proximity/app.py's; the core commands (proximity/commands.py) add
themselves to it, and commands from other packages (`training`, `analysis`) register through
the `proximity.commands` entry-point group, so the core package never imports them (no
upward imports).
"""

from __future__ import annotations

import sys

import typer

from proximity.app import HELP_OPTIONS, app
from proximity.errors import ProximityError

# A plugin package's own console script uses HELP_OPTIONS and run_app from here.
__all__ = ["CORE_COMMANDS", "HELP_OPTIONS", "app", "main", "run_app"]


def _err_console():
    """rich, for the few messages that need it: `import proximity.cli` (help, --version, every
    command's start) does not pay for it (~40 ms)."""
    from rich.console import Console  # ~40 ms, kept off help and --version

    return Console(stderr=True)


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
    """Add `similarity` and `advantage` (importing proximity.commands adds them to the app)."""
    # Imported here: commands loads rich and pandas (~0.5 s), which a plugin's own console
    # script (`python -m proximity.training.cli`, for run_app) must not pay for.
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
        from rich.markup import escape  # rich: only when there is an error to print

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
