"""Samplers: infinite seeded training streams, repeat-factor sampling, inference sharding.

Training samplers are *position-indexed*: ``index_at(p)`` gives the dataset index at position
``p`` of this rank's stream as a pure function of (seed, rank, world size, p), so a resumed run
can start at any position without replaying the stream. Epoch ``e`` of the global stream is a
permutation drawn from ``default_rng([seed, e])``; rank ``r`` of ``R`` takes global positions
``r, r + R, r + 2R, ...``. Iteration never ends, so training never sees ``StopIteration``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from detlab.utils.errors import UserError

__all__ = [
    "GroupedBatchStream",
    "InferenceSampler",
    "RepeatFactorTrainingSampler",
    "TrainingSampler",
    "repeat_factors_from_category_frequency",
]


class TrainingSampler:
    """Infinite stream of indices in ``[0, size)``: a fresh seeded permutation per epoch."""

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        """``seed=None`` draws a random seed (the stream is then not reproducible)."""
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
        if size <= 0:
            raise UserError("The training set is empty; check DATASETS.TRAIN and its annotations.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.size, self.shuffle, self.seed = int(size), shuffle, int(seed)
        self.rank, self.world_size = rank, world_size
        self._cache: tuple[int, np.ndarray] | None = None

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            if self.shuffle:
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.size)
            else:
                perm = np.arange(self.size)
            self._cache = (epoch, perm)
        return self._cache[1]

    def global_index_at(self, g: int) -> int:
        epoch, offset = divmod(int(g), self.size)
        return int(self._epoch(epoch)[offset])

    def index_at(self, position: int) -> int:
        """Dataset index at ``position`` of this rank's stream."""
        return self.global_index_at(position * self.world_size + self.rank)

    def iter_from(self, start: int = 0) -> Iterator[int]:
        p = start
        while True:
            yield self.index_at(p)
            p += 1

    def __iter__(self) -> Iterator[int]:
        return self.iter_from(0)


def repeat_factors_from_category_frequency(
    dataset_dicts: Sequence[dict], repeat_thresh: float
) -> np.ndarray:
    """Per-image repeat factor ``max(1, max_c sqrt(t / f_c))`` over the image's classes.

    ``f_c`` is the fraction of images holding class ``c`` (LVIS, Gupta et al. 2019).
    """
    n = len(dataset_dicts)
    per_image = [{a["category_id"] for a in d.get("annotations", [])} for d in dataset_dicts]
    freq: dict[int, float] = {}
    for cats in per_image:
        for c in cats:
            freq[c] = freq.get(c, 0.0) + 1.0
    factors = {c: max(1.0, math.sqrt(repeat_thresh / (k / n))) for c, k in freq.items()}
    return np.array([max([factors[c] for c in cats], default=1.0) for cats in per_image])


class RepeatFactorTrainingSampler(TrainingSampler):
    """Like :class:`TrainingSampler`, but image ``i`` appears ``r_i`` times per epoch on average.

    Each epoch rounds ``r_i`` stochastically (integer part, plus one with probability of the
    fractional part), then shuffles the expanded list; epochs therefore differ in length.
    """

    def __init__(
        self,
        repeat_factors: Sequence[float],
        shuffle: bool = True,
        seed: int | None = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        factors = np.asarray(repeat_factors, dtype=np.float64)
        super().__init__(len(factors), shuffle, seed, rank, world_size)
        self.factors = factors
        self._starts = [0]  # global start position of each epoch computed so far

    @staticmethod
    def repeat_factors_from_category_frequency(
        dataset_dicts: Sequence[dict], repeat_thresh: float
    ) -> np.ndarray:
        """Same as the module-level :func:`repeat_factors_from_category_frequency`."""
        return repeat_factors_from_category_frequency(dataset_dicts, repeat_thresh)

    def _epoch(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            whole = np.floor(self.factors)
            reps = whole + (rng.random(len(self.factors)) < self.factors - whole)
            idx = np.repeat(np.arange(len(self.factors)), reps.astype(np.int64))
            if self.shuffle:
                idx = idx[rng.permutation(len(idx))]
            self._cache = (epoch, idx)
        return self._cache[1]

    def _epoch_len(self, epoch: int) -> int:
        rng = np.random.default_rng([self.seed, epoch])
        whole = np.floor(self.factors)
        return int((whole + (rng.random(len(self.factors)) < self.factors - whole)).sum())

    def global_index_at(self, g: int) -> int:
        g = int(g)
        while self._starts[-1] <= g:
            self._starts.append(self._starts[-1] + self._epoch_len(len(self._starts) - 1))
        epoch = int(np.searchsorted(self._starts, g, side="right")) - 1
        return int(self._epoch(epoch)[g - self._starts[epoch]])


class GroupedBatchStream:
    """Batches of ``batch_size`` indices from a sampler, each batch of one group when possible.

    The stream is cut into windows of ``batch_size * window`` positions; inside a window,
    indices are batched per group (e.g. landscape/portrait) in stream order and the leftovers
    of all groups fill the window's last batches. Batch ``k`` is a pure function of the
    sampler's stream, so grouping keeps resumes exact. ``batch_keys(k)`` returns
    ``[(global position, index), ...]``.
    """

    def __init__(
        self,
        sampler: TrainingSampler,
        batch_size: int,
        groups: Sequence[int] | None = None,
        window: int = 8,
    ) -> None:
        self.sampler, self.batch_size = sampler, int(batch_size)
        self.groups = None if groups is None else np.asarray(groups)
        self.window = int(window) if groups is not None else 1
        self._cache: tuple[int, list[list[tuple[int, int]]]] | None = None

    def _window(self, w: int) -> list[list[tuple[int, int]]]:
        if self._cache is not None and self._cache[0] == w:
            return self._cache[1]
        b = self.batch_size
        start = w * b * self.window
        world, rank = self.sampler.world_size, self.sampler.rank
        # key = (global stream position, dataset index): the position seeds augmentation
        keys = [
            (p * world + rank, self.sampler.index_at(p))
            for p in range(start, start + b * self.window)
        ]
        if self.groups is None:
            batches = [keys[i : i + b] for i in range(0, len(keys), b)]
        else:
            buckets: dict[int, list[tuple[int, int]]] = {}
            batches, rest = [], []
            for key in keys:
                bucket = buckets.setdefault(int(self.groups[key[1]]), [])
                bucket.append(key)
                if len(bucket) == b:
                    batches.append(list(bucket))
                    bucket.clear()
            for g in sorted(buckets):
                rest.extend(buckets[g])
            batches.extend(rest[i : i + b] for i in range(0, len(rest), b))
        self._cache = (w, batches)
        return batches

    def batch_keys(self, k: int) -> list[tuple[int, int]]:
        w, offset = divmod(int(k), self.window)
        return self._window(w)[offset]

    def iter_from(self, start: int = 0) -> Iterator[list[tuple[int, int]]]:
        k = start
        while True:
            yield self.batch_keys(k)
            k += 1


class InferenceSampler:
    """Each index of ``[0, size)`` exactly once, in order; rank ``r`` gets a contiguous shard."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1) -> None:
        shard = (size + world_size - 1) // world_size
        self.indices = range(rank * shard, min(size, (rank + 1) * shard))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
