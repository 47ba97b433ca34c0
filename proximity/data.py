"""One way to get texts: a dataset spec resolved once into a `Source`, then read from it.

`resolve(spec)` decides, once, where a spec's records come from (a registry name's local copy
under the data folder when one is there, else its hub copy; a local file; a hub id; each part
of a mixture) and how they become text. The `Source` it returns carries that decision: its
description and fingerprint (`info`, enough to report the source and key a cache on it) and
its documents (`examples`, `texts`). A command resolves each dataset once and asks the Source
for everything else, so the registry, the data folder and the hub fallback are consulted in
one place, one time. `load_examples` / `load_texts` are the same in one call, for code that
only reads.

    source = resolve("gsm8k", data_dir="../shared/data")
    key = source.fingerprint
    for text in source.texts(n_docs=1000, max_chars=10_000):
        ...
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from proximity.errors import ProximityError
from proximity.formatting import (
    Example,
    Formatting,
    describe_formatting,
    formatting_from_options,
    make_formatter,
)
from proximity.readers import (
    file_fingerprint,
    hub_reachable,
    looks_like_local_path,
    read_hub,
    read_local,
)
from proximity.registry import DatasetEntry, LocalSource, Registry
from proximity.specs import HUB_PREFIX, AnySpec, DatasetSpec, MixtureSpec, parse_spec

__all__ = [
    "Example",
    "ReadReport",
    "Reader",
    "Source",
    "SourceInfo",
    "load_examples",
    "load_texts",
    "resolve",
    "resolve_data_dir",
]

Sampling = Literal["first", "random"]
DATA_DIR_ENV = "PROXIMITY_DATA_DIR"
# Part of every source fingerprint, so every cache keyed on one (statistics, training tokens)
# misses after a change to what text a record yields. Bump on any change to the readers,
# the formatters or templates' rendering, or the record selection.
READER_VERSION = 2


@dataclass(frozen=True)
class SourceInfo:
    """What a spec will read: enough to report it and to key a cache on it.

    `fingerprint` changes whenever the text read could change: the data (files' size and
    mtime, or hub id + config + split + revision), the split actually read, the resolved
    formatting (templates or formatter, and `format=`) and `READER_VERSION`.
    """

    name: str
    kind: Literal["local", "hub", "mixture"]
    location: str
    substitute: str | None
    fingerprint: str
    domain: str = "other"
    mask_prompt: bool = False
    split: str | None = None
    """The split actually read (None: a file without splits)."""
    formatting: str = ""
    """How records become text, resolved (templates or formatter, and `format=`)."""


@dataclass
class ReadReport:
    """What a read actually did, filled in while documents are yielded (for provenance).

    Pass one to `Source.examples(report=...)`: the output files record it, so a run says which
    documents it saw, not which it asked for.
    """

    sampling: str = ""
    """How documents were chosen, e.g. "first 1000" or "uniform random 1000 (seed 3)"."""
    records_seen: int = 0
    """Records read from the source (a random sample reads them all)."""
    documents: int = 0
    """Documents yielded."""
    empty_skipped: int = 0
    """Records skipped because their text was empty."""


@dataclass(frozen=True)
class Reader:
    """How one resolved dataset is read: its records, and how each becomes an `Example`."""

    records: Callable[[int | None], Iterator[tuple[str, dict]]]
    """Shuffle seed (None: file order) -> (location, record) pairs."""
    format_record: Callable[[dict, str], Example]
    hub_shuffles: bool
    """Hub streams sample with a shuffle buffer, local files with a reservoir."""


@dataclass(frozen=True)
class Source:
    """A dataset spec resolved once: its description, its fingerprint and its documents.

    A single dataset has a `reader`; a mixture has `parts` (each a resolved dataset with its
    weight) and no reader of its own.
    """

    spec: AnySpec
    info: SourceInfo
    reader: Reader | None = None
    parts: tuple[tuple[Source, float], ...] = ()

    @property
    def fingerprint(self) -> str:
        """Changes whenever the text read could change (see `SourceInfo`): a cache key part."""
        return self.info.fingerprint

    def examples(
        self,
        *,
        n_docs: int | None = None,
        sample: Sampling = "first",
        seed: int = 0,
        max_chars: int | None = None,
        report: ReadReport | None = None,
    ) -> Iterator[Example]:
        """Stream up to `n_docs` examples: the first ones, or a seeded uniform random sample.

        A random sample is drawn in every path: a local file by a one-pass reservoir of
        `n_docs` (so it needs `n_docs`), a hub stream by its shuffle buffer; it comes in
        random order, so a token budget that stops early still sees a uniform sample. A
        mixture draws each document's part by weight (seeded), each part sampled the same
        way. Statistics of a mixture do not come from this stream (see `proximity.mixtures`).
        `report`, if given, is filled in with what was actually read.
        """
        _check_sampling(n_docs, sample)
        report = report if report is not None else ReadReport()
        if self.parts:
            stream = _mixture_examples(self.parts, n_docs, sample, seed, max_chars, report)
        else:
            stream = _single_examples(self, n_docs, sample, seed, max_chars, report)
        for example in stream:
            report.documents += 1
            yield example
        if report.documents == 0:
            raise ProximityError(f"dataset {self.spec} has no non-empty documents")

    def texts(self, **options) -> Iterator[str]:
        """`examples` as plain strings (prompt + response); same arguments."""
        for example in self.examples(**options):
            yield example.text


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """`--data-dir`, else `$PROXIMITY_DATA_DIR`, else None (hub only)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if chosen in (None, ""):
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise ProximityError(
            f"data folder {path} does not exist (check --data-dir / ${DATA_DIR_ENV})"
        )
    return path


