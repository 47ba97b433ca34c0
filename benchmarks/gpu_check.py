"""First contact with a GPU: one prepared check of the trainer, a verdict per item (issue 19).

    make gpu-check                      # on a GPU node: outputs/gpu-check/ (GPU_CHECK_OUT=...)
    make gpu-check DEVICE=cpu           # the CPU rehearsal that CI runs (tiny settings)
    python benchmarks/gpu_check.py --device cuda --out DIR [--items speed,memory]
        [--budget speed=240] [--data-dir ../shared/data]

Why: everything CUDA-only in the trainer (NCCL, bf16 autocast, pinned asynchronous copies, CUDA
RNG, cuBLAS determinism, fused AdamW, torch.compile, MFU against a real peak) was written from
documentation. A GPU may be lent for minutes: this check is ready, rehearsed, and fits 8 minutes
on one H100. Items (benchmarks/gpu_check_items.py):

    e2e     the smoke grid (every node kind) with bf16 and torch.compile; results written
    resume  a run stopped and resumed in a fresh process equals the uninterrupted run, bitwise
    speed   Pythia-160M and -70M at 2,048 tokens: ours vs transformers.Trainer vs a bare loop
    data    prepared-shard reading + batching >= 5x what the GPU consumes at 160M
    ddp     torchrun with N = GPUs present (NCCL): losses equal the single-process run
    memory  peak memory per size; the largest micro-batch that fits at 160M

Each item runs in its own process (a CUDA fault or a hung collective cannot take the others
down) inside a time box (its process group is killed at the limit); its figures are written as
they are measured, so a timed-out item still shows how far it got. Results: `results.json`,
`results.md` and `logs/<item>.log` under --out; the table is printed at the end. Exit status 1
when any item fails. The default boxes sum to 470 s on a GPU (time an item leaves unused goes to
the next); they were sized without a GPU to try them on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
PASS, FAIL, SKIPPED = "pass", "fail", "skipped"
NEEDS_CUDA = "needs CUDA"


@dataclass(frozen=True)
class Item:
    key: str
    title: str
    needs_cuda: bool
    gpu_box_s: int  # the time box on a GPU (all of them together fit 8 minutes)
    cpu_box_s: int  # the time box of the CPU rehearsal (a slow, shared CI machine)


ITEMS: tuple[Item, ...] = (
    Item("e2e", "End to end: the smoke grid", False, 155, 300),
    Item("resume", "Exact resume in a fresh process", False, 40, 180),
    Item("speed", "Speed: ours vs Trainer vs bare loop", False, 175, 240),
    Item("data", "Data path >= 5x the GPU's consumption", False, 15, 120),
    Item("ddp", "DDP under torchrun", False, 40, 180),
    Item("memory", "Peak memory; largest micro-batch", True, 45, 60),
)
BY_KEY = {item.key: item for item in ITEMS}
GPU_TOTAL_S = 480  # the whole check on a GPU: 8 minutes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("GPU_CHECK_OUT", "outputs/gpu-check")),
        help="results folder (default: $GPU_CHECK_OUT, else outputs/gpu-check)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("PROXIMITY_DATA_DIR"),
        help="local data folder: C4 and the Pythia tokenizer (default: $PROXIMITY_DATA_DIR)",
    )
    parser.add_argument(
        "--items", default=",".join(BY_KEY), help=f"comma-separated subset of {', '.join(BY_KEY)}"
    )
    parser.add_argument(
        "--budget",
        action="append",
        default=[],
        metavar="ITEM=SECONDS",
        help="replace an item's time box (repeatable), e.g. speed=300 on a slower GPU",
    )
    parser.add_argument(
        "--ddp-procs",
        type=int,
        default=None,
        help="ranks for the ddp item (default: the GPUs present; 2 gloo ranks on cpu)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.selected = _parse_items(args.items)
    args.boxes = _parse_budgets(args.budget, args.device)
    if args.ddp_procs is not None and args.ddp_procs < 1:
        parser.error(f"--ddp-procs must be at least 1, got {args.ddp_procs}")
    return args


def _parse_items(text: str) -> list[str]:
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown or not keys:
        raise SystemExit(
            f"error: --items {text!r}: unknown item {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(BY_KEY)}"
        )
    return keys


def _parse_budgets(entries: list[str], device: str) -> dict[str, float]:
    boxes = {i.key: float(i.gpu_box_s if device == "cuda" else i.cpu_box_s) for i in ITEMS}
    for entry in entries:
        key, _, seconds = entry.partition("=")
        try:
            value = float(seconds)
        except ValueError:
            value = -1.0
        if key not in BY_KEY or value <= 0:
            raise SystemExit(
                f"error: --budget {entry!r}: expected ITEM=SECONDS with ITEM one of "
                f"{', '.join(BY_KEY)} and SECONDS > 0"
            )
        boxes[key] = value
    return boxes


# ---- the parent: run each item in its own process, inside its box ----------------------------


def _child_command(args: argparse.Namespace, key: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", key]
    command += ["--device", args.device, "--out", str(args.out)]
    if args.data_dir:
        command += ["--data-dir", str(args.data_dir)]
    if args.ddp_procs:
        command += ["--ddp-procs", str(args.ddp_procs)]
    return command


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else "(no output)"


def run_item(item: Item, args: argparse.Namespace, box_s: float) -> dict:
    """One item in a fresh process group, killed whole (grid workers, torchrun ranks) at the
    end of its box. Its result file is read even then: the figures measured so far stay."""
    result_path = args.out / "items" / f"{item.key}.json"
    result_path.unlink(missing_ok=True)  # never report a previous run's figures
    log = args.out / "logs" / f"{item.key}.log"
    started, cpu_before = time.perf_counter(), _children_cpu_s()
    with log.open("w") as stream:
        process = subprocess.Popen(
            _child_command(args, item.key),
            stdout=stream,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the box ends all of it
        )
        try:
            code = process.wait(timeout=box_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            code, timed_out = process.wait(), True
    seconds, cpu_s = time.perf_counter() - started, _children_cpu_s() - cpu_before
    result = json.loads(result_path.read_text()) if result_path.exists() else {}
    if timed_out:
        result.update(
            verdict=FAIL,
            reason=f"timed out: its box is {box_s:.0f} s (--budget {item.key}=SECONDS); "
            "figures measured before the limit are kept",
        )
    elif code != 0 or "verdict" not in result:
        result.update(verdict=FAIL, reason=f"exited with status {code}: {_last_line(log)}")
    return {
        "key": item.key,
        "title": item.title,
        **result,
        "seconds": round(seconds, 1),
        "cpu_s": round(cpu_s, 1),  # its processes' CPU time: the cost on a shared machine
        "box_s": box_s,
        "log": str(log),
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _not_run(item: Item, reason: str) -> dict:
    return {"key": item.key, "title": item.title, "verdict": SKIPPED, "reason": reason}


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every item in order; one that fails (or hangs) never stops the next. On a GPU the whole
    check ends within GPU_TOTAL_S, and the time an item leaves unused goes to the next ones."""
    deadline = time.perf_counter() + GPU_TOTAL_S if args.device == "cuda" else None
    results, banked = [], 0.0
    for item in ITEMS:
        if item.key not in args.selected:
            results.append(_not_run(item, "not selected (--items)"))
        elif item.needs_cuda and args.device != "cuda":
            results.append(_not_run(item, f"{NEEDS_CUDA} (the CPU rehearsal)"))
        else:
            box = args.boxes[item.key]
            if deadline is not None:
                box = min(box + banked, deadline - time.perf_counter())
            if box < 5:
                results.append(_not_run(item, f"no time left in the {GPU_TOTAL_S} s check"))
            else:
                print(f"[gpu-check] {item.key}: {item.title} (box {box:.0f} s)", flush=True)
                results.append(run_item(item, args, box))
                banked = max(0.0, box - results[-1]["seconds"])
        print(f"[gpu-check] {item.key}: {_verdict_text(results[-1])}", flush=True)
    return results


