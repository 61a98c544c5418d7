"""Train loader: exact resume for any worker count, skipped images, worker-death fallback."""

from __future__ import annotations

import torch

from detlab.data import build_detection_test_loader, build_detection_train_loader


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def _same(a, b):
    assert [x["image_id"] for x in a] == [x["image_id"] for x in b]
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x["image"], y["image"])
        assert torch.equal(x["instances"].boxes, y["instances"].boxes)
        assert torch.equal(x["instances"].classes, y["instances"].classes)


def test_resume_reproduces_stream(tiny_sar, small_cfg):
    name = tiny_sar(num_images=10)
    small_cfg.DATASETS.TRAIN = (name,)
    full = _take(build_detection_train_loader(small_cfg), 9)  # > 1 epoch of ~10 images / 2
    resumed = _take(build_detection_train_loader(small_cfg, start_iter=6), 3)
    for a, b in zip(full[6:], resumed, strict=True):
        _same(a, b)
    small_cfg.DATALOADER.NUM_WORKERS = 2
    with_workers = _take(build_detection_train_loader(small_cfg, start_iter=4), 2)
    for a, b in zip(full[4:6], with_workers, strict=True):
        _same(a, b)
    assert all(len(b) == 2 for b in full)


def test_test_loader_each_image_once_in_order(tiny_sar, small_cfg):
    name = tiny_sar(num_images=5)
    batches = list(build_detection_test_loader(small_cfg, name))
    ids = [x["image_id"] for b in batches for x in b]
    assert ids == [1, 2, 3, 4, 5]


class _DiesInWorkers:
    """Wraps a mapper; kills any worker process that calls it (like a crashed worker)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, d, rng):
        import os

        from torch.utils.data import get_worker_info

        if get_worker_info() is not None:
            os._exit(1)
        return self.inner(d, rng)


def test_worker_death_falls_back_in_process_at_same_position(tiny_sar, small_cfg):
    """Workers that die every time: fresh pools MAX_WORKER_RESTARTS times, then in-process."""
    from detlab.data import build_mapper
    from detlab.data.build import MAX_WORKER_RESTARTS

    small_cfg.DATASETS.TRAIN = (tiny_sar(num_images=8),)
    reference = _take(build_detection_train_loader(small_cfg), 4)
    small_cfg.DATALOADER.NUM_WORKERS = 2
    mapper = _DiesInWorkers(build_mapper(small_cfg, True))
    loader = build_detection_train_loader(small_cfg, start_iter=1, mapper=mapper)
    got = _take(loader, 3)
    for a, b in zip(reference[1:], got, strict=True):
        _same(a, b)
    assert loader.stats()["worker_failures"] == MAX_WORKER_RESTARTS + 1


def test_worker_killed_between_fetches_is_replaced_without_error_elsewhere(
    tiny_sar, small_cfg, caplog
):
    """SIGKILL to a worker while the main process is busy elsewhere (not inside the loader):
    nothing is raised there, and the next fetch starts fresh workers at the same batch."""
    import multiprocessing
    import os
    import signal
    import time

    small_cfg.DATASETS.TRAIN = (tiny_sar(num_images=8),)
    reference = _take(build_detection_train_loader(small_cfg), 6)
    small_cfg.DATALOADER.NUM_WORKERS = 2
    loader = build_detection_train_loader(small_cfg)
    it = iter(loader)
    got = [next(it), next(it)]
    workers = multiprocessing.active_children()
    assert workers, "the loader started no worker processes"
    os.kill(workers[0].pid, signal.SIGKILL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 1.0:  # "the model's forward": SIGCHLD arrives here
        sum(range(10_000))
    got += [next(it) for _ in range(4)]
    for a, b in zip(reference, got, strict=True):
        _same(a, b)
    assert loader.stats()["worker_failures"] == 1
    assert any("fresh workers at batch 2" in r.getMessage() for r in caplog.records)
