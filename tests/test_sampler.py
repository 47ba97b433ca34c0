"""Packed sequences and the mixture sampler: proportions, determinism, world-size invariance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from proximity.errors import ProximityError
from proximity.tokenizer import load_tokenizer
from proximity.training.data.sampler import MixtureSampler, PackedSequences, feistel_permute
from proximity.training.data.tokenized import tokenize_dataset

SEQ_LEN = 32


@pytest.fixture(scope="module")
def sources(
    shared_data: Path, pythia_tokenizer_path: Path, tmp_path_factory
) -> list[PackedSequences]:
    """Real token streams of three domains: web text, code and math."""
    tokenizer = load_tokenizer(str(pythia_tokenizer_path))
    cache = tmp_path_factory.mktemp("tokens")
    streams = [
        tokenize_dataset(
            spec, tokenizer, cache_dir=cache, data_dir=shared_data, n_docs=n, progress=False
        )
        for spec, n in (("c4", 100), ("starcoder", 10), ("gsm8k", 200))
    ]
    return [PackedSequences(stream.train, SEQ_LEN) for stream in streams]


def test_windows_share_one_token_and_cover_the_stream():
    tokens = np.arange(105, dtype=np.uint16)
    packed = PackedSequences(tokens, 10)
    assert len(packed) == 10
    assert packed[0].dtype == np.int64 and packed[0].shape == (11,)
    assert packed[1][0] == packed[0][-1]
    targets = np.concatenate([packed[i][1:] for i in range(len(packed))])
    assert np.array_equal(targets, np.arange(1, 101))
    with pytest.raises(IndexError):
        packed[10]
    assert len(PackedSequences(tokens[:10], 10)) == 0  # too short: zero windows, no error


def test_realised_proportions_match_the_weights(sources):
    weights = [0.2, 0.5, 0.3]
    sampler = MixtureSampler(sources, weights, seed=0)
    steps, batch_size = 1000, 32
    drawn = np.concatenate([sampler.source_of(step, batch_size) for step in range(steps)])
    n = steps * batch_size
    for k, weight in enumerate(weights):
        tolerance = 4 * np.sqrt(weight * (1 - weight) / n)  # 4 binomial standard deviations
        assert abs((drawn == k).mean() - weight) < tolerance
    # The rows really come from the source `source_of` names.
    batch = sampler.batch(7, batch_size)
    chosen, indices = sampler.sequence_indices(7, batch_size)
    for row, k, i in zip(batch, chosen, indices, strict=True):
        assert torch.equal(row, torch.from_numpy(sources[k][i]))


def test_batches_are_a_pure_function_of_seed_and_step(sources):
    weights = [0.6, 0.2, 0.2]
    first = MixtureSampler(sources, weights, seed=3)
    fresh = MixtureSampler(sources, weights, seed=3)  # a resumed run builds a new sampler
    forward = [first.batch(step, 8) for step in range(20)]
    backward = [fresh.batch(step, 8) for step in reversed(range(20))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward, strict=True))
    assert not torch.equal(forward[0], forward[1])
    assert not torch.equal(forward[0], MixtureSampler(sources, weights, seed=4).batch(0, 8))


@pytest.mark.parametrize("world_size", [2, 4, 8])
def test_global_batch_is_identical_for_any_world_size(sources, world_size):
    sampler = MixtureSampler(sources, [0.5, 0.25, 0.25], seed=1)
    for step in (0, 5, 123):
        whole = sampler.batch(step, 16)
        shards = [sampler.batch(step, 16, rank, world_size) for rank in range(world_size)]
        assert all(shard.shape == (16 // world_size, SEQ_LEN + 1) for shard in shards)
        rebuilt = torch.empty_like(whole)
        for rank, shard in enumerate(shards):
            rebuilt[rank::world_size] = shard
        assert torch.equal(rebuilt, whole)


def test_a_single_source_epoch_visits_every_sequence_once(sources):
    source = sources[0]
    sampler = MixtureSampler([source], [1.0], seed=0)
    batch_size = 7
    steps = -(-2 * len(source) // batch_size)
    seen = np.concatenate([sampler.sequence_indices(s, batch_size)[1] for s in range(steps)])
    first_epoch, second_epoch = seen[: len(source)], seen[len(source) : 2 * len(source)]
    assert np.array_equal(np.sort(first_epoch), np.arange(len(source)))
    assert np.array_equal(np.sort(second_epoch), np.arange(len(source)))
    assert not np.array_equal(first_epoch, second_epoch)  # each epoch is reshuffled


@pytest.mark.parametrize("n", [1, 2, 3, 10, 257, 4096, 100_003])
def test_feistel_permutation_is_a_bijection(n):
    permuted = feistel_permute(np.arange(n), n, key=12345)
    assert np.array_equal(np.sort(permuted), np.arange(n))
    if n > 10:
        assert not np.array_equal(permuted, np.arange(n))


def test_bad_weights_and_batch_sizes_name_the_problem(sources):
    with pytest.raises(ProximityError, match="sum to"):
        MixtureSampler(sources, [0.5, 0.5, 0.5], seed=0)
    with pytest.raises(ProximityError, match="3 sources"):
        MixtureSampler(sources, [1.0], seed=0)
    with pytest.raises(ProximityError, match="same seq_len"):
        MixtureSampler([sources[0], PackedSequences(sources[1].tokens, 16)], [0.5, 0.5], seed=0)
    too_short = PackedSequences(np.arange(SEQ_LEN, dtype=np.uint16), SEQ_LEN)
    with pytest.raises(ProximityError, match="n_docs"):
        MixtureSampler([sources[0], too_short], [0.5, 0.5], seed=0)
    sampler = MixtureSampler(sources, [0.2, 0.4, 0.4], seed=0)
    with pytest.raises(ProximityError, match="divisible by world_size"):
        sampler.batch(0, 10, rank=0, world_size=4)
