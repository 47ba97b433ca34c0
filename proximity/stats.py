"""Token statistics of a dataset: unigram counts, optional hashed n-grams, per-document counts.

Plain data and pure functions (the scikit-learn lesson): `count_texts` turns texts into a
`TokenStats`, `compute_stats` does the same for a dataset spec through the on-disk cache,
`Counts` is the totals of one sample (a dataset, a bootstrap replicate, a resampled mixture)
and `Profile` is the normalised form every metric reads. How a mixture of datasets becomes
a `Profile` is `proximity.mixtures`' job.

Memory stays O(vocabulary): texts are encoded in batches with `Tokenizer.encode_batch_fast`
(all cores, no offsets), each batch is folded into the counts with `np.bincount` and
dropped. Only a bootstrap (or `--mixture resample`) needs more: then the per-document
counts are kept as a sparse docs × vocabulary matrix, so a resample is `weights @ matrix`
with no re-tokenising.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tokenizers import Tokenizer

from proximity.cache import cache_key, load_entry, save_entry
from proximity.data import ReadReport, resolve
from proximity.errors import ProximityError
from proximity.registry import Registry
from proximity.specs import DatasetSpec, MixtureSpec, parse_spec
from proximity.tokenizer import TokenizerHandle

if TYPE_CHECKING:  # scipy.sparse costs ~0.2 s to import; only per-document counts need it
    from scipy import sparse

# Part of every statistics cache key: bump when counting changes what the counts mean.
STATS_VERSION = 2
PAPER_N_DOCS = 1000
PAPER_MAX_CHARS = 10_000
PAPER_MAX_TOKENS = 512
DEFAULT_BATCH_SIZE = 256
DEFAULT_BATCH_CHARS = 1_000_000  # bounds a batch's id lists to ~250k tokens (~10 MiB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier (2^64 / golden ratio)


@dataclass(frozen=True)
class StatsOptions:
    """How a dataset is sampled and counted; the paper's protocol is the default."""

    n_docs: int | None = PAPER_N_DOCS
    """Documents to read (None: all, or as many as `token_budget` needs)."""
    sample: Literal["first", "random"] = "first"
    """Take the first `n_docs` documents or a seeded random sample."""
    seed: int = 0
    """Seed of the random document sample."""
    max_chars: int | None = PAPER_MAX_CHARS
    """Cut each document to this many characters before tokenising."""
    max_tokens: int | None = PAPER_MAX_TOKENS
    """Keep each document's first this many tokens."""
    token_budget: int | None = None
    """Stop at exactly this many tokens in total (cutting the last document): equal budgets
    make the vocabulary-Jaccard term comparable across datasets."""
    ngram_order: int = 0
    """Also count hashed n-grams of this order (0: off; 2: bigrams)."""
    ngram_buckets: int = 2**20
    """Number of hash buckets for n-grams (a power of two)."""
    per_document: bool = False
    """Keep sparse per-document counts (needed for a bootstrap)."""
    batch_size: int = DEFAULT_BATCH_SIZE
    """Most documents per `encode_batch` call; does not change the result."""
    batch_chars: int = DEFAULT_BATCH_CHARS
    """Most characters per `encode_batch` call (long documents make smaller batches, so
    memory stays bounded); does not change the result."""

    def __post_init__(self) -> None:
        for name in ("n_docs", "max_chars", "max_tokens", "token_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ProximityError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.sample not in ("first", "random"):
            raise ProximityError(f"--sample must be 'first' or 'random', got {self.sample!r}")
        if self.sample == "random" and self.n_docs is None:
            raise ProximityError(
                "--sample random needs --n-docs: the size of the uniform sample to draw "
                "(with --equal-tokens, the budget is then taken from that sample)"
            )
        if self.ngram_order < 0:
            raise ProximityError(f"--ngram-order must be >= 0, got {self.ngram_order}")
        buckets = self.ngram_buckets
        if buckets < 2 or buckets & (buckets - 1):
            raise ProximityError(f"--ngram-buckets must be a power of two, got {buckets}")
        if self.batch_size <= 0 or self.batch_chars <= 0:
            raise ProximityError(f"batch limits must be positive, got {self.batch_size}")

    def key_fields(self) -> dict[str, Any]:
        """The options that change the counts (the cache key); extras are left out."""
        fields = asdict(self)
        del fields["per_document"], fields["batch_size"], fields["batch_chars"]
        if self.sample == "first":
            del fields["seed"]  # the seed cannot change a "first N" sample
        if not self.ngram_order:
            del fields["ngram_buckets"]
        return fields


@dataclass(frozen=True)
class TokenStats:
    """Counts of one dataset under one `StatsOptions`."""

    counts: np.ndarray
    """Unigram counts over the tokenizer's vocabulary (np.int64)."""
    n_docs: int
    n_tokens: int
    ngram_counts: np.ndarray | None = None
    """Hashed n-gram counts (np.int64, `ngram_buckets` long) when asked for."""
    doc_counts: sparse.csr_matrix | None = None
    """Per-document unigram counts (docs × vocabulary) when `per_document`."""
    doc_ngram_counts: sparse.csr_matrix | None = None
    """Per-document hashed n-gram counts when both `per_document` and n-grams are on."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Provenance: spec, source, tokenizer and option fields, cache key."""

    def totals(self) -> Counts:
        """The sample's counts (what a mixture or a metric starts from)."""
        return Counts(self.counts, self.ngram_counts, self.n_docs)

    def profile(self) -> Profile:
        return self.totals().profile()


@dataclass(frozen=True)
class Counts:
    """Token (and n-gram) counts of one sample: a dataset, a bootstrap replicate of it, or a
    resampled mixture. Counts may be float (a replicate weights documents)."""

    unigram: np.ndarray
    ngram: np.ndarray | None
    n_docs: int

    @property
    def n_tokens(self) -> float:
        return float(self.unigram.sum())

    def profile(self) -> Profile:
        """A sample judged as itself: its frequencies, and the tokens it saw as vocabulary."""
        return Profile(
            unigram=normalise(self.unigram),
            ngram=normalise(self.ngram) if self.ngram is not None else None,
            presence=(np.asarray(self.unigram) > 0).astype(np.float64),
            n_tokens=self.n_tokens,
            n_docs=self.n_docs,
        )


@dataclass(frozen=True)
class Profile:
    """What the metrics compare: normalised token (and n-gram) frequencies, and `presence`,
    each token's probability of being in the sample's vocabulary (0/1 for a real sample,
    in between for a mixture judged by its expected vocabulary, see `proximity.mixtures`)."""

    unigram: np.ndarray
    ngram: np.ndarray | None
    presence: np.ndarray
    n_tokens: float
    """Tokens in the sample (for an expected mixture: in the sample it is judged at)."""
    n_docs: int


def normalise(x: np.ndarray) -> np.ndarray:
    """`x / x.sum()` as float64; an empty vector is a user error (nothing was counted)."""
    x = np.asarray(x, dtype=np.float64)
    total = x.sum()
    if total <= 0:
        raise ProximityError("no tokens were counted: the dataset is empty after truncation")
    return x / total


def hash_ngrams(ids: np.ndarray, doc_index: np.ndarray, order: int, n_buckets: int, vocab: int):
    """Bucket of every n-gram that lies inside one document (`doc_index` per token).

    The n-gram's ids are packed as a base-`vocab` number (wrapping in uint64 for long
    n-grams) and scattered with Fibonacci hashing; returns (buckets, doc_index_of_ngram).
    """
    n = ids.size - order + 1
    if n <= 0:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty
    inside = doc_index[:n] == doc_index[order - 1 :]
    packed = ids[:n].astype(np.uint64)
    for k in range(1, order):
        packed = packed * np.uint64(vocab) + ids[k : k + n].astype(np.uint64)
    shift = np.uint64(64 - int(n_buckets).bit_length() + 1)
    buckets = ((packed * _GOLDEN) >> shift).astype(np.int64)
    return buckets[inside], doc_index[:n][inside]


def _batches(texts: Iterable[str], max_docs: int, max_chars: int) -> Iterator[list[str]]:
    """Groups of at most `max_docs` documents and (unless one is longer) `max_chars` chars."""
    batch: list[str] = []
    chars = 0
    for text in texts:
        if batch and (len(batch) >= max_docs or chars + len(text) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(text)
        chars += len(text)
    if batch:
        yield batch


def _encode(tokenizer: Tokenizer, batch: list[str]) -> list[list[int]]:
    # encode_batch_fast skips character offsets we never read; same ids as encode_batch.
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)
    return [e.ids for e in encode(batch, add_special_tokens=False)]


def count_texts(
    texts: Iterable[str],
    tokenizer: Tokenizer,
    options: StatsOptions = StatsOptions(),
    *,
    on_docs: Callable[[int], None] | None = None,
    metadata: dict[str, Any] | None = None,
) -> TokenStats:
    """Tokenise `texts` (already sampled and char-truncated) and count, batch by batch.

    `options.max_tokens` and `options.token_budget` are applied here; `n_docs`, `sample` and
    `max_chars` are the reader's job. `on_docs(k)` reports progress after each batch.
    """
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    counts = np.zeros(vocab, dtype=np.int64)
    ngrams = np.zeros(options.ngram_buckets, dtype=np.int64) if options.ngram_order else None
    doc_blocks: list[sparse.csr_matrix] = []
    ngram_blocks: list[sparse.csr_matrix] = []
    n_docs = n_tokens = 0
    budget = options.token_budget
    if options.per_document:
        from scipy import sparse  # only per-document counts need scipy.sparse (slow to import)

    for batch in _batches(texts, options.batch_size, options.batch_chars):
        ids_per_doc = _encode(tokenizer, batch)
        if options.max_tokens is not None:
            ids_per_doc = [ids[: options.max_tokens] for ids in ids_per_doc]
        lengths = np.fromiter(map(len, ids_per_doc), dtype=np.int64, count=len(ids_per_doc))
        if budget is not None:
            lengths = _cut_to_budget(lengths, budget - n_tokens)
            ids_per_doc = [ids[:n] for ids, n in zip(ids_per_doc, lengths, strict=False)]
        ids = np.fromiter(
            chain.from_iterable(ids_per_doc), dtype=np.int64, count=int(lengths.sum())
        )
        counts += np.bincount(ids, minlength=vocab)
        doc_index = np.repeat(np.arange(lengths.size), lengths)
        if ngrams is not None:
            buckets, ngram_docs = hash_ngrams(
                ids, doc_index, options.ngram_order, options.ngram_buckets, vocab
            )
            ngrams += np.bincount(buckets, minlength=options.ngram_buckets)
        if options.per_document:
            doc_blocks.append(_doc_matrix(doc_index, ids, lengths.size, vocab))
            if ngrams is not None:
                ngram_blocks.append(
                    _doc_matrix(ngram_docs, buckets, lengths.size, options.ngram_buckets)
                )
        n_docs += lengths.size
        n_tokens += int(lengths.sum())
        if on_docs is not None:
            on_docs(len(batch))
        if budget is not None and n_tokens >= budget:
            break

    if n_tokens == 0:
        raise ProximityError("no tokens were counted: the dataset is empty (check the spec)")
    if budget is not None and n_tokens < budget:
        raise ProximityError(
            f"only {n_tokens} tokens available under these options, fewer than the equal-token "
            f"budget {budget}: lower --equal-tokens or raise --n-docs"
        )
    return TokenStats(
        counts=counts,
        n_docs=n_docs,
        n_tokens=n_tokens,
        ngram_counts=ngrams,
        doc_counts=sparse.vstack(doc_blocks, format="csr") if doc_blocks else None,
        doc_ngram_counts=sparse.vstack(ngram_blocks, format="csr") if ngram_blocks else None,
        metadata=dict(metadata or {}),
    )


def _cut_to_budget(lengths: np.ndarray, remaining: int) -> np.ndarray:
    """Keep whole documents until `remaining` tokens, cut the next one, drop the rest."""
    ends = np.cumsum(lengths)
    if ends.size == 0 or ends[-1] <= remaining:
        return lengths
    last = int(np.searchsorted(ends, remaining))  # first document that reaches the budget
    kept = lengths[: last + 1].copy()
    kept[last] -= int(ends[last] - remaining)
    return kept


def _doc_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int):
    from scipy import sparse  # only per-document counts need scipy.sparse (slow to import)

    data = np.ones(rows.size, dtype=np.int64)
    # COO -> CSR sums the duplicate (document, token) entries into counts.
    return sparse.csr_matrix((data, (rows, cols)), shape=(n_rows, n_cols), dtype=np.int64)


