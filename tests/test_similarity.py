"""Similarity matrices and proximity advantage on real data, against independent references."""

from __future__ import annotations

import json
import random
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from reference_similarity import (
    authors_mixed_documents,
    paper_protocol_counter,
    reference_paper,
)
from tokenizers import Tokenizer

import proximity.stats
from proximity.candidates import candidate, labelled, midtraining_mix, midtraining_named, named
from proximity.errors import ProximityError
from proximity.metrics import METRICS, get_metric
from proximity.settings import SimilaritySettings
from proximity.similarity import (
    Bootstrap,
    advantage_table,
    gather_stats,
    proximity_advantage,
    similarity_matrix,
    similarity_table,
)
from proximity.stats import StatsOptions, TokenStats

OPTIONS = StatsOptions(n_docs=80, per_document=True)


@pytest.fixture(scope="module")
def tokenizer(pythia_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(pythia_tokenizer_path))


@pytest.fixture(scope="module")
def specs(shared_data: Path) -> dict[str, str]:
    return {
        "c4": f"{shared_data / 'c4_en_sample.jsonl'}?field=text",
        "c4_extra": f"{shared_data / 'c4_extra.jsonl'}?field=text",
        "code": f"{shared_data / 'python_stdlib_code.jsonl'}?field=content",
        "gsm8k": f"{shared_data / 'gsm8k_train.jsonl'}?field=question,answer",
    }


@pytest.fixture(scope="module")
def stats(specs: dict[str, str], tokenizer: Tokenizer) -> dict[str, TokenStats]:
    return gather_stats([candidate(s) for s in specs.values()], tokenizer, OPTIONS)


def _named(specs: dict[str, str], *names: str):
    return [candidate(specs[n], label=n) for n in names]


def _records(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in islice(handle, n)]


