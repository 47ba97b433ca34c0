"""Dataset spec strings: one syntax for a registry name, a local file, a hub id or a mixture.

Every command takes datasets as strings, so a registry name, a hub id and a local path are
interchangeable everywhere (the `datasets.load_dataset` lesson). The grammar:

    spec       := component ("+" component)*
    component  := source ["?" option ("&" option)*] [":" weight]
    source     := registry name | local path | "hf:" hub id
    option     := key "=" value        (split, format, field, template, prompt, response,
                                         config, revision)

`c4:0.8+starcoder:0.2` is a mixture (weights must sum to 1); `gsm8k?split=test` picks a split;
`code.jsonl?field=content` names the text field; `qa.jsonl?prompt=Q: {q}\\nA: &response={a}`
gives an instruction template (``\\n`` in a template means a newline). A leading `name=` labels
the whole spec for tables and figures: `humaneval=data/he.jsonl?template={prompt}`.

`MixtureSpec` is the one mixture type of the package: a plain dataset is a mixture of one part
with weight 1 (`parse_mixture`), so code that takes mixtures never inspects spec strings.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from proximity.errors import ProximityError

OPTION_KEYS = ("split", "format", "field", "template", "prompt", "response", "config", "revision")
FORMATS = ("plain", "instruction")
HUB_PREFIX = "hf:"
_WEIGHT_TOLERANCE = 1e-6
_NUMBER = re.compile(r"(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=([^=].*)", re.DOTALL)


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: where its records come from and how to read them."""

    source: str
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    @property
    def is_hub(self) -> bool:
        return self.source.startswith(HUB_PREFIX)

    def canonical(self) -> str:
        """A stable string for cache keys and reports (options sorted)."""
        if not self.options:
            return self.source
        return self.source + "?" + "&".join(f"{k}={v}" for k, v in self.options)

    def with_options(self, **updates: str) -> DatasetSpec:
        merged = dict(self.options) | {k: v for k, v in updates.items() if v is not None}
        return DatasetSpec(self.source, tuple(sorted(merged.items())))

    def __str__(self) -> str:
        return self.canonical()


@dataclass(frozen=True)
class MixtureSpec:
    """Datasets mixed by weight (weights sum to 1), optionally labelled; one part is a dataset."""

    components: tuple[tuple[DatasetSpec, float], ...]
    label: str | None = None

    @property
    def is_mixture(self) -> bool:
        """True when more than one dataset is mixed."""
        return len(self.components) > 1

    @property
    def datasets(self) -> tuple[DatasetSpec, ...]:
        return tuple(spec for spec, _ in self.components)

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(weight for _, weight in self.components)

    @property
    def name(self) -> str:
        """The label when one was given, else the canonical spec."""
        return self.label or self.canonical()

    def single(self) -> DatasetSpec:
        """The one dataset of a one-part mixture; a real mixture is an error naming it."""
        if self.is_mixture:
            parts = ", ".join(spec.canonical() for spec in self.datasets)
            raise ProximityError(
                f"{self.canonical()!r} is a mixture of {parts}; one dataset is needed here"
            )
        return self.components[0][0]

    def labelled(self, label: str | None) -> MixtureSpec:
        return MixtureSpec(self.components, label)

    def canonical(self) -> str:
        """A stable string for keys and reports: a dataset's own spec, or `a:w+b:w` (no label)."""
        if not self.is_mixture:
            return self.components[0][0].canonical()
        return "+".join(f"{spec.canonical()}:{weight_text(w)}" for spec, w in self.components)

    def __str__(self) -> str:
        return self.canonical()


AnySpec = DatasetSpec | MixtureSpec


def weight_text(weight: float) -> str:
    """A weight as short text that still tells two different weights apart: `0.2`, not
    `0.2000`; but 0.4999999 stays itself (`:g` alone would print 0.5 for it, and two different
    mixtures would then share one name, cache entry and table row)."""
    short = f"{weight:g}"
    return short if float(short) == weight else repr(float(weight))


def parse_mixture(text: str | DatasetSpec | MixtureSpec) -> MixtureSpec:
    """Any spec as a `MixtureSpec`: a dataset becomes one part with weight 1; `name=` labels it."""
    if isinstance(text, MixtureSpec):
        return text
    if isinstance(text, DatasetSpec):
        return MixtureSpec(((text, 1.0),))
    label, body = split_label(text)
    parsed = parse_spec(body)
    mixture = parsed if isinstance(parsed, MixtureSpec) else MixtureSpec(((parsed, 1.0),))
    return mixture.labelled(label)


