"""Train and test loaders: datasets from the catalog, mapper, sampler, worker processes.

Exact resume: the train loader is a stream of batches indexed by iteration. Batch ``k`` holds
the images at stream positions fixed by the sampler (seed, rank, world size) and each image's
augmentation draws from ``default_rng([seed, position, attempt])``; so
``build_detection_train_loader(cfg, start_iter=k)`` yields exactly what an uninterrupted loader
yields from batch ``k`` on, for any ``DATALOADER.NUM_WORKERS``. The seed is ``cfg.SEED`` when
non-negative, else the ``seed`` argument, else ``torch.initial_seed()`` (set it to resume).

Robustness: an unreadable image (or a mapper error on one image) is skipped, warned once and
replaced by another image drawn from the same seeded stream; ``loader.stats()`` returns the
running counts ``skipped_images``, ``dropped_boxes``, ``clipped_boxes`` (the trainer logs them
as ``data/<key>``). If a worker process dies (killed by the OOM killer, a crash), the loader
warns, counts it (``worker_failures``) and starts fresh workers at the same batch; after
``MAX_WORKER_RESTARTS`` restarts it continues in-process. A worker's death never surfaces as
an exception elsewhere in the training step (see :mod:`detlab.data.worker_watch`).
"""

from __future__ import annotations

