"""load_examples / load_texts on the real shared data, every local format, and bad input."""

import gzip
import json
import os
import re
import shutil

import numpy as np
import pytest

from proximity.data import ReadReport, load_examples, load_texts, resolve
from proximity.errors import ProximityError
from proximity.registry import Registry


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
    info = resolve("c4", shared_data).info
    assert info.kind == "local" and info.substitute is None and "c4_extra.jsonl" in info.location


def test_substitutes_are_reported(shared_data):
    assert "CPython" in resolve("starcoder", shared_data).info.substitute
    assert "Code Alpaca" in resolve("pycode", shared_data).info.substitute


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
    assert len(set(positions)) == 50
    assert max(positions) > len(all_texts) // 2  # not just the head of the file


def test_random_sample_and_its_order_are_uniform(tmp_path):
    """Every record is equally likely to be drawn, and to come first (what a budget keeps)."""
    path = tmp_path / "d.jsonl"
    n, k, seeds = 12, 4, 1200
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(n)))
    drawn = np.zeros(n)
    first = np.zeros(n)
    for seed in range(seeds):
        texts = list(load_texts(str(path), n_docs=k, sample="random", seed=seed))
        ids = [int(text.split()[1]) for text in texts]
        drawn[ids] += 1
        first[ids[0]] += 1
    # Binomial standard errors: inclusion p = 1/3 (sd 0.014), first p = 1/12 (sd 0.008).
    np.testing.assert_allclose(drawn / seeds, k / n, atol=0.05)
    np.testing.assert_allclose(first / seeds, 1 / n, atol=0.03)


def test_random_sampling_reaches_mixture_parts_and_is_recorded(shared_data):
    heads = set(load_texts("gsm8k", n_docs=40, data_dir=shared_data))
    report = ReadReport()
    mixed = list(
        load_texts(
            "c4:0.5+gsm8k:0.5", n_docs=80, sample="random", seed=5, data_dir=shared_data,
            report=report,
        )
    )  # fmt: skip
    from_gsm8k = [t for t in mixed if "####" in t]
    assert len(from_gsm8k) > 20 and not set(from_gsm8k) <= heads
    assert "uniform random" in report.sampling and report.documents == 80


def test_a_random_sample_larger_than_the_file_says_it_took_every_record(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f'{{"text": "doc {i}"}}\n' for i in range(5)))
    report = ReadReport()
    texts = list(load_texts(str(path), n_docs=1000, sample="random", seed=2, report=report))
    assert sorted(texts) == [f"doc {i}" for i in range(5)]
    assert (
        report.sampling == "all 5 records (fewer than the 1,000 asked), in a seeded random "
        "order (seed 2)"
    )
    report = ReadReport()
    list(load_texts(str(path), n_docs=3, sample="random", seed=2, report=report))
    assert report.sampling == "uniform random sample of 3 records (seed 2)"


def test_a_random_sample_of_a_local_file_needs_its_size(shared_data):
    with pytest.raises(ProximityError, match="needs its size"):
        list(load_texts("gsm8k", sample="random", data_dir=shared_data))


