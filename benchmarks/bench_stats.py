"""Benchmark token statistics and similarity; prints ratios measured side by side, and times.

    .venv/bin/python benchmarks/bench_stats.py --data-dir ../shared/data
    .venv/bin/python benchmarks/bench_stats.py --authors-script \\
        /path/to/nightingal3/midtraining/util_scripts/dataset_similarity_syntactic.py

1. Counting throughput against what the code competes with: `Tokenizer.encode_batch_fast`
   alone on the same texts (the call `count_texts` makes), and `encode_batch` for reference.
2. An N×N `paper` matrix against the authors' way of computing one: every ordered pair
   re-reads and re-tokenises both datasets with the transformers tokenizer (batches of 32,
   truncation to 512 tokens) and counts with `collections.Counter` (their
   `compute_token_similarity_from_tokens`, restated here), and, if you pass the path of the
   authors' script, their own functions on the same texts. Ours: fresh cache, and cached.
3. The cached command a user reruns, `proximity similarity` on N datasets, as a subprocess
   (wall time, median): the plot up to date, the plot redrawn, and --no-plot.
4. Peak memory while counting.

All variants read the same documents (the paper's protocol: 1,000 per dataset, each cut to
10,000 characters and 512 tokens). Repeats are interleaved, so machine load hits every
variant alike; medians are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np

from proximity.candidates import candidate
from proximity.data import load_texts
from proximity.metrics import get_metric
from proximity.similarity import gather_stats, similarity_matrix
from proximity.stats import DEFAULT_BATCH_SIZE, StatsOptions, count_texts
from proximity.tokenizer import load_tokenizer, local_tokenizer_path

PROXIMITY = Path(sys.executable).parent / "proximity"


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
    full = StatsOptions(n_docs=None, max_chars=None, max_tokens=None, ngram_order=2,
                        per_document=True)  # fmt: skip
    tokens = count_texts(texts, tokenizer, options).n_tokens
    runs: dict[str, list[float]] = {"fast": [], "stats": [], "raw": [], "full": []}
    for _ in range(repeats):
        runs["fast"].append(_timed(lambda: _raw_encode(tokenizer, texts, batch, True)))
        runs["stats"].append(_timed(lambda: count_texts(texts, tokenizer, options)))
        runs["raw"].append(_timed(lambda: _raw_encode(tokenizer, texts, batch, False)))
        runs["full"].append(_timed(lambda: count_texts(texts, tokenizer, full)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(f"\n[1] counting throughput on {len(texts):,} documents, {tokens:,} tokens "
          f"(median of {repeats}, batch {batch}, {os.cpu_count()} cores)")  # fmt: skip
    for name, label in [
        ("fast", "encode_batch_fast alone (what count_texts calls)"),
        ("stats", "count_texts, unigrams"),
        ("full", "count_texts, +bigrams +per-document counts"),
        ("raw", "encode_batch alone (reference)"),
    ]:
        print(f"  {label:50s} {tokens / med[name] / 1e6:5.2f} M tok/s  ({med[name]:.3f} s)")
    print(f"  count_texts / encode_batch_fast = {med['fast'] / med['stats']:.3f}  "
          f"(+bigrams +per-doc: {med['fast'] / med['full']:.3f})")  # fmt: skip


# --- the authors' way: per pair, re-tokenise both sides, Counter, top-50k -------------------


def _hf_tokenizer(tokenizer_path: Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path))


def _per_pair_tokens(hf, texts: list[str]) -> list[int]:
    """Their `tokenize_texts`: batches of 32, 10,000 characters, truncation to 512 tokens."""
    tokens: list[int] = []
    for i in range(0, len(texts), 32):
        batch = [t[:10_000] for t in texts[i : i + 32]]
        encoded = hf(batch, add_special_tokens=False, truncation=True, max_length=512,
                     padding=False, return_attention_mask=False)  # fmt: skip
        for ids in encoded["input_ids"]:
            tokens.extend(ids)
    return tokens


def _per_pair_similarity(tokens_a: list[int], tokens_b: list[int], top_k: int = 50_000) -> float:
    """Their `compute_token_similarity_from_tokens`, restated: Counter, most_common, dicts."""
    top_a = dict(Counter(tokens_a).most_common(top_k))
    top_b = dict(Counter(tokens_b).most_common(top_k))
    vocab = set(top_a) | set(top_b)
    jaccard = len(set(top_a) & set(top_b)) / len(vocab)
    a = np.array([top_a.get(t, 0) for t in vocab], dtype=float)
    b = np.array([top_b.get(t, 0) for t in vocab], dtype=float)
    p, q = a / a.sum(), b / b.sum()
    cosine = float(p @ q / (np.linalg.norm(p) * np.linalg.norm(q)))
    m = (p + q) / 2
    kl = lambda x: float(np.sum(x[x > 0] * np.log(x[x > 0] / m[x > 0])))  # noqa: E731
    return 0.4 * cosine + 0.3 * jaccard + 0.3 / (1 + 0.5 * kl(p) + 0.5 * kl(q))


def naive_matrix(hf, texts: dict[str, list[str]]) -> np.ndarray:
    names = list(texts)
    out = np.eye(len(names))
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i != j:  # every ordered pair, both sides re-tokenised, as their loop does
                out[i, j] = _per_pair_similarity(
                    _per_pair_tokens(hf, texts[a]), _per_pair_tokens(hf, texts[b])
                )
    return out


def authors_matrix(module, hf, texts: dict[str, list[str]]) -> np.ndarray:
    """The authors' own per-pair function on the same texts (no mixing)."""
    names = list(texts)
    out = np.eye(len(names))
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for i, a in enumerate(names):
            for j, b in enumerate(names):
                if i != j:
                    result = module.compute_mixture_aware_token_similarity(
                        texts[a], texts[b], a, b, None, hf, use_mixture_weights=False
                    )
                    out[i, j] = result["combined_score"]
    return out


