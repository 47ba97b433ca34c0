"""The document bootstrap: its intervals cover the true value as often as they claim.

Synthetic corpora with a known distribution: each document picks one of three topics and
draws its tokens from that topic (so documents are correlated bundles of tokens, as real
ones are, and resampling tokens instead of documents would be too narrow). Two corpora mix
the topics differently; the true similarity is the metric of their population
distributions. Each simulated pair of corpora gets a bootstrap interval; the share of
intervals that contain the truth must be close to the confidence level.
"""

from __future__ import annotations

import numpy as np
import pytest

from proximity.bootstrap import Bootstrap, document_bootstrap
from proximity.errors import ProximityError
from proximity.metrics import cosine_similarity, js_similarity

VOCAB, DOC_LEN, N_DOCS = 300, 40, 120
TOPIC_MIX = {"a": np.array([0.6, 0.3, 0.1]), "b": np.array([0.2, 0.3, 0.5])}


def _topics(rng: np.random.Generator) -> np.ndarray:
    return rng.dirichlet(np.full(VOCAB, 0.3), size=3)


def _corpus(rng: np.random.Generator, topics: np.ndarray, mix: np.ndarray) -> np.ndarray:
    """Documents × vocabulary counts."""
    chosen = rng.choice(3, size=N_DOCS, p=mix)
    return np.stack([rng.multinomial(DOC_LEN, topics[k]) for k in chosen]).astype(np.float64)


def _coverage(metric, method: str, level: float, simulations: int) -> float:
    rng = np.random.default_rng(12)
    topics = _topics(rng)
    truth = metric(TOPIC_MIX["a"] @ topics, TOPIC_MIX["b"] @ topics)
    hits = 0
    for sim in range(simulations):
        docs = {name: _corpus(rng, topics, mix) for name, mix in TOPIC_MIX.items()}

        def statistic(weights, docs=docs):
            return np.array([metric(weights["a"] @ docs["a"], weights["b"] @ docs["b"])])

        low, high = document_bootstrap(
            statistic,
            {name: N_DOCS for name in docs},
            Bootstrap(n_resamples=150, seed=sim, level=level, method=method),  # type: ignore[arg-type]
        )
        hits += bool(low[0] <= truth <= high[0])
    return hits / simulations


@pytest.mark.parametrize("metric", [cosine_similarity, js_similarity])
def test_the_default_interval_covers_the_true_similarity_at_its_level(metric) -> None:
    # 150 simulations at level 0.9: the binomial sd of the coverage is 0.025.
    coverage = _coverage(metric, Bootstrap().method, 0.9, 150)
    assert 0.82 <= coverage <= 0.97, coverage


def test_percentile_intervals_miss_a_biased_similarity_which_is_why_basic_is_default() -> None:
    """Also shows the check can fail: a sample's cosine is biased low, its replicates more."""
    assert _coverage(cosine_similarity, "percentile", 0.9, 150) < 0.75


def test_the_default_interval_covers_the_true_proximity_advantage() -> None:
    rng = np.random.default_rng(5)
    topics = _topics(rng)
    mixes = {"c4": [0.7, 0.2, 0.1], "x": [0.05, 0.15, 0.8], "t": [0.2, 0.2, 0.6]}
    true = {name: np.array(mix) @ topics for name, mix in mixes.items()}

    def advantage(p: dict[str, np.ndarray]) -> float:
        return cosine_similarity(0.8 * p["c4"] + 0.2 * p["x"], p["t"]) - cosine_similarity(
            p["c4"], p["t"]
        )

    truth, hits, simulations = advantage(true), 0, 120
    for sim in range(simulations):
        docs = {name: _corpus(rng, topics, np.array(mix)) for name, mix in mixes.items()}

        def statistic(weights, docs=docs):
            counts = {name: weights[name] @ docs[name] for name in docs}
            return np.array([advantage({k: v / v.sum() for k, v in counts.items()})])

        low, high = document_bootstrap(
            statistic, dict.fromkeys(docs, N_DOCS), Bootstrap(150, seed=sim, level=0.9)
        )
        hits += bool(low[0] <= truth <= high[0])
    assert 0.8 <= hits / simulations <= 0.97, hits / simulations


def test_replicates_resample_each_dataset_once_and_share_it() -> None:
    seen = []

    def statistic(weights):
        seen.append({k: v.copy() for k, v in weights.items()})
        return np.array([weights["x"].sum(), weights["y"].sum(), weights["x"] @ np.arange(5)])

    low, high = document_bootstrap(statistic, {"x": 5, "y": 7}, Bootstrap(30, seed=1))
    assert all(w["x"].sum() == 5 and w["y"].sum() == 7 for w in seen)
    assert low[0] == high[0] == 5 and low[1] == high[1] == 7  # constant: both bounds
    assert low[2] < high[2]


def test_bca_on_a_statistic_that_every_replicate_undershoots_says_what_to_use() -> None:
    # Distinct documents drawn: n in the sample, about 0.63·n in every replicate.
    def distinct(weights):
        return np.array([np.count_nonzero(weights["x"])])

    with pytest.raises(ProximityError, match="use --ci-method basic"):
        document_bootstrap(distinct, {"x": 50}, Bootstrap(40, method="bca"))
    low, high = document_bootstrap(distinct, {"x": 50}, Bootstrap(40, method="basic"))
    assert 50 < low[0] < high[0]  # basic moves the interval up by the replicates' shortfall


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"n_resamples": 1}, "--bootstrap"),
        ({"level": 1.5}, "--ci-level"),
        ({"method": "centered"}, "--ci-method must be one of percentile, basic, bca"),
    ],
)
def test_bad_bootstrap_settings_name_the_flag(settings, message) -> None:
    with pytest.raises(ProximityError, match=message):
        Bootstrap(**settings)
