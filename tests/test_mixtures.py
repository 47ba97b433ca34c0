"""Mixtures: exact frequencies, the expected vocabulary at a matched budget, and resampling.

Checked against materialised token streams (real tokens, drawn and counted), scipy's
hypergeometric distribution and a Monte Carlo of the draw the expected vocabulary describes.
"""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import hypergeom
from tokenizers import Tokenizer

from proximity.errors import ProximityError
from proximity.metrics import jaccard_similarity
from proximity.mixtures import expected_profile, miss_probability, resample_plan
from proximity.specs import parse_mixture
from proximity.stats import Counts, StatsOptions, count_texts


@pytest.fixture(scope="module")
def tokenizer(pythia_tokenizer_path: Path) -> Tokenizer:
    return Tokenizer.from_file(str(pythia_tokenizer_path))


def _texts(path: Path, field: str, n: int) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line)[field][:4000] for line in islice(handle, n)]


def _stream(texts: list[str], tokenizer: Tokenizer, budget: int) -> np.ndarray:
    """The first `budget` tokens of the documents, each cut to 512 tokens, concatenated."""
    ids = [i for t in texts for i in tokenizer.encode(t, add_special_tokens=False).ids[:512]]
    assert len(ids) >= budget
    return np.array(ids[:budget])


@pytest.fixture(scope="module")
def streams(shared_data: Path, tokenizer: Tokenizer) -> dict[str, tuple[np.ndarray, Counts]]:
    """8,000 web tokens and 2,000 code tokens: as materialised streams and as counted."""
    out = {}
    for name, file, field, budget in (
        ("web", "c4_en_sample.jsonl", "text", 8000),
        ("code", "python_stdlib_code.jsonl", "content", 2000),
    ):
        texts = _texts(shared_data / file, field, 60)
        stats = count_texts(texts, tokenizer, StatsOptions(token_budget=budget))
        out[name] = (_stream(texts, tokenizer, budget), stats.totals())
    return out


def test_mixture_frequencies_equal_a_materialised_stream_in_those_proportions(streams) -> None:
    (web_ids, web), (code_ids, code) = streams["web"], streams["code"]
    # 8,000 web + 2,000 code tokens is exactly 80/20 by tokens: count the stream itself.
    stream = np.concatenate([web_ids, code_ids])
    counted = np.bincount(stream, minlength=web.unigram.size) / stream.size
    mixed = expected_profile([(web, 0.8), (code, 0.2)])
    np.testing.assert_allclose(mixed.unigram, counted, rtol=1e-12, atol=1e-15)


def test_expected_vocabulary_matches_drawing_the_stream_it_describes(streams) -> None:
    """Draw (without replacement) wᵢ·N tokens of each part, N = Σ wᵢ·Nᵢ, many times."""
    (web_ids, web), (code_ids, code) = streams["web"], streams["code"]
    weight = 0.3
    mixed = expected_profile([(web, 1 - weight), (code, weight)])
    budget = (1 - weight) * web_ids.size + weight * code_ids.size
    n_web, n_code = round((1 - weight) * budget), round(weight * budget)
    assert mixed.n_tokens == pytest.approx(n_web + n_code)
    target = np.zeros(web.unigram.size, dtype=bool)
    target[np.unique(web_ids[::7])] = True  # some fixed other vocabulary
    rng = np.random.default_rng(0)
    draws, sizes, overlaps = 800, [], []
    seen = np.zeros(web.unigram.size)
    for _ in range(draws):
        sample = np.concatenate(
            [rng.permutation(web_ids)[:n_web], rng.permutation(code_ids)[:n_code]]
        )
        present = np.zeros(web.unigram.size, dtype=bool)
        present[sample] = True
        seen += present
        sizes.append(present.sum())
        overlaps.append((present & target).sum())
    # E|A| and E|A ∩ B| to within a few standard errors of the Monte Carlo means.
    for expected, observed in (
        (mixed.presence.sum(), np.array(sizes)),
        ((mixed.presence * target).sum(), np.array(overlaps)),
    ):
        assert abs(expected - observed.mean()) < 4 * observed.std() / np.sqrt(draws) + 0.5
    assert np.abs(mixed.presence - seen / draws).max() < 0.07


def test_miss_probability_is_the_hypergeometric_zero_and_continuous_between_integers() -> None:
    counts = np.array([0, 1, 2, 5, 40, 100])
    total = 200
    for drawn in (0, 1, 17, 99, 150, 200):
        expected = hypergeom.pmf(0, total, counts, drawn)
        np.testing.assert_allclose(miss_probability(counts, total, drawn), expected, atol=1e-12)
    # Fractional draws lie between their integer neighbours, and fall to 0 continuously
    # where the draw can no longer avoid a token (here c = 100: at 101 draws).
    grid = np.linspace(99.0, 101.0, 2001)
    values = np.array([miss_probability(np.array([100]), total, d)[0] for d in grid])
    assert np.all(np.diff(values) <= 1e-18) and values[-1] == 0.0
    assert np.abs(np.diff(values)).max() < 1e-3