def _load_authors(path: str):
    spec = importlib.util.spec_from_file_location("authors_similarity", path)
    module = importlib.util.module_from_spec(spec)
    with contextlib.redirect_stdout(io.StringIO()):
        spec.loader.exec_module(module)
    return module


def matrix_cost(tokenizer, specs: list[str], data_dir: str, n_docs: int, repeats: int,
                authors: str | None) -> dict[str, float]:  # fmt: skip
    """Print the comparison; return the median seconds of each variant."""
    options = StatsOptions(n_docs=n_docs)
    cands = [candidate(s) for s in specs]
    texts = {s: list(load_texts(s, n_docs=n_docs, max_chars=10_000, data_dir=data_dir))
             for s in specs}  # fmt: skip
    hf = _hf_tokenizer(_tokenizer_file(data_dir))
    module = _load_authors(authors) if authors else None
    runs: dict[str, list[float]] = {"fresh": [], "cached": [], "naive": [], "authors": []}
    results: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["PROXIMITY_CACHE_DIR"] = cache
            for kind in ("fresh", "cached"):
                start = time.perf_counter()
                stats = gather_stats(cands, tokenizer, options, data_dir=data_dir)
                table = similarity_matrix(cands, stats, get_metric("paper"))
                runs[kind].append(time.perf_counter() - start)
            results["ours"] = table["value"].to_numpy().reshape(len(specs), len(specs))
        start = time.perf_counter()
        results["naive"] = naive_matrix(hf, texts)
        runs["naive"].append(time.perf_counter() - start)
        if module is not None:
            start = time.perf_counter()
            results["authors"] = authors_matrix(module, hf, texts)
            runs["authors"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in runs.items() if v}
    n = len(specs)
    print(f"\n[2] {n}x{n} paper-similarity matrix, {n_docs} docs per dataset "
          f"(median of {repeats}); datasets: {', '.join(specs)}")  # fmt: skip
    print(f"  ours, fresh cache (read + tokenise once per dataset + compare): {med['fresh']:.3f} s")
    print(f"  ours, cached statistics (compare only):                        "
          f"{med['cached']:.3f} s")  # fmt: skip
    print(f"  per-pair re-tokenising (the authors' way, restated):           {med['naive']:.3f} s"
          f"  = {med['naive'] / med['fresh']:.1f}x ours fresh, "
          f"{med['naive'] / med['cached']:.0f}x ours cached")  # fmt: skip
    if "authors" in med:
        print(
            f"  the authors' own functions on the same texts:                 "
            f"{med['authors']:.3f} s  = {med['authors'] / med['fresh']:.1f}x ours fresh"
        )
    off = ~np.eye(n, dtype=bool)
    for name in ("naive", "authors"):
        if name in results:
            gap = np.abs(results[name] - results["ours"])[off].max()
            print(f"  largest difference, ours vs {name}: {gap:.2e}")
    return med


