"""One way to get texts: a dataset spec in, a stream of examples out.

Every command calls `load_examples` / `load_texts`, so a registry name, a local file, a hub id
and a mixture are interchangeable everywhere. A registry name resolves to its local copy under
the data folder when one is there (offline use), else to its hub copy.

    for text in load_texts("gsm8k", n_docs=1000, max_chars=10_000, data_dir="../shared/data"):
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
from proximity.formatting import Example, formatting_from_options, make_formatter
from proximity.readers import (
    file_fingerprint,
    hub_reachable,
    looks_like_local_path,
    read_hub,
    read_local,
)
from proximity.registry import DatasetEntry, Formatting, Registry
from proximity.specs import HUB_PREFIX, AnySpec, DatasetSpec, MixtureSpec, parse_spec

__all__ = ["Example", "SourceInfo", "describe_source", "load_examples", "load_texts"]

Sampling = Literal["first", "random"]
DATA_DIR_ENV = "PROXIMITY_DATA_DIR"


@dataclass(frozen=True)
class SourceInfo:
    """What a spec will read: enough to report it and to key a cache on it."""

    name: str
    kind: Literal["local", "hub", "mixture"]
    location: str
    substitute: str | None
    fingerprint: str
    domain: str = "other"
    mask_prompt: bool = False


@dataclass(frozen=True)
class _Resolved:
    info: SourceInfo
    records: Callable[[int | None], Iterator[tuple[str, dict]]]  # shuffle seed -> records
    format_record: Callable[[dict, str], Example]
    hub_shuffles: bool  # hub streams sample with a shuffle buffer, local ones with a reservoir


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


def describe_source(
    spec: str | AnySpec, data_dir: str | Path | None = None, registry: Registry | None = None
) -> SourceInfo:
    """Where a spec's records will come from, without reading them."""
    parsed = parse_spec(spec)
    if isinstance(parsed, MixtureSpec):
        parts = [describe_source(part, data_dir, registry) for part, _ in parsed.components]
        notes = [f"{part.name}: {part.substitute}" for part in parts if part.substitute]
        return SourceInfo(
            name=parsed.canonical(),
            kind="mixture",
            location=" + ".join(part.location for part in parts),
            substitute="; ".join(notes) or None,
            fingerprint="+".join(part.fingerprint for part in parts),
            domain="mixture",
        )
    return _resolve(parsed, resolve_data_dir(data_dir), registry or Registry.load()).info


def load_examples(
    spec: str | AnySpec,
    *,
    n_docs: int | None = None,
    sample: Sampling = "first",
    seed: int = 0,
    max_chars: int | None = None,
    data_dir: str | Path | None = None,
    registry: Registry | None = None,
) -> Iterator[Example]:
    """Stream up to `n_docs` examples: the first ones, or a seeded uniform random sample.

    A mixture draws each document's component by weight (seeded). Statistics of a mixture
    should not come from this stream but from mixing the parts' counts exactly.
    """
    if n_docs is not None and n_docs <= 0:
        raise ProximityError(f"n_docs must be positive, got {n_docs}")
    if sample not in ("first", "random"):
        raise ProximityError(f"sample must be 'first' or 'random', got {sample!r}")
    parsed = parse_spec(spec)
    registry = registry or Registry.load()
    folder = resolve_data_dir(data_dir)
    if isinstance(parsed, MixtureSpec):
        stream = _mixture_examples(parsed, n_docs, sample, seed, max_chars, folder, registry)
    else:
        stream = _single_examples(
            _resolve(parsed, folder, registry), n_docs, sample, seed, max_chars
        )
    yielded = 0
    for example in stream:
        yielded += 1
        yield example
    if yielded == 0:
        raise ProximityError(f"dataset {parsed} has no non-empty documents")


def load_texts(spec: str | AnySpec, **options) -> Iterator[str]:
    """`load_examples` as plain strings (prompt + response); same arguments."""
    for example in load_examples(spec, **options):
        yield example.text


def _single_examples(
    resolved: _Resolved, n_docs: int | None, sample: Sampling, seed: int, max_chars: int | None
) -> Iterator[Example]:
    if sample == "random" and resolved.hub_shuffles:
        records = resolved.records(seed)
    elif sample == "random" and n_docs is not None:
        records = _reservoir_sample(resolved.records(None), n_docs, seed)
    else:
        records = resolved.records(None)
    taken = 0
    for location, record in records:
        example = resolved.format_record(record, location).truncated(max_chars)
        if not example.text.strip():
            continue
        yield example
        taken += 1
        if n_docs is not None and taken >= n_docs:
            return


def _reservoir_sample(
    records: Iterator[tuple[str, dict]], k: int, seed: int
) -> Iterator[tuple[str, dict]]:
    """A uniform sample of k records in one pass, O(k) memory, returned in file order.

    Keeping the k records with the smallest seeded random keys is a uniform sample without
    replacement; sorting by position afterwards keeps outputs stable and readable.
    """
    rng = np.random.default_rng(seed)
    heap: list[tuple[float, int, tuple[str, dict]]] = []  # max-heap on key via negation
    for position, item in enumerate(records):
        key = float(rng.random())
        if len(heap) < k:
            heapq.heappush(heap, (-key, position, item))
        elif key < -heap[0][0]:
            heapq.heapreplace(heap, (-key, position, item))
    for _, _, item in sorted(heap, key=lambda entry: entry[1]):
        yield item


