"""Benchmark `proximity train prepare`: tokens/s with 1 and 2 workers against the raw tokenizer.

    .venv/bin/python benchmarks/bench_prepare.py --data-dir ../shared/data --n-docs 20000

What a user would otherwise do is call the tokenizer themselves: `Tokenizer.encode_batch_fast`
on the same texts, already in memory (no reading, no writing): the ceiling for one process.
`prepare` also reads the documents, splits train/val, writes shards and joins them, and with
N workers runs N tokenizer processes (each with its own Rust thread pool, so on a machine with
few cores the workers compete with each other and with the tokenizer's own threads).
Repeats are interleaved so machine load hits every variant alike; medians are printed, with
the ratio to the raw tokenizer (the figure least flattering to us).

`--sft-spec gsm8k` also measures building SFT examples (`build_sft_data`, what `prepare` runs
for an SFT config) against what a user would otherwise write: one `encode_batch` over every
example's text. Each runs in a fresh process with the tokenizer loaded and reports its peak RSS
above that baseline, reading the examples included, per kept token.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proximity.data import load_texts
from proximity.tokenizer import load_tokenizer
from proximity.training.data.prepare import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--spec", default="c4")
    parser.add_argument("--tokenizer", default="pythia")
    parser.add_argument("--n-docs", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--shard-docs", type=int, default=None, help="Documents per shard (default: SHARD_DOCS)."
    )
    parser.add_argument("--sft-spec", default=None, help="Also measure an SFT build's memory.")
    parser.add_argument("--seq-len", type=int, default=2048, help="SFT seq_len (--sft-spec).")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_sft_child(args)))
        return
    if args.sft_spec:
        _sft_memory(args)
    if args.shard_docs:  # a small sample is one shard at the default size: nothing to share out
        import proximity.training.data.tokenized

        proximity.training.data.tokenized.SHARD_DOCS = args.shard_docs

    tokenizer = load_tokenizer(args.tokenizer, data_dir=args.data_dir)
    texts = list(load_texts(args.spec, n_docs=args.n_docs, data_dir=args.data_dir))
    n_tokens = 0
    times: dict[str, list[float]] = {"encode_batch_fast": []}
    times.update({f"prepare --workers {w}": [] for w in args.workers})
    for _ in range(args.repeats):
        start = time.perf_counter()
        n_tokens = 0
        for i in range(0, len(texts), 256):
            batch = tokenizer.encode_batch_fast(texts[i : i + 256], add_special_tokens=False)
            n_tokens += sum(len(e.ids) for e in batch)
        times["encode_batch_fast"].append(time.perf_counter() - start)
        for workers in args.workers:
            with tempfile.TemporaryDirectory() as out:
                start = time.perf_counter()
                build = prepare(
                    args.spec, tokenizer, Path(out), workers=workers, data_dir=args.data_dir,
                    n_docs=args.n_docs, progress=False,
                )[0]  # fmt: skip
                times[f"prepare --workers {workers}"].append(time.perf_counter() - start)
                assert build.manifest["n_tokens"] == n_tokens + build.manifest["n_docs"]  # + EOS

    raw = statistics.median(times["encode_batch_fast"])
    print(f"{args.spec}: {len(texts):,} documents, {n_tokens:,} tokens; medians of {args.repeats}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"  {name:<22} {median:7.2f} s  {n_tokens / median / 1e6:6.2f} M tokens/s  "
            f"{raw / median:5.2f}x the raw tokenizer"
        )


def _sft_child(args) -> dict:
    """One variant in this (fresh) process: peak RSS growth over the loaded tokenizer, reading
    the examples included (build_sft_data reads them itself, so both variants do)."""
    from proximity.data import load_examples
    from proximity.training.data.sft_data import build_sft_data

    tokenizer = load_tokenizer(args.tokenizer, data_dir=args.data_dir)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if args.child == "build_sft_data":
        train, val = build_sft_data(
            args.sft_spec, tokenizer, seq_len=args.seq_len, mask_prompt=True,
            data_dir=args.data_dir,
        )  # fmt: skip
        n_tokens = len(train.tokens) + len(val.tokens)
    else:  # the one-call way: every Encoding alive at once
        examples = list(load_examples(args.sft_spec, data_dir=args.data_dir))
        encodings = tokenizer.encode_batch(
            [e.prompt + e.response for e in examples], add_special_tokens=False
        )
        n_tokens = sum(len(e.ids) for e in encodings)
    seconds = time.perf_counter() - start
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024  # KiB on Linux
    return {"tokens": n_tokens, "peak_bytes": grown, "seconds": seconds}


def _sft_memory(args) -> None:
    results = {}
    for variant in ("encode_batch (all at once)", "build_sft_data"):
        child = subprocess.run(
            [sys.executable, __file__, "--child", variant.split()[0], "--sft-spec", args.sft_spec,
             "--data-dir", args.data_dir, "--tokenizer", args.tokenizer,
             "--seq-len", str(args.seq_len)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"SFT build of {args.sft_spec} (seq_len {args.seq_len}), peak RSS, reading included:")
    for variant, r in results.items():
        print(
            f"  {variant:<28} {r['peak_bytes'] / 2**20:7.1f} MiB  "
            f"{r['peak_bytes'] / r['tokens']:6.1f} B/token  ({r['tokens']:,} tokens, "
            f"{r['seconds']:.1f} s)"
        )


if __name__ == "__main__":
    main()
