"""What every JSON record of a command starts with: the command, how it was called, the
version that ran it and when.

`proximity similarity` / `advantage` (similarity.json, advantage.json) and `proximity
correlate` (statistics.json) write it first, so any record says what made it; `proximity
report` quotes the version, the time and the argv back.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from proximity import __version__


def provenance(command: str) -> dict[str, Any]:
    """`command`, `argv`, `proximity_version` and `created` (local time with its offset)."""
    return {
        "command": command,
        "argv": sys.argv,
        "proximity_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
