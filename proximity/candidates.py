"""What is compared: dataset specs and `--mix` values as typed, turned into labelled mixtures.

`--mix starcoder:0.2` is the midtraining mixture pretrain·0.8 + starcoder·0.2; `starcoder` or
`starcoder:1` is continued pretraining on starcoder alone (the same scale); a value with a `+`
is a full mixture as written; `name=` labels any of them. Labels are made unique across a
run by `proximity.labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proximity.errors import ProximityError
from proximity.labels import mixture_names, unique_labels
from proximity.specs import (
    DatasetSpec,
    MixtureSpec,
    blend,
    parse_component,
    parse_mixture,
    split_label,
)


@dataclass(frozen=True)
class Named:
    """A spec with the names it may be shown under (shortest first), before labels are
    made unique across a run."""

    mixture: MixtureSpec
    names: tuple[str, ...]
    explicit: bool


def named(text: str | MixtureSpec) -> Named:
    """A dataset or mixture as typed: a `name=` label is kept, else the default names."""
    mixture = parse_mixture(text)
    if mixture.label:
        return Named(mixture, (mixture.label,), True)
    return Named(mixture, tuple(mixture_names(mixture)), False)


def midtraining_named(pretrain: MixtureSpec, text: str, option: str = "--mix") -> Named:
    """A `--mix` value: `name:w` is pretrain·(1−w) + name·w; `name` or `name:1` is continued
    pretraining on `name` alone; anything with a `+` is a full mixture, as written. An error
    names `option`, the flag the user typed the value under."""
    label, body = split_label(text)
    if "+" in body:
        return named(text)
    spec_text, weight = parse_component(body)
    addition = parse_mixture(spec_text)
    if weight is not None and not 0 < weight <= 1:
        raise ProximityError(
            f"{option} {text}: the weight must be in (0, 1], e.g. starcoder:0.2 for "
            f"{pretrain.canonical()}:0.8+starcoder:0.2, or starcoder:1 (continued pretraining)"
        )
    mixture = blend(pretrain, addition, 1.0 if weight is None else weight)
    if label:
        return Named(mixture.labelled(label), (label,), True)
    suffix = "" if weight is None else f":{weight:g}"
    names = [name + suffix for name in mixture_names(addition)]
    return Named(mixture, tuple(dict.fromkeys([*names, mixture.canonical()])), False)


def labelled(items: Sequence[Named]) -> list[MixtureSpec]:
    """The specs, each labelled with a name that no other item of `items` has."""
    labels = unique_labels([item.names for item in items], [item.explicit for item in items])
    return [item.mixture.labelled(label) for item, label in zip(items, labels, strict=True)]


def candidate(text: str | MixtureSpec, label: str | None = None) -> MixtureSpec:
    """One dataset or mixture, labelled by `label`, its own `name=`, or its shortest name."""
    item = named(text)
    return item.mixture.labelled(label or item.names[0])


def midtraining_mix(pretrain: MixtureSpec, text: str) -> MixtureSpec:
    """One `--mix` value as a labelled mixture (see `midtraining_named`)."""
    item = midtraining_named(pretrain, text)
    return item.mixture.labelled(item.names[0])


def unique_datasets(candidates: Sequence[MixtureSpec]) -> list[DatasetSpec]:
    """The distinct datasets behind `candidates`, in first-seen order."""
    seen: dict[str, DatasetSpec] = {}
    for cand in candidates:
        for spec in cand.datasets:
            seen.setdefault(spec.canonical(), spec)
    return list(seen.values())


def specialised_weight(mix: MixtureSpec, pretrain: MixtureSpec) -> float:
    """The share of `mix` that is not pretraining data: 0.2 for c4:0.8+X:0.2, 1 for CPT."""
    base = set(pretrain.datasets)
    return float(sum(w for spec, w in mix.components if spec not in base))