def _mixture_examples(
    mixture: MixtureSpec,
    n_docs: int | None,
    sample: Sampling,
    seed: int,
    max_chars: int | None,
    folder: Path | None,
    registry: Registry,
) -> Iterator[Example]:
    weights = np.array([weight for _, weight in mixture.components])
    streams = [
        _single_examples(_resolve(part, folder, registry), None, sample, seed + index, max_chars)
        for index, (part, _) in enumerate(mixture.components)
    ]
    rng = np.random.default_rng(seed)
    taken = 0
    while n_docs is None or taken < n_docs:
        choice = int(rng.choice(len(streams), p=weights))
        example = next(streams[choice], None)
        if example is None:
            return  # stop when a part runs dry rather than silently changing the proportions
        yield example
        taken += 1


def _resolve(spec: DatasetSpec, folder: Path | None, registry: Registry) -> _Resolved:
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
) -> _Resolved:
    split = spec.option("split")
    local_sources = list(entry.local) if folder is not None else []
    if local_sources:
        wanted = split or (entry.hub.split if entry.hub else None) or local_sources[0].split
        matching = [source for source in local_sources if source.split == wanted]
        if not matching and split is None:
            matching = local_sources[:1]  # e.g. SciQ: only validation is kept locally
        present = [s for s in matching if all((folder / f).exists() for f in s.files)]
        if present:
            source = present[0]
            paths = [folder / name for name in source.files]
            formatting = override or entry.formatting.overridden_by(source.formatting)
            where = f"dataset {entry.name!r} ({entry.defined_in})"
            return _Resolved(
                info=SourceInfo(
                    name=spec.canonical(),
                    kind="local",
                    location=", ".join(str(path) for path in paths),
                    substitute=source.substitute,
                    fingerprint=_digest([file_fingerprint(path) for path in paths]),
                    domain=entry.domain,
                    mask_prompt=entry.mask_prompt,
                ),
                records=lambda _seed, paths=paths, split=split: _chain_local(paths, split),
                format_record=make_formatter(formatting, fmt, where),
                hub_shuffles=False,
            )
        if split is not None and not matching and (entry.hub is None or not hub_reachable()):
            available = sorted({source.split for source in local_sources})
            raise ProximityError(
                f"dataset {entry.name!r} has no local split {split!r} (local splits: "
                f"{', '.join(available)}) and the hub is not available for it"
            )
    if entry.hub is None:
        expected = ", ".join(name for source in entry.local for name in source.files)
        raise ProximityError(
            f"dataset {entry.name!r} is local-only: expected {expected} under the data folder "
            f"({folder if folder else 'none set'}); pass --data-dir or set ${DATA_DIR_ENV}"
        )
    hub = entry.hub
    formatting = override or entry.formatting.overridden_by(hub.formatting)
    return _hub_resolved(
        spec,
        hub_id=hub.path,
        config=spec.option("config") or hub.config,
        split=split or hub.split,
        revision=spec.option("revision") or hub.revision,
        data_dir=hub.data_dir,
        formatting=formatting,
        fmt=fmt,
        entry=entry,
    )


def _resolve_hub_id(
    spec: DatasetSpec, override: Formatting | None, fmt: str | None, hub_id: str | None = None
) -> _Resolved:
    hub_id = hub_id or spec.source[len(HUB_PREFIX) :]
    return _hub_resolved(
        spec,
        hub_id=hub_id,
        config=spec.option("config"),
        split=spec.option("split") or "train",
        revision=spec.option("revision"),
        data_dir=None,
        formatting=override or Formatting(plain="{text}"),
        fmt=fmt,
        entry=None,
    )


def _hub_resolved(
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
) -> _Resolved:
    def records(seed: int | None) -> Iterator[tuple[str, dict]]:
        return read_hub(
            hub_id,
            config=config,
            split=split,
            revision=revision,
            data_dir=data_dir,
            shuffle_seed=seed,
        )

    return _Resolved(
        info=SourceInfo(
            name=spec.canonical(),
            kind="hub",
            location=f"hf:{hub_id}" + (f" ({config})" if config else "") + f" [{split}]",
            substitute=None,
            fingerprint=_digest([hub_id, config or "", split, revision or "main", data_dir or ""]),
            domain=entry.domain if entry else "other",
            mask_prompt=entry.mask_prompt if entry else False,
        ),
        records=records,
        format_record=make_formatter(formatting, fmt, f"hf:{hub_id}"),
        hub_shuffles=True,
    )


def _resolve_path(spec: DatasetSpec, override: Formatting | None, fmt: str | None) -> _Resolved:
    path = Path(spec.source).expanduser()
    if not path.exists():
        raise ProximityError(f"file not found: {path}")
    formatting = override or Formatting(plain="{text}")
    split = spec.option("split")
    return _Resolved(
        info=SourceInfo(
            name=spec.canonical(),
            kind="local",
            location=str(path),
            substitute=None,
            fingerprint=_digest([file_fingerprint(path)]),
        ),
        records=lambda _seed: read_local(path, split),
        format_record=make_formatter(formatting, fmt, str(path)),
        hub_shuffles=False,
    )


def _chain_local(paths: list[Path], split: str | None) -> Iterator[tuple[str, dict]]:
    for path in paths:
        yield from read_local(path, split)


def _digest(parts: list[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
