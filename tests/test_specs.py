"""Spec strings: names, options, hub ids and mixtures parse the way the docs say."""

import pytest

from proximity.errors import ProximityError
from proximity.specs import (
    DatasetSpec,
    MixtureSpec,
    blend,
    parse_component,
    parse_mixture,
    parse_spec,
)


def test_plain_name_parses_to_a_dataset_spec():
    assert parse_spec("gsm8k") == DatasetSpec("gsm8k")


def test_options_are_sorted_so_canonical_strings_are_stable():
    a = parse_spec("gsm8k?split=test&format=plain")
    b = parse_spec("gsm8k?format=plain&split=test")
    assert a == b
    assert a.canonical() == "gsm8k?format=plain&split=test"


def test_template_newline_escape_becomes_a_newline():
    spec = parse_spec("qa.jsonl?prompt=Q: {q}\\nA: &response={a}")
    assert spec.option("prompt") == "Q: {q}\nA: "


def test_mixture_parses_components_and_weights():
    spec = parse_spec("c4:0.8+starcoder?split=train:0.2")
    assert isinstance(spec, MixtureSpec)
    assert [(s.source, w) for s, w in spec.components] == [("c4", 0.8), ("starcoder", 0.2)]
    assert spec.components[1][0].option("split") == "train"


def test_hub_id_colon_is_not_a_weight():
    spec = parse_spec("hf:allenai/c4?config=en")
    assert spec.is_hub and spec.option("config") == "en"
    mixed = parse_spec("hf:allenai/c4:0.5+gsm8k:0.5")
    assert mixed.components[0][0].source == "hf:allenai/c4"


def test_template_ending_in_a_number_after_colon_is_not_a_weight():
    spec, weight = parse_component("x.jsonl?template=Ratio: 3")
    assert weight is None
    assert spec.option("template") == "Ratio: 3"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("c4:0.5+gsm8k:0.4", "sum to 0.9"),
        ("c4+gsm8k:0.5", "every part needs a weight"),
        ("gsm8k?bogus=1", "unknown option 'bogus'"),
        ("gsm8k?split", "key=value"),
        ("gsm8k?format=chat", "format='chat'"),
        ("", "empty dataset spec"),
        ("c4:0+gsm8k:1", "weight 0"),
    ],
)
def test_bad_specs_name_what_to_fix(text, message):
    with pytest.raises(ProximityError, match=message):
        parse_spec(text)


def test_a_dataset_is_a_one_part_mixture_and_a_mixture_keeps_its_parts():
    single = parse_mixture("gsm8k?split=test")
    assert not single.is_mixture
    assert single.single() == DatasetSpec("gsm8k", (("split", "test"),))
    assert single.canonical() == "gsm8k?split=test"
    mixed = parse_mixture("c4:0.8+starcoder:0.2")
    assert mixed.is_mixture and mixed.weights == (0.8, 0.2)
    assert [s.source for s in mixed.datasets] == ["c4", "starcoder"]
    with pytest.raises(ProximityError, match="is a mixture of c4, starcoder"):
        mixed.single()
    # `x:1` names the same dataset as `x`, so both key caches and tables the same way.
    assert parse_mixture("starcoder:1").canonical() == parse_mixture("starcoder").canonical()


@pytest.mark.parametrize(
    ("text", "label", "canonical"),
    [
        (
            "humaneval=data/he.jsonl?template={prompt}",
            "humaneval",
            "data/he.jsonl?template={prompt}",
        ),
        ("code20=c4:0.8+starcoder:0.2", "code20", "c4:0.8+starcoder:0.2"),
        ("data/he.jsonl?template={prompt}", None, "data/he.jsonl?template={prompt}"),
        ("gsm8k?split=test", None, "gsm8k?split=test"),
        ("hf:allenai/c4?config=en", None, "hf:allenai/c4?config=en"),
    ],
)
def test_a_name_prefix_labels_a_spec_and_options_are_not_labels(text, label, canonical):
    mixture = parse_mixture(text)
    assert mixture.label == label
    assert mixture.canonical() == canonical
    assert mixture.name == (label or canonical)
    # The data layer reads the same data whatever the label.
    assert str(parse_spec(text)) == canonical


def test_an_existing_path_with_an_equals_sign_is_not_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b.jsonl").write_text('{"text": "x"}\n')
    assert parse_mixture("a=b.jsonl").label is None


def test_blend_scales_the_base_and_merges_repeated_parts():
    c4 = parse_mixture("c4")
    assert blend(c4, parse_mixture("starcoder"), 0.2).canonical() == "c4:0.8+starcoder:0.2"
    # Blending a mixture that already holds c4 merges the two c4 parts into one.
    merged = blend(c4, parse_mixture("c4:0.5+math:0.5"), 0.2)
    assert merged.canonical() == "c4:0.9+math:0.1"
    # Weight 1 is the addition alone: continued pretraining.
    assert blend(c4, parse_mixture("math"), 1.0).canonical() == "math"
    with pytest.raises(ProximityError, match=r"must be in \(0, 1\]"):
        blend(c4, parse_mixture("math"), 0.0)
