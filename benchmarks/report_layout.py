"""Does a report fit a 1400 px screen? Lists every table or code block wider than its column.

    python benchmarks/report_layout.py figures/study/report.html [--width 1400]

Loads the report in headless Chromium (`chromium-headless-shell` or `chromium`, e.g. Debian's
`apt install chromium-headless-shell`) with a script that compares each table's scroll width
with its visible width, and prints the ones that would need a scrollbar (their columns are off
screen). Exit 1 when any does. Not a test: CI has no browser. Print layout is checked by
`--print-to-pdf` on the same binary and looking at the pages.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>window.addEventListener('load', () => {
  const wide = [];
  document.querySelectorAll('table, pre').forEach((el) => {
    if (el.scrollWidth > el.clientWidth + 1) {
      const before = el.previousElementSibling;
      wide.push(`${el.tagName} ${el.scrollWidth}px in ${el.clientWidth}px, after: `
        + (before ? before.textContent.slice(0, 80) : ''));
    }
  });
  const out = document.createElement('div');
  // the marker is split so that the page's own source never matches it
  out.textContent = 'LAYOUT-' + 'RESULT{' + wide.join(' || ') + '}';
  document.body.appendChild(out);
});</script>"""


def browser() -> str:
    for name in ("chromium-headless-shell", "chromium", "google-chrome"):
        if shutil.which(name):
            return name
    sys.exit("no headless Chromium found: apt install chromium-headless-shell")


def too_wide(report: Path, width: int) -> list[str]:
    """The tables and code blocks of `report` wider than the page at `width` pixels."""
    with tempfile.TemporaryDirectory() as tmp:
        probed = Path(tmp) / "report.html"
        probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
        dom = subprocess.run(
            [browser(), "--no-sandbox", "--disable-gpu", f"--window-size={width},1000",
             "--dump-dom", probed.as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
    found = re.findall(r"LAYOUT-RESULT\{(.*?)\}</div>", dom, flags=re.S)
    if not found:
        sys.exit("the probe did not run (is the file an HTML report?)")
    return [line for line in found[-1].split(" || ") if line]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--width", type=int, default=1400)
    args = parser.parse_args()
    wide = too_wide(args.report, args.width)
    for line in wide:
        print(line)
    print(f"{args.report}: {len(wide)} table(s) wider than the page at {args.width} px")
    return 1 if wide else 0


if __name__ == "__main__":
    sys.exit(main())
