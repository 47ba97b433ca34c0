"""Benchmark token statistics on the shared data; prints ratios and absolute numbers.

    .venv/bin/python benchmarks/bench_stats.py --data-dir ../shared/data

1. Throughput of `count_texts` as a ratio to raw `Tokenizer.encode_batch` on the same texts
   with the same tokenizer, measured side by side (interleaved repeats, medians); goal >= 0.8.
2. Cost of an N×N similarity matrix (fresh cache) relative to N single statistics passes.
3. Peak memory while counting: traced Python/numpy allocations (tracemalloc) and the
   process's peak RSS, against the size all token ids would take if they were held.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from itertools import islice

from proximity.data import load_texts
from proximity.metrics import get_metric
from proximity.similarity import candidate, gather_stats, similarity_matrix
from proximity.stats import DEFAULT_BATCH_SIZE, StatsOptions, compute_stats, count_texts
from proximity.tokenizer import load_tokenizer


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _raw_encode(tokenizer, texts: list[str], batch_size: int, fast: bool) -> int:
    encode = tokenizer.encode_batch_fast if fast else tokenizer.encode_batch
    n = 0
    for i in range(0, len(texts), batch_size):
        n += sum(len(e.ids) for e in encode(texts[i : i + batch_size], add_special_tokens=False))
    return n


def throughput(tokenizer, texts: list[str], repeats: int) -> None:
    batch = DEFAULT_BATCH_SIZE
    options = StatsOptions(n_docs=None, max_chars=None, max_tokens=None)
    tokens = count_texts(texts, tokenizer, options).n_tokens
    runs: dict[str, list[float]] = {"raw": [], "raw_fast": [], "stats": [], "stats_full": []}
    full = StatsOptions(n_docs=None, max_chars=None, max_tokens=None, ngram_order=2,
                        per_document=True)  # fmt: skip
    for _ in range(repeats):  # interleaved so that machine load hits all variants alike
        runs["raw"].append(_timed(lambda: _raw_encode(tokenizer, texts, batch, False)))
        runs["stats"].append(_timed(lambda: count_texts(texts, tokenizer, options)))
        runs["raw_fast"].append(_timed(lambda: _raw_encode(tokenizer, texts, batch, True)))
        runs["stats_full"].append(_timed(lambda: count_texts(texts, tokenizer, full)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n[1] throughput on {len(texts):,} documents, {tokens:,} tokens "
          f"(median of {repeats}, batch {batch}, {os.cpu_count()} cores)")  # fmt: skip
    for name, label in [
        ("raw", "raw encode_batch"),
        ("raw_fast", "raw encode_batch_fast"),
        ("stats", "count_texts (unigrams)"),
        ("stats_full", "count_texts (+bigrams, +per-doc)"),
    ]:
        print(f"  {label:34s} {tokens / med[name] / 1e6:6.2f} M tok/s  ({med[name]:.3f} s)")
    print(f"  ratio stats / raw encode_batch      = {med['raw'] / med['stats']:.3f}  (goal >= 0.8)")
    print(f"  ratio stats / raw encode_batch_fast = {med['raw_fast'] / med['stats']:.3f}")
    print(f"  ratio stats+bigrams+per-doc / raw   = {med['raw'] / med['stats_full']:.3f}")


def matrix_cost(tokenizer, specs: list[str], data_dir: str, n_docs: int, repeats: int) -> None:
    options = StatsOptions(n_docs=n_docs)
    cands = [candidate(s) for s in specs]
    singles, matrices, warm = [], [], []
    for spec in specs:  # warm-up: file system cache and first-call costs hit neither side
        compute_stats(spec, tokenizer, options, data_dir=data_dir, use_cache=False)
    for _ in range(repeats):
        start = time.perf_counter()
        for spec in specs:
            compute_stats(spec, tokenizer, options, data_dir=data_dir, use_cache=False)
        singles.append(time.perf_counter() - start)
        with tempfile.TemporaryDirectory() as cache:
            os.environ["PROXIMITY_CACHE_DIR"] = cache
            start = time.perf_counter()
            stats = gather_stats(cands, tokenizer, options, data_dir=data_dir)
            similarity_matrix(cands, stats, get_metric("paper"))
            matrices.append(time.perf_counter() - start)
            start = time.perf_counter()
            stats = gather_stats(cands, tokenizer, options, data_dir=data_dir)
            similarity_matrix(cands, stats, get_metric("paper"))
            warm.append(time.perf_counter() - start)
    single, matrix, cached = (statistics.median(x) for x in (singles, matrices, warm))
    n = len(specs)
    print(f"\n[2] {n}x{n} paper-similarity matrix, {n_docs} docs per dataset (median of {repeats})")
    print(f"  {n} single statistics passes (read + tokenise + count): {single:.3f} s")
    print(f"  {n}x{n} matrix, fresh cache (includes cache writes):   {matrix:.3f} s")
    print(f"  ratio matrix / {n} single passes = {matrix / single:.3f}  (N^2 passes would be {n})")
    print(
        f"  {n}x{n} matrix again, warm cache: {cached:.3f} s  ({cached / single:.3f} of the passes)"
    )


def peak_memory(tokenizer, data_dir: str) -> None:
    print("\n[3] peak memory while counting python_stdlib (no char or token truncation at all)")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for n_docs, per_doc in ((100, False), (None, False), (None, True)):
        options = StatsOptions(n_docs=None, max_chars=None, max_tokens=None, per_document=per_doc)
        texts = load_texts("starcoder", data_dir=data_dir)
        if n_docs is not None:
            texts = islice(texts, n_docs)
        tracemalloc.start()
        stats = count_texts(texts, tokenizer, options)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        label = f"{stats.n_docs} docs{' +per-doc' if per_doc else ''}"
        print(f"  {label:18s} {stats.n_tokens:>10,} tokens: traced peak {peak / 2**20:6.1f} MiB "
              f"(all ids as int64 would be {stats.n_tokens * 8 / 2**20:6.1f} MiB)")  # fmt: skip
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  process peak RSS: {rss:.0f} MiB (before this section: {rss_before:.0f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", default=os.environ.get("PROXIMITY_DATA_DIR", "../shared/data")
    )
    parser.add_argument(
        "--datasets", nargs="+", default=["c4", "starcoder", "gsm8k", "math", "lima"]
    )
    parser.add_argument("--n-docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tokenizer = load_tokenizer("pythia", args.data_dir)
    texts = [
        text
        for spec in args.datasets
        for text in load_texts(spec, n_docs=args.n_docs, max_chars=10_000, data_dir=args.data_dir)
    ]
    throughput(tokenizer, texts, args.repeats)
    matrix_cost(tokenizer, args.datasets, args.data_dir, args.n_docs, args.repeats)
    peak_memory(tokenizer, args.data_dir)


if __name__ == "__main__":
    main()