def _check_sampling(n_docs: int | None, sample: str) -> None:
    """The read options every path shares, checked before anything is opened."""
    if n_docs is not None and n_docs <= 0:
        raise ProximityError(f"n_docs must be positive, got {n_docs}")
    if sample not in ("first", "random"):
        raise ProximityError(f"sample must be 'first' or 'random', got {sample!r}")


def resolve(
    spec: str | AnySpec, data_dir: str | Path | None = None, registry: Registry | None = None
) -> Source:
    """Where a spec's records will come from and how they become text, without reading them.

    Raises `ProximityError` naming what to change when the spec cannot be resolved (an
    unknown name, a missing file, a local-only dataset without its data folder).
    """
    parsed = parse_spec(spec)
    folder = resolve_data_dir(data_dir)
    registry = registry or Registry.load()
    if not isinstance(parsed, MixtureSpec):
        return _resolve_dataset(parsed, folder, registry)
    parts = tuple(
        (_resolve_dataset(part, folder, registry), weight) for part, weight in parsed.components
    )
    infos = [part.info for part, _ in parts]
    notes = [f"{info.name}: {info.substitute}" for info in infos if info.substitute]
    info = SourceInfo(
        name=parsed.canonical(),
        kind="mixture",
        location=" + ".join(info.location for info in infos),
        substitute="; ".join(notes) or None,
        fingerprint="+".join(info.fingerprint for info in infos),
        domain="mixture",
    )
    return Source(spec=parsed, info=info, parts=parts)


def load_examples(
    spec: str | AnySpec,
    *,
    n_docs: int | None = None,
    sample: Sampling = "first",
    seed: int = 0,
    max_chars: int | None = None,
    data_dir: str | Path | None = None,
    registry: Registry | None = None,
    report: ReadReport | None = None,
) -> Iterator[Example]:
    """`resolve(spec, data_dir, registry).examples(...)` in one call, for code that only reads
    (see `Source.examples`). Lazy, like the stream: nothing is resolved before the first
    document is asked for."""
    _check_sampling(n_docs, sample)  # a bad option is named before the spec is looked up
    source = resolve(spec, data_dir, registry)
    yield from source.examples(
        n_docs=n_docs, sample=sample, seed=seed, max_chars=max_chars, report=report
    )