def _tokenizer_file(data_dir: str) -> Path:
    path = local_tokenizer_path("pythia", data_dir)
    if path is None:
        raise SystemExit("needs the Pythia tokenizer under --data-dir/tokenizers/gpt-neox-20b")
    return path / "tokenizer.json" if path.is_dir() else path


def command_wall_time(specs: list[str], data_dir: str, repeats: int,
                      per_pair: dict[str, float]) -> None:  # fmt: skip
    """`proximity similarity` as a user reruns it, from a warm cache, as a subprocess."""
    env = {**os.environ, "PROXIMITY_DATA_DIR": data_dir}
    with tempfile.TemporaryDirectory() as work:
        env["PROXIMITY_CACHE_DIR"] = str(Path(work) / "cache")
        out = Path(work) / "out"
        base = [str(PROXIMITY), "similarity", *specs, "--out", str(out)]

        def run(extra: list[str]) -> float:
            start = time.perf_counter()
            subprocess.run([*base, *extra], env=env, check=True, capture_output=True)
            return time.perf_counter() - start

        first = run([])  # fills the cache and draws the figure
        walls: dict[str, list[float]] = {"current": [], "redrawn": [], "no-plot": []}
        for _ in range(repeats):
            walls["current"].append(run([]))
            (out / "similarity_heatmap.png").unlink()
            walls["redrawn"].append(run([]))
            walls["no-plot"].append(run(["--no-plot"]))
    med = {k: statistics.median(v) for k, v in walls.items()}
    n = len(specs)
    print(f"\n[3] `proximity similarity` on {n} datasets, wall time of the whole command "
          f"(median of {repeats}); first run, cache empty: {first:.2f} s")  # fmt: skip
    print(f"  cached, figure up to date (nothing to redraw): {med['current']:.2f} s")
    print(f"  cached, figure redrawn (it was deleted):       {med['redrawn']:.2f} s")
    print(f"  cached, --no-plot:                             {med['no-plot']:.2f} s")
    worst = max(med.values())
    for name, label in (("naive", "per-pair re-tokenising (restated)"),
                        ("authors", "the authors' own functions")):  # fmt: skip
        if name in per_pair:
            print(
                f"  {label} on the same matrix: {per_pair[name]:.1f} s = "
                f"{per_pair[name] / worst:.0f}x the slowest cached command above"
            )


def peak_memory(tokenizer, data_dir: str) -> None:
    print("\n[4] peak memory while counting python_stdlib (no char or token truncation at all)")
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
        "--datasets", nargs="+", default=["c4", "starcoder", "math", "pycode", "gsm8k", "lima"]
    )
    parser.add_argument("--n-docs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--authors-script", default=None,
                        help="path of the authors' dataset_similarity_syntactic.py, to time "
                        "their own functions too")  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=["1", "2", "3", "4"], default=None)
    args = parser.parse_args()
    only = set(args.only or "1234")
    data_dir = str(Path(args.data_dir).resolve())
    tokenizer = load_tokenizer("pythia", data_dir)
    if "1" in only:
        texts = [
            text
            for spec in args.datasets
            for text in load_texts(spec, n_docs=args.n_docs, max_chars=10_000, data_dir=data_dir)
        ]
        throughput(tokenizer, texts, args.repeats)
    per_pair: dict[str, float] = {}
    if "2" in only:
        per_pair = matrix_cost(tokenizer, args.datasets, data_dir, args.n_docs, args.repeats,
                               args.authors_script)  # fmt: skip
    if "3" in only:
        command_wall_time(args.datasets, data_dir, max(args.repeats, 5), per_pair)
    if "4" in only:
        peak_memory(tokenizer, data_dir)


if __name__ == "__main__":
    main()
