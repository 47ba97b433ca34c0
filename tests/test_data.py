"""load_examples / load_texts on the real shared data, every local format, and bad input."""

import gzip
import json
import os
import shutil

import pytest

from proximity.data import describe_source, load_examples, load_texts
from proximity.errors import ProximityError


def _first_records(path, n):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(next(handle)) for _ in range(n)]


@pytest.fixture
def gsm8k_records(shared_data):
    return _first_records(shared_data / "gsm8k_train.jsonl", 20)


def _write_formats(records, folder):
    """The same records as .jsonl, .jsonl.gz, .json, .parquet and a save_to_disk folder."""
    import datasets

    lines = "".join(json.dumps(r) + "\n" for r in records)
    (folder / "d.jsonl").write_text(lines)
    with gzip.open(folder / "d.jsonl.gz", "wt") as handle:
        handle.write(lines)
    (folder / "d.json").write_text(json.dumps(records))
    table = datasets.Dataset.from_list(records)
    table.to_parquet(str(folder / "d.parquet"))
    table.save_to_disk(str(folder / "saved"))
    return ["d.jsonl", "d.jsonl.gz", "d.json", "d.parquet", "saved"]


def test_every_local_format_yields_the_same_examples(tmp_path, gsm8k_records):
    names = _write_formats(gsm8k_records, tmp_path)
    template = "?prompt=Question: {question}\\nAnswer: &response={answer}"
    results = [list(load_examples(str(tmp_path / name) + template)) for name in names]
    expected = [(f"Question: {r['question']}\nAnswer: ", r["answer"]) for r in gsm8k_records]
    for name, examples in zip(names, results, strict=True):
        assert [(e.prompt, e.response) for e in examples] == expected, name


def test_txt_file_is_one_document_per_line(tmp_path, shared_data):
    texts = [
        r["text"] for r in _first_records(shared_data / "wikipedia_demo_llamafactory.jsonl", 5)
    ]
    path = tmp_path / "wiki.txt"
    path.write_text("\n".join(texts) + "\n\n")
    assert list(load_texts(str(path))) == texts


def test_registry_name_uses_the_same_text_as_the_raw_file(shared_data, gsm8k_records):
    examples = list(load_examples("gsm8k", n_docs=20, data_dir=shared_data))
    assert [e.response for e in examples] == [r["answer"] for r in gsm8k_records]
    assert examples[0].prompt.startswith("Question: ")
    plain = next(load_texts("gsm8k?format=plain", n_docs=1, data_dir=shared_data))
    assert plain == f"{gsm8k_records[0]['question']}\n{gsm8k_records[0]['answer']}"


def test_split_option_selects_the_test_file(shared_data):
    first_test = _first_records(shared_data / "gsm8k_test.jsonl", 1)[0]
    example = next(load_examples("gsm8k?split=test", n_docs=1, data_dir=shared_data))
    assert example.response == first_test["answer"]


def test_c4_reads_all_three_files_despite_their_different_fields(shared_data):
    # c4_en_sample has timestamp, c4_extra has date/url or Paloma fields, the demo only text.
    texts = list(load_texts("c4", data_dir=shared_data))
    assert len(texts) == 1000 + 1209 + 300
    info = describe_source("c4", shared_data)
    assert info.kind == "local" and info.substitute is None and "c4_extra.jsonl" in info.location


def test_substitutes_are_reported(shared_data):
    assert "CPython" in describe_source("starcoder", shared_data).substitute
    assert "Code Alpaca" in describe_source("pycode", shared_data).substitute