def load_texts(spec: str | AnySpec, **options) -> Iterator[str]:
    """`load_examples` as plain strings (prompt + response); same arguments."""
    for example in load_examples(spec, **options):
        yield example.text


# --- reading --------------------------------------------------------------------------------


def _single_examples(
    source: Source,
    n_docs: int | None,
    sample: Sampling,
    seed: int,
    max_chars: int | None,
    report: ReadReport,
) -> Iterator[Example]:
    reader = source.reader
    assert reader is not None, "a mixture is read through its parts"
    if sample == "random" and reader.hub_shuffles:
        report.sampling = f"hub stream shuffled with a 10,000-record buffer (seed {seed})"
        records = reader.records(seed)
    elif sample == "random":
        if n_docs is None:
            raise ProximityError(
                f"{source.info.name}: a random sample of a local file needs its size "
                "(--n-docs): it is drawn in one pass, holding only that many records"
            )
        report.sampling = f"uniform random sample of {n_docs} records (seed {seed})"
        records = _reservoir_sample(
            _counted(reader.records(None), report), n_docs, seed, report=report
        )
    else:
        report.sampling = f"first {n_docs} documents" if n_docs else "every document"
        records = _counted(reader.records(None), report)
    taken = 0
    for location, record in records:
        example = reader.format_record(record, location).truncated(max_chars)
        if not example.text.strip():
            report.empty_skipped += 1
            continue
        yield example
        taken += 1
        if n_docs is not None and taken >= n_docs:
            return


def _counted(records: Iterator[tuple[str, dict]], report: ReadReport) -> Iterator[tuple[str, dict]]:
    for item in records:
        report.records_seen += 1
        yield item


def _reservoir_sample(
    records: Iterator[tuple[str, dict]], k: int, seed: int, report: ReadReport | None = None
) -> Iterator[tuple[str, dict]]:
    """A uniform sample of k records in one pass, O(k) memory, in random order.

    Keeping the k records with the smallest seeded random keys is a uniform sample without
    replacement, and ordering them by key is a uniform random order: any prefix (what a
    token budget keeps) is itself a uniform sample, which file order would not be.
    """
    rng = np.random.default_rng(seed)
    heap: list[tuple[float, int, tuple[str, dict]]] = []  # max-heap on key via negation
    for position, item in enumerate(records):
        key = float(rng.random())
        if len(heap) < k:
            heapq.heappush(heap, (-key, position, item))
        elif key < -heap[0][0]:
            heapq.heapreplace(heap, (-key, position, item))
    if report is not None and len(heap) < k:  # the source is smaller than the sample asked
        report.sampling = (
            f"all {len(heap):,} records (fewer than the {k:,} asked), in a seeded random "
            f"order (seed {seed})"
        )
    for _, _, item in sorted(heap, key=lambda entry: -entry[0]):
        yield item


def _mixture_examples(
    parts: tuple[tuple[Source, float], ...],
    n_docs: int | None,
    sample: Sampling,
    seed: int,
    max_chars: int | None,
    report: ReadReport,
) -> Iterator[Example]:
    weights = np.array([weight for _, weight in parts])
    # Each part is sampled like a dataset of its own (a part never supplies more than
    # n_docs), so `sample="random"` holds for every part, not only for whole datasets.
    part_reports = [ReadReport() for _ in parts]
    streams = [
        _single_examples(part, n_docs, sample, seed + index, max_chars, part_report)
        for index, ((part, _), part_report) in enumerate(zip(parts, part_reports, strict=True))
    ]
    report.sampling = f"parts drawn by weight (seed {seed}); each part: " + (
        f"uniform random (seeds {seed}..{seed + len(streams) - 1})"
        if sample == "random"
        else "in file order"
    )
    rng = np.random.default_rng(seed)
    taken = 0
    while n_docs is None or taken < n_docs:
        choice = int(rng.choice(len(streams), p=weights))
        example = next(streams[choice], None)
        report.records_seen = sum(part.records_seen for part in part_reports)
        if example is None:
            return  # stop when a part runs dry rather than silently changing the proportions
        yield example
        taken += 1