def test_read_report_says_what_was_read(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n{"text": "  "}\n{"text": "b"}\n')
    report = ReadReport()
    assert list(load_texts(str(path), n_docs=1000, report=report)) == ["a", "b"]
    assert (report.documents, report.records_seen, report.empty_skipped) == (2, 3, 1)
    assert report.sampling == "first 1000 documents"


def test_max_chars_truncates_each_document(shared_data):
    texts = list(load_texts("python_stdlib", n_docs=30, max_chars=500, data_dir=shared_data))
    assert max(len(t) for t in texts) == 500


def test_mixture_draws_documents_by_weight(shared_data):
    examples = list(load_examples("c4:0.7+gsm8k:0.3", n_docs=400, data_dir=shared_data, seed=1))
    from_gsm8k = sum(e.prompt.startswith("Question: ") for e in examples)
    assert len(examples) == 400
    assert 0.2 < from_gsm8k / 400 < 0.4


def test_a_resolved_source_reads_what_load_texts_reads(shared_data):
    for spec in ("gsm8k", "c4:0.7+gsm8k:0.3"):
        source = resolve(spec, shared_data)
        options = {"n_docs": 30, "sample": "random", "seed": 2, "max_chars": 300}
        expected = list(load_texts(spec, data_dir=shared_data, **options))
        assert list(source.texts(**options)) == list(source.texts(**options)) == expected
    mixture = resolve("c4:0.7+gsm8k:0.3", shared_data)
    assert [(part.info.name, weight) for part, weight in mixture.parts] == [
        ("c4", 0.7),
        ("gsm8k", 0.3),
    ]
    assert mixture.fingerprint == "+".join(part.fingerprint for part, _ in mixture.parts)


def test_fingerprint_changes_when_the_file_changes(tmp_path, shared_data):
    path = tmp_path / "c4.jsonl"
    shutil.copy(shared_data / "c4_demo_llamafactory.jsonl", path)
    before = resolve(str(path)).fingerprint
    with path.open("a") as handle:
        handle.write(json.dumps({"text": "one more document"}) + "\n")
    os.utime(path, ns=(1, 1))
    assert resolve(str(path)).fingerprint != before


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


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".txt", ".json"])
def test_a_file_that_is_not_utf8_names_its_line(tmp_path, suffix):
    # Line 300 is far past the first 8 KiB, where a text-mode reader would have failed.
    lines = [json.dumps({"text": f"document number {i} " * 3}) for i in range(299)]
    bad = b'{"text": "caf\xe9"}'
    if suffix == ".json":
        body = ("[\n" + ",\n".join(lines) + ",\n").encode() + bad + b"\n]\n"
    else:
        body = ("\n".join(lines) + "\n").encode() + bad + b"\n"
    path = tmp_path / f"d{suffix}"
    path.write_bytes(gzip.compress(body) if suffix.endswith(".gz") else body)
    line = 301 if suffix == ".json" else 300
    message = rf"d{re.escape(suffix)}:{line}: not UTF-8 \(byte 0xe9"
    with pytest.raises(ProximityError, match=message):
        list(load_texts(str(path)))


def test_reading_another_split_than_asked_is_recorded_like_a_substitute(shared_data):
    info = resolve("sciq", shared_data).info
    assert info.split == "validation"
    assert "only the validation split, read in place of train" in info.substitute
    asked = resolve("sciq?split=validation", shared_data).info
    assert asked.substitute is None and asked.fingerprint == info.fingerprint
    assert "in place of train" in resolve("social_iqa", shared_data).info.substitute
    assert resolve("gsm8k", shared_data).info.substitute is None


def test_fingerprint_changes_with_the_formatting_and_the_split_read(tmp_path, shared_data):
    registry_file = tmp_path / "mine.toml"
    entry = '[mine]\nplain = "{template}"\n[[mine.local]]\nfiles = ["gsm8k_test.jsonl"]\n'
    registry_file.write_text(entry.format(template="{question}"))
    before = resolve("mine", shared_data, Registry.load([registry_file])).info
    registry_file.write_text(entry.format(template="{question}\\n{answer}"))
    after = resolve("mine", shared_data, Registry.load([registry_file])).info
    assert before.fingerprint != after.fingerprint and "{answer}" in after.formatting
    plain = resolve("gsm8k?format=plain", shared_data).info
    assert plain.fingerprint != resolve("gsm8k", shared_data).fingerprint
    test_split = resolve("gsm8k?split=test", shared_data).info
    assert test_split.split == "test"
    path = str(shared_data / "gsm8k_test.jsonl")
    fields = resolve(path + "?field=question").fingerprint
    assert fields != resolve(path + "?field=answer").fingerprint
