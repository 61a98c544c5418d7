"""Samplers: infinite seeded streams, sharding, repeat factors, aspect-ratio grouping."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np

from detlab.data import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from detlab.data.samplers import GroupedBatchStream


def test_training_sampler_epochs_are_permutations_and_seeded():
    s = TrainingSampler(7, seed=3)
    stream = list(itertools.islice(iter(s), 21))
    for e in range(3):
        assert sorted(stream[7 * e : 7 * e + 7]) == list(range(7))
    assert stream[:7] != stream[7:14]
    assert stream == list(itertools.islice(iter(TrainingSampler(7, seed=3)), 21))
    assert stream != list(itertools.islice(iter(TrainingSampler(7, seed=4)), 21))
    assert [s.index_at(p) for p in range(15, 21)] == stream[15:21]


def test_sharded_ranks_partition_the_global_stream():
    full = list(itertools.islice(iter(TrainingSampler(10, seed=1)), 40))
    ranks = [TrainingSampler(10, seed=1, rank=r, world_size=2) for r in range(2)]
    shards = [list(itertools.islice(iter(r), 20)) for r in ranks]
    assert shards[0] == full[0::2] and shards[1] == full[1::2]


def test_repeat_factor_oversamples_the_rare_class():
    # 90 images of class 0, 10 images of class 1: f_1 = 0.1, threshold 0.5 -> r = sqrt(5)
    dicts = [{"annotations": [{"category_id": 0}]} for _ in range(90)]
    dicts += [{"annotations": [{"category_id": 1}]} for _ in range(10)]
    factors = repeat_factors_from_category_frequency(dicts, 0.5)
    assert np.allclose(factors[:90], 1.0) and np.allclose(factors[90:], np.sqrt(5))
    s = RepeatFactorTrainingSampler(factors, seed=0)
    draws = Counter(dicts[i]["annotations"][0]["category_id"] for i in itertools.islice(s, 20000))
    expected = 10 * np.sqrt(5) / (90 + 10 * np.sqrt(5))
    assert abs(draws[1] / 20000 - expected) < 0.02
    plain = Counter(
        dicts[i]["annotations"][0]["category_id"]
        for i in itertools.islice(TrainingSampler(100), 20000)
    )
    assert draws[1] > 1.8 * plain[1]
    # position-indexed: a fresh sampler jumps straight to the same indices
    stream = list(itertools.islice(iter(RepeatFactorTrainingSampler(factors, seed=0)), 700))
    fresh = RepeatFactorTrainingSampler(factors, seed=0)
    assert [fresh.index_at(p) for p in range(650, 700)] == stream[650:]


def test_grouped_batches_are_position_indexed_and_use_every_position():
    groups = [i % 3 == 0 for i in range(30)]
    stream = GroupedBatchStream(TrainingSampler(30, seed=2), 4, groups, window=5)
    batches = [stream.batch_keys(k) for k in range(20)]
    positions = sorted(p for b in batches for p, _ in b)
    assert positions == list(range(80))
    pure = sum(len({groups[i] for _, i in b}) == 1 for b in batches)
    assert pure >= 14  # at most one mixed leftover batch per group boundary and window
    again = GroupedBatchStream(TrainingSampler(30, seed=2), 4, groups, window=5)
    assert [again.batch_keys(k) for k in range(13, 20)] == batches[13:]


def test_inference_sampler_shards_cover_once():
    shards = [list(InferenceSampler(10, r, 3)) for r in range(3)]
    assert sum(shards, []) == list(range(10))


def test_batch_keys_carry_global_positions_per_rank():
    streams = [
        GroupedBatchStream(TrainingSampler(9, seed=1, rank=r, world_size=2), 3) for r in range(2)
    ]
    keys = [[k for b in range(4) for k in s.batch_keys(b)] for s in streams]
    assert [p for p, _ in keys[0]] == list(range(0, 24, 2))
    assert [p for p, _ in keys[1]] == list(range(1, 24, 2))
    full = TrainingSampler(9, seed=1)
    assert all(full.index_at(p) == i for ks in keys for p, i in ks)
