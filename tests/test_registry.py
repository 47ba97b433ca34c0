"""The registry: built-in names required by issue 2, and user entries from a TOML file."""

import pytest

from proximity.data import load_examples, resolve
from proximity.errors import ProximityError
from proximity.registry import Registry

REQUIRED = [
    "c4",
    "starcoder",
    "math",
    "flan",
    "dclm",
    "gsm8k",
    "pycode",
    "lima",
    "sciq",
    "social_iqa",
    "openbookqa",
    "alpaca",
    "code_alpaca",
    "math_stackexchange",
    "python_stdlib",
]


def test_builtin_registry_has_every_required_dataset_with_a_domain():
    registry = Registry.load()
    for name in REQUIRED:
        entry = registry.get(name)
        assert entry.domain and entry.domain != "other", name
        assert entry.hub is not None or entry.local, name


def test_paper_hub_ids_match_the_paper():
    registry = Registry.load()
    assert registry.get("c4").hub.path == "allenai/c4" and registry.get("c4").hub.config == "en"
    assert registry.get("gsm8k").hub.config == "main"
    assert registry.get("pycode").hub.formatting.plain is None  # entry-level template applies
    assert registry.get("pycode").formatting.plain == "{original_string}"
    assert registry.get("dclm").hub.config == "dclm"


def test_unknown_name_suggests_close_names_and_how_to_pass_a_path():
    with pytest.raises(ProximityError) as error:
        Registry.load().get("gsm8")
    message = str(error.value)
    assert "did you mean gsm8k" in message and "file path" in message


def test_user_registry_file_adds_an_entry_without_code(tmp_path, shared_data):
    user_file = tmp_path / "mine.toml"
    user_file.write_text(
        '[legal]\ndomain = "law"\nplain = "{text}"\n'
        f'[[legal.local]]\nfiles = ["{shared_data / "fineweb_legal_sample.jsonl"}"]\n'
    )
    registry = Registry.load([user_file])
    examples = list(load_examples("legal", n_docs=3, data_dir=shared_data, registry=registry))
    assert len(examples) == 3 and all(e.text for e in examples)
    assert resolve("legal", shared_data, registry).info.domain == "law"


def test_user_registry_from_environment_variable(tmp_path, monkeypatch):
    user_file = tmp_path / "env.toml"
    user_file.write_text('[mycorpus]\nplain = "{body}"\nhub = { path = "me/corpus" }\n')
    monkeypatch.setenv("PROXIMITY_REGISTRY", str(user_file))
    assert "mycorpus" in Registry.load()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[x]\nplain = "{text}"\n', "give a hub"),
        ('[x]\nplian = "{text}"\nhub = { path = "a/b" }\n', "unknown key\\(s\\) plian"),
        ("[x\n", "invalid TOML"),
        ('[x]\n[[x.local]]\nsplit = "train"\n', "needs files"),
    ],
)
def test_bad_registry_file_names_the_entry_and_key(tmp_path, content, message):
    user_file = tmp_path / "bad.toml"
    user_file.write_text(content)
    with pytest.raises(ProximityError, match=message):
        Registry.load([user_file])
