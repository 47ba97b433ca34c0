"""The n-gram baselines against hand-worked values and a Markov chain with a known entropy rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from proximity.errors import ProximityError
from proximity.training.ngram_baseline import ngram_losses


def test_unigram_loss_is_the_add_one_estimate_worked_by_hand():
    # counts over [0, 1, 0, 1] x 5: c0 = c1 = 10, c2 = 0, N = 20, V = 3
    train = np.array([0, 1] * 10)
    losses = ngram_losses(train, np.array([0, 1, 2]), vocab_size=3)
    p1, p2 = 11 / 23, 1 / 23
    assert losses.unigram == pytest.approx(-(math.log(p1) + math.log(p2)) / 2, rel=1e-12)
    assert losses.scored_tokens == 2


def test_bigram_of_a_deterministic_alternation_is_near_zero_where_unigram_is_log_two():
    train = np.array([0, 1] * 500)
    losses = ngram_losses(train, np.array([0, 1] * 50), vocab_size=2)
    assert losses.unigram == pytest.approx(math.log(2), abs=1e-3)
    assert losses.bigram < 0.01
    assert losses.bigram_weight > 0.99


def _markov_stream(transition: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(transition, axis=1)
    out = np.empty(n, dtype=np.int64)
    state = 0
    uniforms = rng.random(n)
    for i in range(n):
        state = int(np.searchsorted(cumulative[state], uniforms[i]))
        out[i] = state
    return out


def test_a_markov_chain_gives_its_entropy_rate_and_its_stationary_entropy():
    transition = np.array([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2], [0.5, 0.25, 0.25]])
    values, vectors = np.linalg.eig(transition.T)
    stationary = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    stationary /= stationary.sum()
    entropy_rate = -np.sum(stationary[:, None] * transition * np.log(transition))
    stationary_entropy = -np.sum(stationary * np.log(stationary))
    train = _markov_stream(transition, 60_000, seed=1)
    held_out = _markov_stream(transition, 20_000, seed=2)
    losses = ngram_losses(train, held_out, vocab_size=3)
    assert losses.bigram == pytest.approx(entropy_rate, abs=0.015)
    assert losses.unigram == pytest.approx(stationary_entropy, abs=0.015)
    assert losses.bigram < losses.unigram


def test_unseen_contexts_fall_back_to_the_unigram_and_bad_ids_are_refused():
    train = np.array([0, 1] * 20)
    losses = ngram_losses(train, np.array([2, 0]), vocab_size=3)  # context 2 never seen
    assert losses.bigram == pytest.approx(-math.log(21 / 43), rel=1e-12)
    with pytest.raises(ProximityError, match="vocab_size"):
        ngram_losses(train, np.array([0, 5]), vocab_size=3)