import logging
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detlab.data import counters, worker_watch
from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.data.datasets.quirks import check_unique_images, load_counters
from detlab.data.datasets.register import register_from_config
from detlab.data.mappers.build import MAPPER_REGISTRY, check_mapper
from detlab.data.mappers.mosaic import MosaicMapper
from detlab.data.samplers import (
    GroupedBatchStream,
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from detlab.utils.errors import UserError
from detlab.utils.registry import instantiate

__all__ = [
    "TestDataLoader",
    "TrainDataLoader",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_mapper",
    "get_detection_dataset_dicts",
]

logger = logging.getLogger(__name__)
MAX_ATTEMPTS = 64  # consecutive unusable images before giving up on a dataset
WORKER_TIMEOUT = 600.0  # seconds without a batch from the workers before loading in-process
MAX_WORKER_RESTARTS = 3  # fresh worker pools after deaths, then in-process loading
_WORKER_DEATH = (ConnectionError, BrokenPipeError, EOFError)


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def get_detection_dataset_dicts(
    names: str | Sequence[str], filter_empty: bool = False
) -> list[dict]:
    """Concatenated dataset dicts of ``names``; optionally without images lacking boxes."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise UserError("No dataset given; set DATASETS.TRAIN / DATASETS.TEST.")
    dicts: list[dict] = []
    owners: list[str] = []
    classes = None
    for name in names:
        part = DatasetCatalog.get(name)
        meta_classes = MetadataCatalog.get(name).get("thing_classes")
        if classes is not None and meta_classes is not None and meta_classes != classes:
            raise UserError(
                f"Dataset '{name}' has classes {meta_classes} but '{names[0]}' has {classes}; "
                "datasets trained together must share their class list."
            )
        classes = classes or meta_classes
        if not part:
            logger.warning("Dataset '%s' is empty.", name)
        dicts.extend(part)
        owners.extend([name] * len(part))
    if len(names) > 1:  # each reader checks its own set; an image may not be in two of them
        check_unique_images(dicts, lambda i: f"dataset '{owners[i]}'", f"Datasets {names}")
    if filter_empty:
        before = len(dicts)
        dicts = [d for d in dicts if any(not a.get("iscrowd", 0) for a in d.get("annotations", []))]
        if len(dicts) < before:
            logger.info("Dropped %d images without boxes from training.", before - len(dicts))
    return dicts


def build_mapper(cfg: Any, is_train: bool) -> Callable:
    """The ``DATALOADER.MAPPER`` mapper built from the config (checked: ``mapper(d, rng)``)."""
    return MAPPER_REGISTRY.build(cfg.DATALOADER.MAPPER, cfg, is_train)


class _PositionDataset(Dataset):
    """Map-style view: key ``(position, index[, late])`` → ``(mapped dict, counts)``; ``late``
    picks ``late_mapper`` (the closed mosaic pipeline) instead of ``mapper``."""

    def __init__(
        self,
        dicts: list[dict],
        mapper: Callable,
        seed: int,
        random_fallback: bool,
        late_mapper: Callable | None = None,
    ):
        check_mapper(mapper)
        if late_mapper is not None:
            check_mapper(late_mapper)
        self.dicts, self.mapper, self.seed = dicts, mapper, seed
        self.random_fallback = random_fallback
        self.late_mapper = mapper if late_mapper is None else late_mapper

    def __len__(self) -> int:
        return len(self.dicts)

    def __getitem__(self, key: tuple) -> tuple[dict | None, dict]:
        position, index, *late = key
        mapper = self.late_mapper if late and late[0] else self.mapper
        total: Counter = Counter()
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng([self.seed, position, attempt])
            if attempt:
                if not self.random_fallback:
                    return None, dict(total)
                index = int(rng.integers(len(self.dicts)))
            d = self.dicts[index]
            with counters.collect() as counts:
                try:
                    out = mapper(d, rng)
                except UserError:
                    raise
                except Exception as err:  # bad data must not end a run
                    counters.warn_once(
                        logger,
                        f"err:{d.get('file_name')}",
                        "Skipping image %s: the mapper failed with %s\n%s",
                        d.get("file_name"),
                        repr(err),
                        traceback.format_exc(limit=3),
                    )
                    counters.count("skipped_images")
                    out = None
            total.update(counts)
            if out is not None:
                return out, dict(total)
        raise UserError(
            f"{MAX_ATTEMPTS} images in a row could not be loaded (last: {d.get('file_name')}); "
            "check the dataset's image_root and files."
        )


def _identity(batch: list) -> list:
    return batch


def _worker_init(_: int) -> None:
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


class _Loader:
    """Shared iteration machinery: worker processes with in-process fallback, counters."""

    def __init__(self, dataset: _PositionDataset, num_workers: int, base_stats: dict) -> None:
        self.dataset, self.num_workers = dataset, int(num_workers)
        self._stats: Counter = Counter({k: 0 for k in _STAT_KEYS})
        self._stats.update(base_stats)
        self.base_stats = dict(base_stats)  # counted by the dataset readers, the same per rank

    def stats(self) -> dict[str, int]:
        """Running counts: ``skipped_images``, ``dropped_boxes``, ``clipped_boxes``, ..."""
        return dict(self._stats)

    def _batches_from(self, keys: Iterator[list], workers: int) -> Iterator[list]:
        if workers <= 0:
            for batch in keys:
                yield [self.dataset[k] for k in batch]
            return
        loader = DataLoader(
            self.dataset,
            batch_sampler=keys,
            num_workers=workers,
            collate_fn=_identity,
            worker_init_fn=_worker_init,
            prefetch_factor=2,
            timeout=WORKER_TIMEOUT,
        )
        # Workers forked after OpenCV ran multi-threaded in this process inherit a broken
        # thread pool and hang on their first cv2 call: fork them from a 1-thread pool, then
        # give this process its own setting back.
        cv_threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            batches = iter(loader)  # starts the worker processes
        finally:
            cv2.setNumThreads(cv_threads)
        worker_watch.install()
        yield from worker_watch.WatchedIterator(batches)

    def _run(self, make_keys: Callable[[int], Iterator[list]], start: int) -> Iterator[list]:
        done = start
        workers = self.num_workers
        restarts = 0
        while True:
            try:
                for raw in self._batches_from(make_keys(done), workers):
                    batch = []
                    for out, counts in raw:
                        self._stats.update(counts)
                        counters.add_to_totals(counts)
                        if out is not None:
                            batch.append(out)
                    done += 1
                    yield batch
                return
            except UserError:
                raise
            except (RuntimeError, *_WORKER_DEATH) as err:
                text = str(err).lower()
                worker_death = isinstance(err, _WORKER_DEATH) or "worker" in text
                worker_death = worker_death or "timed out" in text
                if workers <= 0 or not worker_death:
                    raise
                what = str(err).splitlines()[0] if str(err) else type(err).__name__
                self._stats["worker_failures"] += 1
                counters.add_to_totals({"worker_failures": 1})
                restarts += 1
                if restarts <= MAX_WORKER_RESTARTS:
                    logger.warning(
                        "DataLoader worker processes failed (%s); starting %d fresh workers at "
                        "batch %d (restart %d of %d).",
                        what,
                        workers,
                        done,
                        restarts,
                        MAX_WORKER_RESTARTS,
                    )
                    continue
                logger.warning(
                    "DataLoader worker processes failed again (%s); continuing with in-process "
                    "loading at batch %d (set DATALOADER.NUM_WORKERS 0 to silence this).",
                    what,
                    done,
                )
                workers = 0


_STAT_KEYS = ("skipped_images", "dropped_boxes", "clipped_boxes")


class TrainDataLoader(_Loader):
    """Infinite iterable of batches (``list[dict]``) starting at batch ``start_iter``."""

    def __init__(
        self,
        dataset_dicts: list[dict],
        mapper: Callable,
        batch_stream: GroupedBatchStream,
        *,
        seed: int,
        num_workers: int = 0,
        start_iter: int = 0,
        base_stats: dict | None = None,
        late_mapper: Callable | None = None,
        late_from: int | None = None,
    ) -> None:
        """``late_mapper`` (if given) maps the images of loader batches ``late_from`` and later
        (e.g. the mosaic pipeline closed for the last iterations): a function of the batch
        index, so a loader started at any ``start_iter`` switches at the same batch."""
        dataset = _PositionDataset(dataset_dicts, mapper, seed, True, late_mapper)
        super().__init__(dataset, num_workers, base_stats or {})
        self.batch_stream, self.seed, self.start_iter = batch_stream, seed, int(start_iter)
        self.batch_size = batch_stream.batch_size
        self.late_from = None if late_mapper is None or late_from is None else int(late_from)

    def _keys(self, start: int) -> Iterator[list[tuple]]:
        if self.late_from is None:
            yield from self.batch_stream.iter_from(start)
            return
        for k, keys in enumerate(self.batch_stream.iter_from(start), start):
            late = k >= self.late_from
            yield [(p, i, late) for p, i in keys]

    def __iter__(self) -> Iterator[list[dict]]:
        return self._run(self._keys, self.start_iter)


class TestDataLoader(_Loader):
    """Finite iterable of batches over a dataset, each image once, in order."""

    def __init__(
        self,
        dataset_dicts: list[dict],
        mapper: Callable,
        *,
        batch_size: int = 1,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__(_PositionDataset(dataset_dicts, mapper, 0, False), num_workers, {})
        self.indices = list(InferenceSampler(len(dataset_dicts), rank, world_size))
        self.batch_size = max(1, int(batch_size))
        self.dataset_dicts = dataset_dicts

    def _keys(self, start: int) -> Iterator[list]:
        b = self.batch_size
        for i in range(start * b, len(self.indices), b):
            yield [(p, p) for p in self.indices[i : i + b]]

    def __iter__(self) -> Iterator[list[dict]]:
        for batch in self._run(self._keys, 0):
            if batch:
                yield batch

    def __len__(self) -> int:
        return (len(self.indices) + self.batch_size - 1) // self.batch_size


def build_detection_train_loader(
    cfg: Any,
    start_iter: int = 0,
    *,
    mapper: Callable | None = None,
    dataset: list[dict] | None = None,
    seed: int | None = None,
) -> TrainDataLoader:
    """Infinite train loader of ``SOLVER.IMS_PER_BATCH // world_size`` images per batch.

    With ``INPUT.MOSAIC.ENABLED`` the configured mapper is wrapped in a
    :class:`~detlab.data.mappers.mosaic.MosaicMapper` over the training set (a ``mapper``
    passed in is used as it is); with ``INPUT.MOSAIC.CLOSE_ITERS`` the batches of the last
    iterations use its closed copy (no mosaic, no mixup), chosen by batch index.
    """
    register_from_config(cfg)
    rank, world = _dist()
    total = int(cfg.SOLVER.IMS_PER_BATCH)
    if total % world:
        raise UserError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be divisible by the number of processes "
            f"({world})."
        )
    dataset_given = dataset
    if dataset is None:
        dataset = get_detection_dataset_dicts(
            cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
        )
    if not dataset:
        raise UserError(
            f"The training set {list(cfg.DATASETS.TRAIN)} has no images (with boxes); check "
            "DATASETS.TRAIN and DATALOADER.FILTER_EMPTY_ANNOTATIONS."
        )
    mapper_given = mapper
    mapper = mapper if mapper is not None else build_mapper(cfg, True)
    if cfg.SEED >= 0:
        seed = int(cfg.SEED)
    elif seed is None:
        seed = int(torch.initial_seed() % (2**31))
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "TrainingSampler":
        sampler = TrainingSampler(len(dataset), True, seed, rank, world)
    elif name == "RepeatFactorTrainingSampler":
        factors = repeat_factors_from_category_frequency(dataset, cfg.DATALOADER.REPEAT_THRESHOLD)
        sampler = RepeatFactorTrainingSampler(factors, True, seed, rank, world)
    else:
        raise UserError(
            f"DATALOADER.SAMPLER_TRAIN must be TrainingSampler or RepeatFactorTrainingSampler, "
            f"got '{name}'."
        )
    late_mapper, late_from = None, None
    if cfg.INPUT.MOSAIC.ENABLED and mapper_given is None:
        mapper = instantiate(MosaicMapper, cfg, mapper, dataset)
        close = int(cfg.INPUT.MOSAIC.CLOSE_ITERS)
        if close > 0:
            late_mapper = mapper.closed()
            accum = max(1, int(cfg.SOLVER.GRAD_ACCUM_STEPS))
            late_from = max(0, int(cfg.SOLVER.MAX_ITER) - close) * accum
    groups = None
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        groups = [int(d.get("width", 1) > d.get("height", 1)) for d in dataset]
    stream = GroupedBatchStream(sampler, total // world, groups)
    base = Counter()
    for n in cfg.DATASETS.TRAIN if dataset_given is None else ():
        base.update(load_counters(n))  # what the dataset's reader skipped, dropped, clipped
    return TrainDataLoader(
        dataset,
        mapper,
        stream,
        seed=seed,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        start_iter=start_iter,
        base_stats=dict(base),
        late_mapper=late_mapper,
        late_from=late_from,
    )


def build_detection_test_loader(
    cfg: Any, dataset_name: str, *, mapper: Callable | None = None, batch_size: int | None = None
) -> TestDataLoader:
    """Finite loader over ``dataset_name`` with the inference mapper (no augmentation)."""
    register_from_config(cfg)
    rank, world = _dist()
    dataset = get_detection_dataset_dicts([dataset_name], filter_empty=False)
    mapper = mapper if mapper is not None else build_mapper(cfg, False)
    return TestDataLoader(
        dataset,
        mapper,
        batch_size=batch_size or cfg.DATALOADER.TEST_BATCH_SIZE,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        rank=rank,
        world_size=world,
    )