# ---- the report: results.json, results.md and the printed table -------------------------------


def _verdict_text(result: dict) -> str:
    return f"{result['verdict']}: {result.get('reason', '')}".rstrip(": ")


def environment(results: list[dict], args: argparse.Namespace) -> dict:
    """The machine, as the first item that ran saw it (the parent never touches CUDA)."""
    seen = next((r["environment"] for r in results if r.get("environment")), {})
    return {
        "device": args.device,
        "host": platform.node(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        **seen,
    }


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value).replace("|", "/")


def markdown(report: dict) -> str:
    env = report["environment"]
    where = env.get("gpu_name") or f"CPU rehearsal ({env.get('cpu_count')} cores)"
    lines = [
        f"# GPU check: {where}",
        "",
        f"{report['started']}, {report['wall_s']:.0f} s in all; torch {env.get('torch', '?')}, "
        f"CUDA {env.get('cuda') or 'none'}, {env.get('gpu_count', 0)} GPU(s), host "
        f"{env['host']}.",
        "",
        "| # | item | verdict | why / figures | time |",
        "|---|------|---------|---------------|------|",
    ]
    for number, r in enumerate(report["items"], 1):
        seconds = f"{r['seconds']:.0f} s" if "seconds" in r else ""
        lines.append(
            f"| {number} | {r['title']} | **{r['verdict']}** | {_cell(r.get('reason', ''))} "
            f"| {seconds} |"
        )
    for number, r in enumerate(report["items"], 1):
        if not (r.get("figures") or r.get("rows") or r.get("notes")):
            continue
        lines += ["", f"## {number}. {r['title']}", ""]
        for name, value in r.get("figures", {}).items():
            lines.append(f"- {name}: {_cell(value)}")
        rows = r.get("rows", [])
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            for row in rows:
                lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
        for note in r.get("notes", []):
            lines += ["", f"Note: {note}"]
    return "\n".join(lines) + "\n"


