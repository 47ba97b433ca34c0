"""Names of datasets and mixtures in tables, CSV files and figures: short, and never ambiguous.

A `name=spec` label is used as given. Otherwise a spec gets the shortest name that tells it
apart from everything else in the same run: a local path becomes its file stem
(`data/he.jsonl?template=...` -> `he`), a registry name or hub id stays as typed, and two
specs that would share a name get longer ones (stem with options, parent folder, the full
spec) until they differ. Shortening for display (`shorten_unique`) follows the same rule: two
different names never print as the same text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from proximity.errors import ProximityError
from proximity.readers import LOCAL_SUFFIXES, looks_like_local_path
from proximity.specs import DatasetSpec, MixtureSpec

ELLIPSIS = "…"


def dataset_names(spec: DatasetSpec) -> list[str]:
    """Names for one dataset, shortest first; the last is the canonical spec (unique)."""
    if spec.is_hub or not looks_like_local_path(spec.source):
        return [spec.canonical()]
    path = Path(spec.source)
    stem = _stem(path)
    options = spec.canonical()[len(spec.source) :]
    names = [stem, stem + options]
    if path.parent.name:
        names.append(f"{path.parent.name}/{path.name}{options}")
    names.append(spec.canonical())
    return list(dict.fromkeys(names))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(LOCAL_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def mixture_names(mixture: MixtureSpec) -> list[str]:
    """Names for a dataset or mixture, shortest first (`name=` labels are not considered)."""
    if not mixture.is_mixture:
        return dataset_names(mixture.single())
    per_part = [dataset_names(spec) for spec in mixture.datasets]
    depth = max(len(names) for names in per_part)
    names = [
        "+".join(
            f"{names[min(level, len(names) - 1)]}:{weight:g}"
            for names, weight in zip(per_part, mixture.weights, strict=True)
        )
        for level in range(depth)
    ]
    return list(dict.fromkeys([*names, mixture.canonical()]))


def unique_labels(choices: Sequence[Sequence[str]], explicit: Sequence[bool]) -> list[str]:
    """One label per item: its first choice, or a longer one where first choices collide.

    `choices[i]` lists item i's names shortest first; an explicit (`name=`) label is a
    single choice that is never lengthened. Two items left with the same name are the same
    thing given twice, or two explicit labels: a user error naming the label.
    """
    level = [0] * len(choices)
    while True:
        labels = [names[min(lv, len(names) - 1)] for names, lv in zip(choices, level, strict=True)]
        groups: dict[str, list[int]] = {}
        for index, label in enumerate(labels):
            groups.setdefault(label, []).append(index)
        clashes = [members for members in groups.values() if len(members) > 1]
        if not clashes:
            return labels
        moved = False
        for members in clashes:
            for index in members:
                if not explicit[index] and level[index] < len(choices[index]) - 1:
                    level[index] += 1
                    moved = True
        if not moved:
            label = labels[clashes[0][0]]
            raise ProximityError(
                f"two datasets would both be called {label!r}: give each a distinct label "
                f"with name=spec (e.g. mine={label}), or drop the repeated one"
            )


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters in the middle, keeping both ends (where mixtures and
    paths differ): `c4:0.8+starcoder:0.1+math:0.1` -> `c4:0.8+star…1+math:0.1`."""
    if len(text) <= limit or limit < 3:
        return text
    kept = limit - 1  # characters left beside the ellipsis
    head = (kept + 1) // 2
    return text[:head] + ELLIPSIS + text[len(text) - (kept - head) :]


def shorten_unique(labels: Sequence[str], limit: int) -> list[str]:
    """Each label shortened to `limit` characters where that keeps different labels
    different; labels whose short forms would collide are shortened less, or not at all."""
    limits = [limit] * len(labels)
    while True:
        short = [shorten(label, lim) for label, lim in zip(labels, limits, strict=True)]
        owners: dict[str, set[str]] = {}
        for label, text in zip(labels, short, strict=True):
            owners.setdefault(text, set()).add(label)
        clashing = {text for text, group in owners.items() if len(group) > 1}
        if not clashing:
            return short
        for index, text in enumerate(short):
            if text in clashing:
                limits[index] = min(limits[index] + 8, len(labels[index]))