# --- resolving ------------------------------------------------------------------------------


def _resolve_dataset(spec: DatasetSpec, folder: Path | None, registry: Registry) -> Source:
    override = formatting_from_options(
        spec.option("field"),
        spec.option("template"),
        spec.option("prompt"),
        spec.option("response"),
    )
    fmt = spec.option("format")
    if spec.source in registry:
        return _resolve_registry(spec, registry.get(spec.source), folder, override, fmt)
    if spec.is_hub:
        return _resolve_hub_id(spec, override, fmt)
    if looks_like_local_path(spec.source):
        return _resolve_path(spec, override, fmt)
    if "/" in spec.source:
        return _resolve_hub_id(spec, override, fmt, hub_id=spec.source)
    raise ProximityError(registry.unknown_name_message(spec.source))


def _resolve_registry(
    spec: DatasetSpec,
    entry: DatasetEntry,
    folder: Path | None,
    override: Formatting | None,
    fmt: str | None,
) -> Source:
    """The entry's local copy under the data folder when it is there, else its hub copy."""
    if folder is not None:
        local = _registry_local_copy(spec, entry, folder, override, fmt)
        if local is not None:
            return local
    if entry.hub is None:
        expected = ", ".join(name for source in entry.local for name in source.files)
        raise ProximityError(
            f"dataset {entry.name!r} is local-only: expected {expected} under the data folder "
            f"({folder if folder else 'none set'}); pass --data-dir or set ${DATA_DIR_ENV}"
        )
    hub = entry.hub
    return _hub_source(
        spec,
        hub_id=hub.path,
        config=spec.option("config") or hub.config,
        split=spec.option("split") or hub.split,
        revision=spec.option("revision") or hub.revision,
        data_dir=hub.data_dir,
        formatting=override or entry.formatting.overridden_by(hub.formatting),
        fmt=fmt,
        entry=entry,
    )


def _registry_local_copy(
    spec: DatasetSpec,
    entry: DatasetEntry,
    folder: Path,
    override: Formatting | None,
    fmt: str | None,
) -> Source | None:
    """The local file of the split asked for (or the one kept, when none was asked), if it is
    under the data folder; None sends the caller to the hub."""
    split = spec.option("split")
    local_sources = list(entry.local)
    if not local_sources:
        return None
    wanted = split or (entry.hub.split if entry.hub else None) or local_sources[0].split
    matching = [source for source in local_sources if source.split == wanted]
    if not matching and split is None:
        matching = local_sources[:1]  # e.g. SciQ: only validation is kept locally
    present = [s for s in matching if all((folder / f).exists() for f in s.files)]
    if present:
        return _registry_local_source(spec, entry, present[0], folder, wanted, override, fmt)
    if split is not None and not matching and (entry.hub is None or not hub_reachable()):
        available = sorted({source.split for source in local_sources})
        raise ProximityError(
            f"dataset {entry.name!r} has no local split {split!r} (local splits: "
            f"{', '.join(available)}) and the hub is not available for it"
        )
    return None


SPLIT_NOTE = "the local copy holds only the {read} split, read in place of {wanted}"


def split_note(read: str, wanted: str) -> str:
    """The note for a local copy read in another split of the same dataset: a substitution
    worth recording, but the same data, so figures do not mark it as a stand-in."""
    return SPLIT_NOTE.format(read=read, wanted=wanted)


def is_split_note(note: str) -> bool:
    """Whether `note` (one note, `name: ` prefix allowed) only says a split was read for another."""
    text = note.split(": ", 1)[-1].strip()
    head, tail = SPLIT_NOTE.split("{read}")
    middle, _ = tail.split("{wanted}")
    return text.startswith(head) and middle in text


