"""Similarity matrices, proximity advantage and bootstrap intervals on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import proximity.stats
from proximity.errors import ProximityError
from proximity.metrics import get_metric
from proximity.similarity import (
    Bootstrap,
    bootstrap_interval,
    candidate,
    gather_stats,
    midtraining_mix,
    proximity_advantage,
    similarity_matrix,
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


def test_diagonal_is_one_and_web_text_is_closer_to_web_text_than_to_code(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    cands = _named(specs, "c4", "c4_extra", "code", "gsm8k")
    for name in ("paper", "cosine", "jaccard", "js"):
        table = similarity_matrix(cands, stats, get_metric(name)).set_index(["a", "b"])["value"]
        for label in ("c4", "c4_extra", "code", "gsm8k"):
            assert table[(label, label)] == pytest.approx(1.0)
        assert table[("c4", "code")] < table[("c4", "c4_extra")], name
        assert table[("c4", "gsm8k")] == pytest.approx(table[("gsm8k", "c4")])


def test_ngram_kl_ranks_like_the_unigram_metrics(
    specs: dict[str, str], tokenizer: Tokenizer
) -> None:
    cands = _named(specs, "c4", "c4_extra", "code")
    stats = gather_stats(cands, tokenizer, StatsOptions(n_docs=60, ngram_order=2))
    table = similarity_matrix(cands, stats, get_metric("ngram_kl")).set_index(["a", "b"])
    values = table["value"]
    assert values[("c4", "c4")] == pytest.approx(1.0)
    assert values[("code", "c4")] < values[("c4_extra", "c4")]


def test_a_weight_alone_means_a_mix_with_the_pretraining_data() -> None:
    pretrain = candidate("c4")
    mix = midtraining_mix(pretrain, "starcoder:0.2")
    assert mix.label == "starcoder:0.2"
    assert mix.canonical() == "c4:0.8+starcoder:0.2"
    assert midtraining_mix(pretrain, "c4:0.5+math:0.5").canonical() == "c4:0.5+math:0.5"
    nested = midtraining_mix(candidate("c4:0.5+dclm:0.5"), "math:0.2")
    assert [w for _, w in nested.components] == pytest.approx([0.4, 0.4, 0.2])


@pytest.mark.parametrize(
    ("mix", "message"),
    [("starcoder:1.5", "between 0 and 1"), ("starcoder", "give a weight"), ("a:0.5+b:0.2", "sum")],
)
def test_bad_mix_values_are_user_errors(mix: str, message: str) -> None:
    with pytest.raises(ProximityError, match=message):
        midtraining_mix(candidate("c4"), mix)


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
    assert table["mix"].iloc[0].startswith(specs["gsm8k"])  # mixing in the target helps most
    assert table["advantage"].iloc[0] > 0


def test_bootstrap_interval_contains_the_estimate_and_is_reproducible(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    cands = _named(specs, "c4", "code", "gsm8k")
    boot = Bootstrap(n_resamples=30, seed=3)
    table = similarity_matrix(cands, stats, get_metric("paper"), boot)
    assert (table["ci_low"] <= table["value"] + 1e-12).all()
    assert (table["value"] <= table["ci_high"] + 1e-12).all()
    off_diagonal = table[table["a"] != table["b"]]
    assert (off_diagonal["ci_high"] - off_diagonal["ci_low"] > 1e-4).all()
    diagonal = table[table["a"] == table["b"]]
    np.testing.assert_allclose(diagonal[["ci_low", "ci_high"]], 1.0)
    again = similarity_matrix(cands, stats, get_metric("paper"), boot)
    np.testing.assert_array_equal(table["ci_low"], again["ci_low"])


def test_plain_percentiles_sit_below_the_jaccard_estimate_hence_the_centered_default(
    specs: dict[str, str], stats: dict[str, TokenStats]
) -> None:
    """Resampled documents repeat, so replicates see fewer distinct tokens (see docs)."""
    c4, code = _named(specs, "c4", "code")
    jaccard = get_metric("jaccard")

    def statistic(profiles):
        a, b = (profiles[c.components[0][0].canonical()] for c in (c4, code))
        return np.array([jaccard.function(a.unigram, b.unigram)])

    point = statistic({k: s.profile() for k, s in stats.items()})
    low, high = bootstrap_interval(statistic, stats, 30, method="percentile")
    assert high[0] < point[0]
    low, high = bootstrap_interval(statistic, stats, 30, method="centered")
    assert low[0] <= point[0] <= high[0]


def test_bootstrap_without_per_document_counts_says_what_to_do(
    specs: dict[str, str], tokenizer: Tokenizer
) -> None:
    cands = _named(specs, "c4", "gsm8k")
    plain = gather_stats(cands, tokenizer, StatsOptions(n_docs=30))
    with pytest.raises(ProximityError, match="per_document"):
        similarity_matrix(cands, plain, get_metric("paper"), Bootstrap(10))