def split_label(text: str) -> tuple[str | None, str]:
    """`name=spec` -> (name, spec); anything else -> (None, text).

    Only a name-like prefix before any `?`, `/` or `:` counts, and an existing path always
    wins, so `data/x.jsonl?field=a` and a file called `a=b.jsonl` are never split.
    """
    text = text.strip()
    match = _LABEL.match(text)
    if match is None or Path(text).expanduser().exists():
        return None, text
    return match.group(1), match.group(2).strip()


def blend(base: MixtureSpec, addition: MixtureSpec, weight: float) -> MixtureSpec:
    """`base·(1 − weight) + addition·weight`, parts of one dataset merged (weight 1: addition).

    The paper's midtraining mixture: `blend(c4, starcoder, 0.2)` is `c4:0.8+starcoder:0.2`.
    """
    if not 0 < weight <= 1:
        raise ProximityError(f"mixing weight {weight:g} must be in (0, 1]")
    merged: dict[DatasetSpec, float] = {}
    for parts, scale in ((base.components, 1 - weight), (addition.components, weight)):
        for spec, part_weight in parts:
            if scale * part_weight > 0:
                merged[spec] = merged.get(spec, 0.0) + scale * part_weight
    return MixtureSpec(tuple(merged.items()))


def parse_spec(text: str | DatasetSpec | MixtureSpec) -> AnySpec:
    """Parse a spec string; a mixture needs a weight on every part and weights summing to 1.

    A `name=` label is dropped here (the data layer reads data, labels are for reports): use
    `parse_mixture` to keep it.
    """
    if isinstance(text, DatasetSpec):
        return text
    if isinstance(text, MixtureSpec):
        return text if text.is_mixture else text.single()
    text = split_label(text)[1]
    if not text:
        raise ProximityError("empty dataset spec: give a registry name, a file path or hf:<id>")
    pieces = [piece.strip() for piece in text.split("+")]
    weighted = [parse_component(piece) for piece in pieces]
    has_weight = [weight is not None for _, weight in weighted]
    if not any(has_weight):
        # No weights anywhere: a '+' can be part of a path or a template, not a mixture.
        return _parse_single(text)
    if not all(has_weight):
        missing = [piece for piece, flag in zip(pieces, has_weight, strict=True) if not flag]
        raise ProximityError(
            f"mixture {text!r}: every part needs a weight, e.g. c4:0.8+starcoder:0.2 "
            f"(no weight on {', '.join(missing)})"
        )
    components = tuple((spec, float(weight)) for spec, weight in weighted)  # type: ignore[arg-type]
    check_weights(components, text)
    return MixtureSpec(components) if len(components) > 1 else components[0][0]


def parse_component(text: str) -> tuple[DatasetSpec, float | None]:
    """Parse `source[?options][:weight]`; the weight is None when absent."""
    head, sep, tail = text.rpartition(":")
    if sep and _looks_like_number(tail):
        weight = float(tail)
        if not math.isfinite(weight) or weight < 0:
            raise ProximityError(f"weight {tail!r} in {text!r} must be a number >= 0")
        return _parse_single(head), weight
    return _parse_single(text), None


def check_weights(components: tuple[tuple[DatasetSpec, float], ...], text: str) -> None:
    total = sum(weight for _, weight in components)
    if abs(total - 1.0) > _WEIGHT_TOLERANCE:
        raise ProximityError(
            f"mixture {text!r}: weights sum to {total:g}, they must sum to 1 "
            f"(e.g. c4:0.8+starcoder:0.2)"
        )
    if any(weight == 0 for _, weight in components):
        raise ProximityError(f"mixture {text!r}: drop the parts with weight 0")


def _parse_single(text: str) -> DatasetSpec:
    source, _, query = text.partition("?")
    source = source.strip()
    if not source:
        raise ProximityError(f"dataset spec {text!r} has no source before '?'")
    options: dict[str, str] = {}
    if query:
        for item in query.split("&"):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq:
                raise ProximityError(f"option {item!r} in {text!r} must look like key=value")
            if key not in OPTION_KEYS:
                raise ProximityError(
                    f"unknown option {key!r} in {text!r}; known options: {', '.join(OPTION_KEYS)}"
                )
            if key in ("template", "prompt", "response"):
                value = value.replace("\\n", "\n")
            options[key] = value
    fmt = options.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise ProximityError(f"format={fmt!r} in {text!r}: choose one of {', '.join(FORMATS)}")
    return DatasetSpec(source, tuple(sorted(options.items())))


def _looks_like_number(text: str) -> bool:
    # Strict on purpose: a template ending in ": 3" must not turn into a weight.
    return _NUMBER.fullmatch(text) is not None