def test_a_matrix_costs_one_tokenisation_pass_per_distinct_dataset(
    specs: dict[str, str], tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PROXIMITY_CACHE_DIR", str(tmp_path))
    passes: list[int] = []
    real = proximity.stats.count_texts
    monkeypatch.setattr(
        proximity.stats, "count_texts", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    mix = f"{specs['c4']}:0.7+{specs['code']}:0.3"
    cands = [*_named(specs, "c4", "code", "gsm8k"), candidate(mix, label="mix")]
    stats = gather_stats(cands, tokenizer, StatsOptions(n_docs=40))
    table = similarity_matrix(cands, stats, get_metric("paper"))
    assert len(passes) == 3 and len(table) == 16


def test_matrix_equals_the_reference_in_both_orders(
    shared_data: Path, specs: dict[str, str], stats: dict[str, TokenStats], tokenizer: Tokenizer
) -> None:
    c4 = [r["text"] for r in _records(shared_data / "c4_en_sample.jsonl", 80)]
    gsm = [
        f"{r['question']}\n\n{r['answer']}" for r in _records(shared_data / "gsm8k_train.jsonl", 80)
    ]
    counters = {
        "c4": paper_protocol_counter(c4, tokenizer),
        "gsm8k": paper_protocol_counter(gsm, tokenizer),
    }
    table = similarity_matrix(_named(specs, "c4", "gsm8k"), stats, get_metric("paper"))
    values = table.set_index(["a", "b"])["value"]
    for a, b in (("c4", "gsm8k"), ("gsm8k", "c4")):
        assert values[(a, b)] == pytest.approx(reference_paper(counters[a], counters[b]), abs=1e-12)


def test_diagonal_is_one_and_web_text_is_closer_to_web_text_than_to_code(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    cands = _named(specs, "c4", "c4_extra", "code", "gsm8k")
    for name in ("paper", "cosine", "jaccard", "js"):
        table = similarity_matrix(cands, stats, get_metric(name)).set_index(["a", "b"])["value"]
        for label in ("c4", "c4_extra", "code", "gsm8k"):
            assert table[(label, label)] == pytest.approx(1.0)
        assert table[("c4", "code")] < table[("c4", "c4_extra")], name


def test_a_mixture_is_exactly_as_similar_to_itself_as_a_dataset_is(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    mix = f"{specs['c4']}:0.8+{specs['code']}:0.2"
    cands = [candidate(mix, label="mix"), candidate(mix, label="same mix"), *_named(specs, "c4")]
    for name in ("paper", "jaccard"):
        table = similarity_matrix(cands, stats, get_metric(name)).set_index(["a", "b"])["value"]
        assert table[("mix", "mix")] == table[("mix", "same mix")] == pytest.approx(1.0)
        assert table[("mix", "c4")] < 1.0


def test_ngram_kl_ranks_like_the_unigram_metrics(
    specs: dict[str, str], tokenizer: Tokenizer
) -> None:
    cands = _named(specs, "c4", "c4_extra", "code")
    stats = gather_stats(cands, tokenizer, StatsOptions(n_docs=60, ngram_order=2))
    table = similarity_matrix(cands, stats, get_metric("ngram_kl")).set_index(["a", "b"])
    values = table["value"]
    assert values[("c4", "c4")] == pytest.approx(1.0)
    assert values[("code", "c4")] < values[("c4_extra", "c4")]


def test_mix_values_mean_a_midtraining_mix_cpt_or_a_full_mixture() -> None:
    pretrain = candidate("c4")
    mix = midtraining_mix(pretrain, "starcoder:0.2")
    assert (mix.label, mix.canonical()) == ("starcoder:0.2", "c4:0.8+starcoder:0.2")
    for text in ("starcoder", "starcoder:1"):
        cpt = midtraining_mix(pretrain, text)
        assert (cpt.label, cpt.canonical()) == (text, "starcoder")
    assert midtraining_mix(pretrain, "c4:0.5+math:0.5").canonical() == "c4:0.5+math:0.5"
    nested = midtraining_mix(candidate("c4:0.5+dclm:0.5"), "math:0.2")
    assert list(nested.weights) == pytest.approx([0.4, 0.4, 0.2])
    assert midtraining_mix(pretrain, "code20=starcoder:0.2").label == "code20"


@pytest.mark.parametrize(
    ("mix", "message"),
    [("starcoder:1.5", r"in \(0, 1\]"), ("a:0.5+b:0.2", "sum"), ("starcoder:0", r"\(0, 1\]")],
)
def test_bad_mix_values_are_user_errors(mix: str, message: str) -> None:
    with pytest.raises(ProximityError, match=message):
        midtraining_mix(candidate("c4"), mix)


def test_paths_are_labelled_by_file_stem_and_clashes_get_longer_names(tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "train.jsonl", tmp_path / "b" / "train.jsonl"
    items = [named(f"{one}?field=text"), named(f"{two}?field=text"), named("gsm8k")]
    assert [m.name for m in labelled(items)] == ["a/train.jsonl?field=text",
                                                  "b/train.jsonl?field=text", "gsm8k"]  # fmt: skip
    single = labelled([named(f"{one}?field=text"), named("gsm8k")])
    assert [m.name for m in single] == ["train", "gsm8k"]
    mixes = labelled([midtraining_named(candidate("c4"), f"{one}?field=text:0.2")])
    assert mixes[0].name == "train:0.2"
    with pytest.raises(ProximityError, match="both be called 'x'"):
        labelled([named("x=gsm8k"), named("x=c4")])
    with pytest.raises(ProximityError, match="both be called 'gsm8k'"):
        labelled([named("gsm8k"), named("gsm8k")])


def test_advantage_is_the_difference_of_two_similarities_and_ranks_best_first(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    pretrain, target = _named(specs, "c4", "gsm8k")
    mixes = [
        midtraining_mix(pretrain, f"{specs['code']}:0.2"),
        midtraining_mix(pretrain, f"{specs['gsm8k']}:0.1"),
    ]
    metric = get_metric("paper")
    table = proximity_advantage(pretrain, target, mixes, stats, metric)
    sims = similarity_matrix([pretrain, target, *mixes], stats, metric).set_index(["a", "b"])
    for row in table.itertuples():
        expected = sims.loc[(row.mix, "gsm8k"), "value"] - sims.loc[("c4", "gsm8k"), "value"]
        assert row.advantage == pytest.approx(expected, abs=1e-12)
    assert table["rank"].tolist() == [1, 2]
    assert table["mix"].iloc[0] == "gsm8k_train:0.1"  # mixing in the target helps most
    assert table["advantage"].iloc[0] > 0 and table["weight"].tolist() == [0.1, 0.2]


@pytest.fixture(scope="module")
def code_grid(shared_data: Path, tokenizer: Tokenizer):
    """PA for pycode of c4 + starcoder at several weights, every metric (100 docs each)."""
    weights = ["0.0001", "0.001", "0.01", "0.2", "0.9"]
    mixes = [f"starcoder:{w}" for w in weights] + ["starcoder", "starcoder:1", "alpaca:0.0001"]
    options = StatsOptions(n_docs=100, ngram_order=2)
    tables = {
        name: advantage_table(
            "c4", "pycode", mixes, SimilaritySettings(get_metric(name), options),
            tokenizer=tokenizer, data_dir=shared_data,
        ).set_index("mix")
        for name in METRICS
    }  # fmt: skip
    return weights, tables


def test_every_metric_of_a_tiny_mix_is_the_pretraining_datas(code_grid) -> None:
    _, tables = code_grid
    for name, table in tables.items():
        for mix in ("starcoder:0.0001", "alpaca:0.0001"):
            assert abs(table.loc[mix, "advantage"]) < 1e-3, (name, mix)


def test_every_metric_moves_with_the_weight(code_grid) -> None:
    weights, tables = code_grid
    for name, table in tables.items():
        series = [table.loc[f"starcoder:{w}", "advantage"] for w in weights[1:]]
        assert all(np.diff(series) > 0), (name, series)  # more code: closer to the code target


def test_continued_pretraining_is_on_the_same_scale_as_the_dataset_itself(
    code_grid, shared_data: Path, tokenizer: Tokenizer
) -> None:
    _, tables = code_grid
    table = tables["paper"]
    assert table.loc["starcoder", "advantage"] == table.loc["starcoder:1", "advantage"]
    assert table.loc["starcoder", "weight"] == 1.0
    matrix = similarity_table(
        ["c4", "starcoder", "pycode"], SimilaritySettings(options=StatsOptions(n_docs=100)),
        tokenizer=tokenizer, data_dir=shared_data,
    ).set_index(["a", "b"])["value"]  # fmt: skip
    plain = matrix[("starcoder", "pycode")] - matrix[("c4", "pycode")]
    assert table.loc["starcoder", "advantage"] == pytest.approx(plain, abs=1e-12)


def test_resample_mode_equals_the_authors_document_mixing(
    shared_data: Path, tokenizer: Tokenizer, tmp_path: Path
) -> None:
    """30 specialised documents at 20% need 120 of the 150 C4 documents: a real draw."""
    gsm = _records(shared_data / "gsm8k_train.jsonl", 30)
    small = tmp_path / "math30.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in gsm))
    c4_path, code_path = shared_data / "c4_en_sample.jsonl", shared_data / "code_alpaca_2k.jsonl"
    seed, weight = 11, 0.2
    resample = SimilaritySettings(options=StatsOptions(n_docs=150, seed=seed), mixture="resample")
    table = advantage_table(
        f"{c4_path}?field=text", f"{code_path}?field=instruction,output",
        [f"{small}?field=question,answer:{weight}"], resample, tokenizer=tokenizer,
    )  # fmt: skip
    c4_docs = [r["text"] for r in _records(c4_path, 150)]
    special = [f"{r['question']}\n\n{r['answer']}" for r in gsm]
    target = [f"{r['instruction']}\n\n{r['output']}" for r in _records(code_path, 150)]
    mixed = authors_mixed_documents(c4_docs, special, weight, random.Random(seed))
    assert len(mixed) == 120 + 30
    expected = reference_paper(
        paper_protocol_counter(mixed, tokenizer), paper_protocol_counter(target, tokenizer)
    )
    assert table["sim_mix_target"].iloc[0] == pytest.approx(expected, abs=1e-12)
    assert "30 documents read, 150 asked for" in table["notes"].iloc[0]
    # The authors' cap: 1,000 specialised documents at 20% would need 4,000 of C4's 150.
    capped = advantage_table(
        f"{c4_path}?field=text", f"{code_path}?field=instruction,output", ["gsm8k:0.2"],
        resample, tokenizer=tokenizer, data_dir=shared_data,
    )  # fmt: skip
    assert "600 documents needed for weight 0.8" in capped["notes"].iloc[0]


def test_bootstrap_is_seeded_apart_from_the_sample(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    cands = _named(specs, "c4", "code", "gsm8k")
    metric = get_metric("paper")
    first = similarity_matrix(cands, stats, metric, Bootstrap(n_resamples=20, seed=3))
    again = similarity_matrix(cands, stats, metric, Bootstrap(n_resamples=20, seed=3))
    other = similarity_matrix(cands, stats, metric, Bootstrap(n_resamples=20, seed=4))
    np.testing.assert_array_equal(first["ci_low"], again["ci_low"])
    assert not np.array_equal(first["ci_low"], other["ci_low"])
    np.testing.assert_array_equal(first["value"], other["value"])
    diagonal = first[first["a"] == first["b"]]
    np.testing.assert_allclose(diagonal[["ci_low", "ci_high"]], 1.0)
    off = first[first["a"] != first["b"]]
    assert (off["ci_high"] - off["ci_low"] > 1e-4).all()


def test_bootstrap_without_per_document_counts_says_what_to_do(
    specs: dict[str, str], tokenizer: Tokenizer
) -> None:
    cands = _named(specs, "c4", "gsm8k")
    plain = gather_stats(cands, tokenizer, StatsOptions(n_docs=30))
    with pytest.raises(ProximityError, match="per_document"):
        similarity_matrix(cands, plain, get_metric("paper"), Bootstrap(10))