def table(report: dict) -> str:
    rows = [("#", "item", "verdict", "time", "why / figures")]
    for number, r in enumerate(report["items"], 1):
        seconds = f"{r['seconds']:.0f} s" if "seconds" in r else "-"
        rows.append((str(number), r["title"], r["verdict"], seconds, r.get("reason", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True))
        + "  "
        + row[4]
        for row in rows
    )


def write_report(results: list[dict], args: argparse.Namespace, started: float) -> dict:
    from proximity.atomic import write_text_atomic

    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
        "environment": environment(results, args),
        "items": results,
    }
    write_text_atomic(args.out / "results.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(args.out / "results.md", markdown(report))
    return report


def _check_cuda_visible() -> None:
    # is_available() and device_count() do not create a CUDA context: the parent holds no GPU
    # memory while the items run.
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            f"error: --device cuda: no CUDA GPU is visible to torch {torch.__version__} "
            f"(CUDA build: {torch.version.cuda or 'none'}); on a CPU machine run the "
            "rehearsal: make gpu-check DEVICE=cpu"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out = args.out.resolve()
    if args.child:
        sys.path.insert(0, str(HERE))
        from gpu_check_items import run_child

        return run_child(args)
    if args.device == "cuda":
        _check_cuda_visible()
    (args.out / "items").mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = write_report(run_all(args), args, started)
    print()
    print(table(report))
    print(f"\nresults: {args.out / 'results.md'} and results.json; logs in {args.out / 'logs'}")
    return 1 if any(r["verdict"] == FAIL for r in report["items"]) else 0


if __name__ == "__main__":
    sys.exit(main())