def test_expected_vocabulary_is_continuous_and_a_parts_own_at_the_ends(streams) -> None:
    (_, web), (_, code) = streams["web"], streams["code"]
    own = web.profile()
    tiny = expected_profile([(web, 1 - 1e-9), (code, 1e-9)])
    assert np.abs(tiny.presence - own.presence).max() < 1e-6
    assert np.abs(tiny.unigram - own.unigram).max() < 1e-8
    solo = expected_profile([(code, 1.0)])
    np.testing.assert_array_equal(solo.presence, code.profile().presence)
    target = code.unigram > 0
    values = [
        jaccard_similarity(p.unigram, target.astype(float), presence_a=p.presence, presence_b=None)
        for p in (expected_profile([(web, 1 - w), (code, w)]) for w in (0.2, 0.2 + 1e-7, 0.5))
    ]
    assert abs(values[1] - values[0]) < 1e-5 and values[2] > values[0]


def test_resample_plan_takes_every_specialised_document_and_pretraining_in_proportion() -> None:
    mix = parse_mixture("c4:0.8+code:0.2")
    c4, code = mix.datasets
    plan = resample_plan(mix, {c4: 5000, code: 1000}, frozenset([c4]), seed=3)
    assert plan.documents[code].tolist() == list(range(1000))
    assert len(plan.documents[c4]) == 4000 and len(set(plan.documents[c4].tolist())) == 4000
    assert plan.notes == ()
    again = resample_plan(mix, {c4: 5000, code: 1000}, frozenset([c4]), seed=3)
    other = resample_plan(mix, {c4: 5000, code: 1000}, frozenset([c4]), seed=4)
    assert np.array_equal(plan.documents[c4], again.documents[c4])
    assert not np.array_equal(plan.documents[c4], other.documents[c4])


def test_resample_plan_says_when_the_pretraining_sample_is_too_small() -> None:
    mix = parse_mixture("c4:0.8+code:0.2")
    c4, code = mix.datasets
    plan = resample_plan(mix, {c4: 1000, code: 1000}, frozenset([c4]), seed=0)
    assert len(plan.documents[c4]) == 1000  # 4,000 wanted, capped as in the authors' script
    assert "4,000 documents needed" in plan.notes[0]
    assert "c4 50%, code 50%" in plan.notes[1]


def test_mixture_weights_must_be_positive() -> None:
    counts = Counts(np.array([1.0, 2.0]), None, 1)
    with pytest.raises(ProximityError, match="positive"):
        expected_profile([(counts, 0.0), (counts, 1.0)])


def _jaccard_of(a, b) -> float:
    return jaccard_similarity(a.unigram, b.unigram, presence_a=a.presence, presence_b=b.presence)


def test_two_mixtures_of_the_same_parts_are_continuous_and_one_with_themselves(streams) -> None:
    """Mixture vs mixture: 1 at equal weights and continuous next to it (independent draws
    of the same parts would give ~0.75 for two mixtures a millionth apart)."""
    (_, web), (_, code) = streams["web"], streams["code"]
    half = expected_profile([(web, 0.5), (code, 0.5)])
    assert _jaccard_of(half, half) == pytest.approx(1.0, abs=1e-12)
    near = expected_profile([(web, 0.5 - 1e-6), (code, 0.5 + 1e-6)])
    assert _jaccard_of(half, near) > 1 - 1e-4
    far = expected_profile([(web, 0.2), (code, 0.8)])
    assert _jaccard_of(half, far) < _jaccard_of(half, near)
    assert _jaccard_of(half, far) == _jaccard_of(far, half)


def test_a_mixture_against_a_fixed_vocabulary_is_the_independent_expectation(streams) -> None:
    """Against a dataset (presence 0 or 1), E|A ∩ B| is Σ π·1: the coupling of the two
    sides cannot matter, so PA is the Monte-Carlo-checked expectation above."""
    (_, web), (_, code) = streams["web"], streams["code"]
    mixed = expected_profile([(web, 0.7), (code, 0.3)])
    fixed = code.profile()
    kept = fixed.presence
    independent = (mixed.presence * kept).sum() / (
        mixed.presence + kept - mixed.presence * kept
    ).sum()
    assert _jaccard_of(mixed, fixed) == pytest.approx(independent, rel=1e-12)


def test_mixture_vs_mixture_matches_draws_in_one_shared_order(streams) -> None:
    """The model behind mixture vs mixture, drawn: each part's tokens in one random order per
    draw, each mixture taking its prefix of it. The formula is exact for tokens of one part
    and an upper bound for tokens in both parts, so it may sit a little above the draws."""
    (web_ids, web), (code_ids, code) = streams["web"], streams["code"]
    mixtures = []
    for weight in (0.3, 0.4):
        budget = (1 - weight) * web_ids.size + weight * code_ids.size
        mixtures.append(
            (
                expected_profile([(web, 1 - weight), (code, weight)]),
                round((1 - weight) * budget),
                round(weight * budget),
            )
        )
    rng = np.random.default_rng(1)
    both, either = [], []
    for _ in range(400):
        web_order, code_order = rng.permutation(web_ids), rng.permutation(code_ids)
        present = []
        for _, n_web, n_code in mixtures:
            mask = np.zeros(web.unigram.size, dtype=bool)
            mask[np.concatenate([web_order[:n_web], code_order[:n_code]])] = True
            present.append(mask)
        both.append((present[0] & present[1]).sum())
        either.append((present[0] | present[1]).sum())
    drawn = np.mean(both) / np.mean(either)  # 0.870 here; independent sides would say 0.600
    formula = _jaccard_of(mixtures[0][0], mixtures[1][0])
    assert formula == pytest.approx(drawn, abs=0.005)
