"""What a command imports: the start-up of every `proximity` call and the cached rerun of
`proximity similarity` (issue 18: >= 50x the authors' script, where most of the time is
imports) must not load libraries they do not use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("pandas", "rich", "matplotlib", "torch", "scipy", "sklearn", "training", "analysis")


def _loaded(code: str, env: dict[str, str] | None = None) -> set[str]:
    """Top-level packages among HEAVY that `code` leaves in sys.modules (printed at exit)."""
    probe = (
        "import atexit, sys\n"
        f"atexit.register(lambda: print('LOADED', *sorted({{m.split('.')[0] for m in "
        f"sys.modules}} & set({HEAVY!r}))))\n" + code
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("LOADED")]
    return set(line.split()[1:])


def test_importing_the_cli_loads_no_heavy_library():
    assert _loaded("import proximity.cli") == set()


def test_the_cached_similarity_rerun_loads_no_plotting(shared_data: Path, tmp_path: Path):
    import os

    env = {**os.environ, "PROXIMITY_DATA_DIR": str(shared_data),
           "PROXIMITY_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}  # fmt: skip
    args = ["similarity", "c4", "gsm8k", "--n-docs", "20", "--out", str(tmp_path / "out")]
    command = (
        f"import sys; sys.argv = ['proximity', *{args!r}]\nfrom proximity.cli import main\nmain()"
    )
    assert "matplotlib" in _loaded(command, env)  # the first run draws the figure
    # the rerun: the figure is up to date, so neither it nor --no-plot imports matplotlib;
    # the printed table needs rich and the matrix pandas
    assert _loaded(command, env) == {"pandas", "rich"}
    no_plot = command.replace("'--out'", "'--no-plot', '--out'")
    assert _loaded(no_plot, env) == {"pandas", "rich"}
