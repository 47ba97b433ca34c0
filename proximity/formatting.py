"""Records to text: templates over fields, or a named formatter where templates can't express it.

Everything about formatting lives here: `Formatting` says how a record becomes text (from the
registry, or a spec's `?field=` / `?template=` / `?prompt=&response=` options), `make_formatter`
applies it, and `describe_formatting` is its stable text, part of every source's fingerprint.

An `Example` keeps the prompt apart from the response because SFT masks the prompt out of the
loss; plain text is an Example with an empty prompt. The named formatters cover records whose
answer must be looked up (Social IQa's label, OpenBookQA's answer key) or whose turns are lists
(LIMA).
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from proximity.errors import ProximityError


@dataclass(frozen=True)
class Example:
    """One document: `prompt` (masked in SFT, "" for plain text) followed by `response`."""

    prompt: str
    response: str

    @property
    def text(self) -> str:
        return self.prompt + self.response

    def truncated(self, max_chars: int | None) -> Example:
        """Cut the whole text to `max_chars`, response first (the paper cuts documents at 10k)."""
        if max_chars is None or len(self.prompt) + len(self.response) <= max_chars:
            return self
        if len(self.prompt) >= max_chars:
            return Example(self.prompt[:max_chars], "")
        return Example(self.prompt, self.response[: max_chars - len(self.prompt)])


@dataclass(frozen=True)
class Formatting:
    """How a record becomes text: templates over its fields, or a named formatter."""

    plain: str | None = None
    prompt: str | None = None
    response: str | None = None
    formatter: str | None = None

    def overridden_by(self, other: Formatting) -> Formatting:
        """Source-level settings win: local copies often name their fields differently."""
        if other.formatter or other.plain or other.prompt or other.response:
            return other
        return self


Record = Mapping[str, Any]


def _alpaca(record: Record) -> Example:
    prompt = f"### Instruction:\n{record['instruction']}\n\n"
    if record.get("input"):
        prompt += f"### Input:\n{record['input']}\n\n"
    return Example(prompt + "### Response:\n", str(record["output"]))


def _dialogue(turns: list[str]) -> Example:
    """Alternating user/assistant turns; the last assistant turn is the response."""
    if len(turns) < 2:
        raise KeyError("conversations needs at least one user and one assistant turn")
    lines = []
    for index, turn in enumerate(turns[:-1]):
        speaker = "User" if index % 2 == 0 else "Assistant"
        lines.append(f"{speaker}: {turn}\n")
    return Example("".join(lines) + "Assistant: ", str(turns[-1]))


def _conversations(record: Record) -> Example:
    return _dialogue(list(record["conversations"]))


def _llamafactory_history(record: Record) -> Example:
    # LLaMA-Factory's LIMA conversion: earlier turns in `history`, the last pair in
    # instruction/output (MANIFEST.md); flattening restores the original conversation.
    turns = [str(turn) for pair in record.get("history") or [] for turn in pair]
    return _dialogue([*turns, str(record["instruction"]), str(record["output"])])


def _social_iqa(record: Record) -> Example:
    answers = {"1": record["answerA"], "2": record["answerB"], "3": record["answerC"]}
    prompt = f"{record['context']}\nQuestion: {record['question']}\nAnswer: "
    return Example(prompt, str(answers[str(record["label"]).strip()]))


def _openbookqa(record: Record) -> Example:
    choices = record["choices"]
    answer = choices["text"][list(choices["label"]).index(record["answerKey"])]
    return Example(f"Question: {record['question_stem']}\nAnswer: ", str(answer))


FORMATTERS: dict[str, Callable[[Record], Example]] = {
    "alpaca": _alpaca,
    "conversations": _conversations,
    "llamafactory_history": _llamafactory_history,
    "social_iqa": _social_iqa,
    "openbookqa": _openbookqa,
}


def make_formatter(
    formatting: Formatting, fmt: str | None, where: str
) -> Callable[[Record, str], Example]:
    """Build `record, location -> Example`; `fmt` is "plain", "instruction" or None (default).

    The default is the instruction format where one is defined, since that is the text the
    model sees in SFT; `format=plain` drops the prompt/response split.
    """
    if formatting.formatter:
        if formatting.formatter not in FORMATTERS:
            raise ProximityError(
                f"{where}: unknown formatter {formatting.formatter!r}; "
                f"known: {', '.join(sorted(FORMATTERS))}"
            )
        named = FORMATTERS[formatting.formatter]

        def format_named(record: Record, location: str) -> Example:
            try:
                example = named(record)
            except (KeyError, ValueError, IndexError, TypeError) as error:
                raise ProximityError(
                    f"{location}: formatter {formatting.formatter!r} cannot read this record "
                    f"({error}); fields present: {', '.join(sorted(record))}"
                ) from None
            return Example("", example.text) if fmt == "plain" else example

        return format_named

    has_instruction = formatting.prompt is not None and formatting.response is not None
    if fmt == "instruction" and not has_instruction:
        raise ProximityError(f"{where}: no instruction format defined; use format=plain")
    if fmt == "plain" or not has_instruction:
        if formatting.plain is None:
            raise ProximityError(f"{where}: no text template; pass ?field=NAME or ?template=...")
        plain = formatting.plain
        return lambda record, location: Example("", render(plain, record, location))
    prompt, response = formatting.prompt, formatting.response
    # lstrip: an empty leading field (SciQ's optional support) must not start the prompt with "\n".
    return lambda record, location: Example(
        render(prompt, record, location).lstrip(),  # type: ignore[arg-type]
        render(response, record, location),  # type: ignore[arg-type]
    )


def describe_formatting(formatting: Formatting, fmt: str | None) -> str:
    """The resolved formatting (templates or formatter, and `format=`) as one stable string:
    it is part of every source fingerprint, so editing a template misses every cache."""
    fields = {key: value for key, value in asdict(formatting).items() if value is not None}
    return json.dumps({"format": fmt, **fields}, sort_keys=True, ensure_ascii=False)


def render(template: str, record: Record, location: str) -> str:
    """`str.format`-style template over a record's fields, with an error naming the field."""
    needed = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    missing = [name for name in needed if name not in record]
    if missing:
        raise ProximityError(
            f"{location}: field {missing[0]!r} not found; fields present: "
            f"{', '.join(sorted(record))} (name the text field with ?field=NAME)"
        )
    values = {name: "" if record[name] is None else record[name] for name in needed}
    return template.format_map(values)


def formatting_from_options(
    field: str | None, template: str | None, prompt: str | None, response: str | None
) -> Formatting | None:
    """Per-spec overrides: ?field=a,b  ?template=...  ?prompt=...&response=..."""
    if prompt is not None or response is not None:
        if prompt is None or response is None:
            raise ProximityError(
                "give both ?prompt=... and &response=... for an instruction format"
            )
        return Formatting(prompt=prompt, response=response, plain=prompt + response)
    if template is not None:
        return Formatting(plain=template)
    if field is not None:
        names = [name.strip() for name in field.split(",") if name.strip()]
        return Formatting(plain="\n\n".join("{" + name + "}" for name in names))
    return None