def test_lima_history_is_flattened_into_the_conversation(shared_data):
    lines = (shared_data / "lima_train_llamafactory.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    index = next(i for i, r in enumerate(records) if r["history"])
    example = list(load_examples("lima", n_docs=index + 1, data_dir=shared_data))[index]
    record = records[index]
    assert example.prompt.startswith(f"User: {record['history'][0][0]}")
    assert f"User: {record['instruction']}" in example.prompt
    assert example.response == record["output"]


def test_social_iqa_and_openbookqa_answers_are_looked_up(shared_data):
    import datasets

    social = datasets.load_from_disk(str(shared_data / "hf/social_i_qa/none/validation"))[0]
    example = next(load_examples("social_iqa", n_docs=1, data_dir=shared_data))
    assert example.response == social["answer" + "ABC"[int(social["label"]) - 1]]
    book = datasets.load_from_disk(str(shared_data / "hf/openbookqa/main/validation"))[0]
    example = next(load_examples("openbookqa", n_docs=1, data_dir=shared_data))
    assert (
        example.response
        == book["choices"]["text"][book["choices"]["label"].index(book["answerKey"])]
    )


def test_random_sample_is_seeded_and_drawn_from_the_whole_file(shared_data):
    all_texts = list(load_texts("gsm8k", data_dir=shared_data))
    first = list(load_texts("gsm8k", n_docs=50, sample="random", seed=3, data_dir=shared_data))
    again = list(load_texts("gsm8k", n_docs=50, sample="random", seed=3, data_dir=shared_data))
    other = list(load_texts("gsm8k", n_docs=50, sample="random", seed=4, data_dir=shared_data))
    assert first == again and first != other
    positions = [all_texts.index(text) for text in first]
    assert positions == sorted(positions)  # file order kept
    assert max(positions) > len(all_texts) // 2  # not just the head of the file


def test_max_chars_truncates_each_document(shared_data):
    texts = list(load_texts("python_stdlib", n_docs=30, max_chars=500, data_dir=shared_data))
    assert max(len(t) for t in texts) == 500


def test_mixture_draws_documents_by_weight(shared_data):
    examples = list(load_examples("c4:0.7+gsm8k:0.3", n_docs=400, data_dir=shared_data, seed=1))
    from_gsm8k = sum(e.prompt.startswith("Question: ") for e in examples)
    assert len(examples) == 400
    assert 0.2 < from_gsm8k / 400 < 0.4


def test_fingerprint_changes_when_the_file_changes(tmp_path, shared_data):
    path = tmp_path / "c4.jsonl"
    shutil.copy(shared_data / "c4_demo_llamafactory.jsonl", path)
    before = describe_source(str(path)).fingerprint
    with path.open("a") as handle:
        handle.write(json.dumps({"text": "one more document"}) + "\n")
    os.utime(path, ns=(1, 1))
    assert describe_source(str(path)).fingerprint != before


@pytest.mark.parametrize(
    ("content", "spec_suffix", "message"),
    [
        ('{"text": "ok"}\n{"text": "broken"\n', "", r"d\.jsonl:2: malformed JSON"),
        (
            '{"question": "q", "answer": "a"}\n',
            "",
            r"field 'text' not found; fields present: answer, question",
        ),
        ('{"text": "ok"}\n', "?field=body", "field 'body' not found"),
        ("", "", "no non-empty documents"),
        ("[1, 2]\n", "", "expected a JSON object per line"),
    ],
)
def test_bad_files_name_the_file_line_and_field(tmp_path, content, spec_suffix, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(ProximityError, match=message):
        list(load_texts(str(path) + spec_suffix))


def test_missing_file_and_unknown_name(tmp_path, shared_data):
    with pytest.raises(ProximityError, match="file not found"):
        list(load_texts(str(tmp_path / "nope.jsonl")))
    with pytest.raises(ProximityError, match="did you mean gsm8k"):
        list(load_texts("gsm8kk", data_dir=shared_data))


def test_hub_unreachable_says_how_to_use_local_data(monkeypatch):
    from proximity import readers

    monkeypatch.setattr(readers, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ProximityError, match="--data-dir"):
        list(load_texts("c4"))  # no data folder: the registry falls back to the hub


def test_local_only_dataset_without_data_folder_says_where_to_point():
    with pytest.raises(ProximityError, match=r"local-only.*--data-dir"):
        list(load_texts("python_stdlib"))
