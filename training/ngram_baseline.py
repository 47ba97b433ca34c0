"""Unigram and interpolated-bigram baselines for a pretraining run's validation loss.

A model whose C4 validation loss is above a bigram model counted from its own training text
has learnt little beyond token frequencies; asking whether unigram statistics predict its
fine-tuning gains is then close to circular. These baselines are counted from the same
training tokens (same tokenizer, same held-out documents) and scored on exactly the positions
the model's validation loss scores, so the numbers compare directly (nats per token).

The bigram model is Jelinek-Mercer interpolation with the add-one unigram,
`P(b | a) = lam * c(a, b) / c(a) + (1 - lam) * P_uni(b)` (`P_uni` alone when `a` was never
seen), with `lam` chosen on the last tenth of the training stream, counted from the rest, then
the counts redone on the whole stream. Counts are sparse (sorted pair codes), so a 50k
vocabulary costs memory in the distinct pairs seen, not vocabulary squared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.config import RunConfig
from proximity.training.phases import tokenized_build

TUNE_FRACTION = 0.1  # the tail of the training stream that picks the interpolation weight


@dataclass(frozen=True)
class NgramLosses:
    """Mean held-out loss (nats per token) of the two baselines, and the chosen weight."""

    unigram: float
    bigram: float
    bigram_weight: float
    scored_tokens: int


class _Counts:
    def __init__(self, stream: np.ndarray, vocab_size: int) -> None:
        stream = np.asarray(stream, dtype=np.int64)
        self.vocab_size = vocab_size
        self.unigram = np.bincount(stream, minlength=vocab_size).astype(np.float64)
        self.total = float(len(stream))
        previous = np.bincount(stream[:-1], minlength=vocab_size).astype(np.float64)
        self.context = previous  # c(a) as a context: occurrences followed by a token
        codes = stream[:-1] * vocab_size + stream[1:]
        self.pair_codes, pair_counts = np.unique(codes, return_counts=True)
        self.pair_counts = pair_counts.astype(np.float64)

    def unigram_prob(self, tokens: np.ndarray) -> np.ndarray:
        return (self.unigram[tokens] + 1.0) / (self.total + self.vocab_size)

    def bigram_ml(self, before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(c(a, b) / c(a) or 0, whether a was seen as a context)."""
        codes = before * self.vocab_size + after
        where = np.searchsorted(self.pair_codes, codes)
        where = np.minimum(where, len(self.pair_codes) - 1)
        found = self.pair_codes[where] == codes
        pair = np.where(found, self.pair_counts[where], 0.0)
        context = self.context[before]
        seen = context > 0
        return np.where(seen, pair / np.maximum(context, 1.0), 0.0), seen


def _bigram_nll(counts: _Counts, before: np.ndarray, after: np.ndarray, lam: float) -> float:
    ml, seen = counts.bigram_ml(before, after)
    uni = counts.unigram_prob(after)
    prob = np.where(seen, lam * ml + (1.0 - lam) * uni, uni)
    return float(-np.mean(np.log(prob)))


def ngram_losses(
    train: np.ndarray, scored: np.ndarray, vocab_size: int, *, tune_fraction: float = TUNE_FRACTION
) -> NgramLosses:
    """Baselines counted on `train`, scored on `scored[1:]` given the token before each.

    `scored` is the token stream whose positions 1.. the model is scored on (for packed
    validation windows of length L+1 sharing one token, the first n*L+1 validation tokens).
    """
    train = np.asarray(train, dtype=np.int64)
    scored = np.asarray(scored, dtype=np.int64)
    if len(scored) < 2:
        raise ProximityError("the scored stream needs at least two tokens")
    if len(train) < 20:
        raise ProximityError(f"only {len(train)} training tokens: too few to count n-grams")
    if max(int(train.max()), int(scored.max())) >= vocab_size:
        raise ProximityError(f"a token id is >= vocab_size={vocab_size}")
    cut = int(len(train) * (1.0 - tune_fraction))
    fit, tune = _Counts(train[:cut], vocab_size), train[cut - 1 :]
    found = minimize_scalar(
        lambda lam: _bigram_nll(fit, tune[:-1], tune[1:], lam),
        bounds=(0.0, 0.999),
        method="bounded",
        options={"xatol": 1e-3},
    )
    lam = float(found.x)
    counts = _Counts(train, vocab_size)
    before, after = scored[:-1], scored[1:]
    return NgramLosses(
        unigram=float(-np.mean(np.log(counts.unigram_prob(after)))),
        bigram=_bigram_nll(counts, before, after, lam),
        bigram_weight=lam,
        scored_tokens=len(after),
    )


def pretraining_baselines(run_config: dict) -> NgramLosses:
    """The baselines for a pretraining run's config (a grid node's `run_config`): its training
    data's build, scored on the validation positions its evaluation scores."""
    cfg = RunConfig.from_dict(run_config)
    tokenizer = load_tokenizer(cfg.data.tokenizer, data_dir=cfg.data.data_dir)
    build = tokenized_build(cfg, cfg.data.train, tokenizer, progress=False, build=True)
    seq_len = cfg.model.seq_len
    windows = (len(build.val) - 1) // seq_len
    if cfg.eval.max_batches is not None:
        windows = min(windows, cfg.eval.max_batches * cfg.eval.batch_size)
    scored = np.asarray(build.val[: windows * seq_len + 1])
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    return ngram_losses(np.asarray(build.train), scored, vocab)