def _registry_local_source(
    spec: DatasetSpec,
    entry: DatasetEntry,
    source: LocalSource,
    folder: Path,
    wanted: str,
    override: Formatting | None,
    fmt: str | None,
) -> Source:
    notes = [source.substitute] if source.substitute else []
    if source.split != wanted:
        notes.append(split_note(source.split, wanted))
    return _local_source(
        spec,
        [folder / name for name in source.files],
        split_read=source.split,
        formatting=override or entry.formatting.overridden_by(source.formatting),
        fmt=fmt,
        where=f"dataset {entry.name!r} ({entry.defined_in})",
        substitute="; ".join(notes) or None,
        entry=entry,
    )


def _resolve_path(spec: DatasetSpec, override: Formatting | None, fmt: str | None) -> Source:
    path = Path(spec.source).expanduser()
    if not path.exists():
        raise ProximityError(f"file not found: {path}")
    return _local_source(
        spec,
        [path],
        split_read=spec.option("split"),
        formatting=override or Formatting(plain="{text}"),
        fmt=fmt,
        where=str(path),
        substitute=None,
        entry=None,
    )


def _local_source(
    spec: DatasetSpec,
    paths: list[Path],
    *,
    split_read: str | None,
    formatting: Formatting,
    fmt: str | None,
    where: str,
    substitute: str | None,
    entry: DatasetEntry | None,
) -> Source:
    """Local files read in order; `split_read` is the split they hold (the fingerprint's),
    the spec's own `split=` is what a `save_to_disk` folder is asked for."""
    resolved_format = describe_formatting(formatting, fmt)
    asked_split = spec.option("split")
    info = SourceInfo(
        name=spec.canonical(),
        kind="local",
        location=", ".join(str(path) for path in paths),
        substitute=substitute,
        fingerprint=_digest(
            [file_fingerprint(path) for path in paths] + [f"split={split_read}", resolved_format]
        ),
        domain=entry.domain if entry else "other",
        mask_prompt=entry.mask_prompt if entry else False,
        split=split_read,
        formatting=resolved_format,
    )
    reader = Reader(
        records=lambda _seed: _chain_local(paths, asked_split),
        format_record=make_formatter(formatting, fmt, where),
        hub_shuffles=False,
    )
    return Source(spec=spec, info=info, reader=reader)


def _resolve_hub_id(
    spec: DatasetSpec, override: Formatting | None, fmt: str | None, hub_id: str | None = None
) -> Source:
    return _hub_source(
        spec,
        hub_id=hub_id or spec.source[len(HUB_PREFIX) :],
        config=spec.option("config"),
        split=spec.option("split") or "train",
        revision=spec.option("revision"),
        data_dir=None,
        formatting=override or Formatting(plain="{text}"),
        fmt=fmt,
        entry=None,
    )


def _hub_source(
    spec: DatasetSpec,
    *,
    hub_id: str,
    config: str | None,
    split: str,
    revision: str | None,
    data_dir: str | None,
    formatting: Formatting,
    fmt: str | None,
    entry: DatasetEntry | None,
) -> Source:
    def records(seed: int | None) -> Iterator[tuple[str, dict]]:
        return read_hub(
            hub_id,
            config=config,
            split=split,
            revision=revision,
            data_dir=data_dir,
            shuffle_seed=seed,
        )

    resolved_format = describe_formatting(formatting, fmt)
    info = SourceInfo(
        name=spec.canonical(),
        kind="hub",
        location=f"hf:{hub_id}" + (f" ({config})" if config else "") + f" [{split}]",
        substitute=None,
        fingerprint=_digest(
            [hub_id, config or "", split, revision or "main", data_dir or "", resolved_format]
        ),
        domain=entry.domain if entry else "other",
        mask_prompt=entry.mask_prompt if entry else False,
        split=split,
        formatting=resolved_format,
    )
    reader = Reader(
        records=records,
        format_record=make_formatter(formatting, fmt, f"hf:{hub_id}"),
        hub_shuffles=True,
    )
    return Source(spec=spec, info=info, reader=reader)


def _chain_local(paths: list[Path], split: str | None) -> Iterator[tuple[str, dict]]:
    for path in paths:
        yield from read_local(path, split)


def _digest(parts: list[str]) -> str:
    text = "\n".join([f"reader-version={READER_VERSION}", *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:16]
