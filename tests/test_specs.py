"""Spec strings: names, options, hub ids and mixtures parse the way the docs say."""

import pytest

from proximity.errors import ProximityError
from proximity.specs import DatasetSpec, MixtureSpec, parse_component, parse_spec


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