def stats_to_arrays(stats: TokenStats) -> dict[str, np.ndarray]:
    """Flatten `stats` into named arrays (sparse matrices as CSR parts) for the cache."""
    arrays: dict[str, np.ndarray] = {
        "counts": stats.counts,
        "n_docs": np.asarray(stats.n_docs),
        "n_tokens": np.asarray(stats.n_tokens),
    }
    if stats.ngram_counts is not None:
        arrays["ngram_counts"] = stats.ngram_counts
    for name, matrix in (("doc", stats.doc_counts), ("doc_ngram", stats.doc_ngram_counts)):
        if matrix is not None:
            arrays[f"{name}_data"] = matrix.data
            arrays[f"{name}_indices"] = matrix.indices
            arrays[f"{name}_indptr"] = matrix.indptr
            arrays[f"{name}_shape"] = np.asarray(matrix.shape)
    return arrays


def stats_from_arrays(arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> TokenStats:
    """Inverse of `stats_to_arrays`."""

    def csr(name: str) -> sparse.csr_matrix | None:
        if f"{name}_data" not in arrays:
            return None
        from scipy import sparse  # only per-document counts need scipy.sparse (slow to import)

        parts = (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"])
        return sparse.csr_matrix(parts, shape=tuple(int(n) for n in arrays[f"{name}_shape"]))

    return TokenStats(
        counts=arrays["counts"],
        n_docs=int(arrays["n_docs"]),
        n_tokens=int(arrays["n_tokens"]),
        ngram_counts=arrays.get("ngram_counts"),
        doc_counts=csr("doc"),
        doc_ngram_counts=csr("doc_ngram"),
        metadata=metadata,
    )


def _shortfall_notes(stats: TokenStats, options: StatsOptions) -> list[str]:
    """Say so when a dataset had fewer documents than asked for (no budget to explain it)."""
    if options.n_docs is None or options.token_budget is not None:
        return []
    if stats.n_docs >= options.n_docs:
        return []
    read = f"{stats.n_docs:,} document{'s' if stats.n_docs != 1 else ''}"
    return [
        f"{read} read, {options.n_docs:,} asked for: the dataset has no more non-empty documents"
    ]


def _satisfies(stats: TokenStats, options: StatsOptions) -> bool:
    """A cached entry serves a request when it holds every extra the request needs."""
    if not options.per_document:
        return True
    if stats.doc_counts is None:
        return False
    return not options.ngram_order or stats.doc_ngram_counts is not None


def compute_stats(
    spec: str | DatasetSpec,
    tokenizer: Tokenizer | TokenizerHandle,
    options: StatsOptions = StatsOptions(),
    *,
    data_dir: str | Path | None = None,
    registry: Registry | None = None,
    on_docs: Callable[[int], None] | None = None,
    use_cache: bool = True,
) -> TokenStats:
    """Statistics of one dataset (not a mixture: see `proximity.mixtures`), through the cache.

    A cache hit never reads or tokenises the data (and, given a `TokenizerHandle`, never
    loads the tokenizer); `metadata["cache_hit"]` says which it was.
    """
    parsed = parse_spec(spec)
    if isinstance(parsed, MixtureSpec):
        raise ProximityError(
            f"{parsed}: statistics are per dataset; a mixture is compared by proximity.mixtures"
        )
    source = resolve(parsed, data_dir, registry)
    fields = options.key_fields()
    handle = tokenizer if isinstance(tokenizer, TokenizerHandle) else TokenizerHandle(tokenizer)
    tokenizer_fp = handle.fingerprint
    key = cache_key(
        parsed.canonical(),
        source.fingerprint,
        tokenizer_fp,
        {**fields, "stats_version": STATS_VERSION},
    )
    if use_cache and (entry := load_entry(key)) is not None:
        cached = stats_from_arrays(*entry)
        if _satisfies(cached, options):
            cached.metadata["cache_hit"] = True
            return cached
    report = ReadReport()
    texts = source.texts(
        n_docs=options.n_docs,
        sample=options.sample,
        seed=options.seed,
        max_chars=options.max_chars,
        report=report,
    )
    metadata = {
        "spec": parsed.canonical(),
        "source": asdict(source.info),
        "tokenizer": tokenizer_fp,
        "options": fields,
        "stats_version": STATS_VERSION,
        "key": key,
    }
    stats = count_texts(texts, handle.get(), options, on_docs=on_docs, metadata=metadata)
    stats.metadata["read"] = {**asdict(report), "documents_counted": stats.n_docs}
    stats.metadata["notes"] = _shortfall_notes(stats, options)
    if use_cache:
        save_entry(key, stats_to_arrays(stats), stats.metadata)
    stats.metadata["cache_hit"] = False
    return stats
