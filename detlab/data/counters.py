"""Per-sample data-quality counters (skipped images, dropped/clipped boxes).

Mappers call :func:`count` while they process one image; the loader wraps each call in
:func:`collect`, ships the counts back from worker processes with the sample, and sums them
into ``loader.stats()`` (keys ``skipped_images``, ``dropped_boxes``, ``clipped_boxes``,
``worker_failures``), which the trainer reports as ``data/<key>``; :func:`totals` sums them over
every loader of the process.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["collect", "count", "totals", "warn_once"]

_local = threading.local()
_warned: set[str] = set()
_totals: Counter = Counter()


def totals() -> dict[str, int]:
    """Counts summed over every loader of this process since start (``data/<key>`` totals)."""
    return dict(_totals)


def add_to_totals(counts: dict[str, int]) -> None:
    _totals.update(counts)


def count(key: str, n: int = 1) -> None:
    """Add ``n`` to counter ``key`` of the sample being processed (no-op outside collect)."""
    counts = getattr(_local, "counts", None)
    if counts is not None and n:
        counts[key] += int(n)


@contextmanager
def collect() -> Iterator[Counter]:
    """Gather the counts made inside the ``with`` block into the yielded Counter."""
    previous = getattr(_local, "counts", None)
    _local.counts = Counter()
    try:
        yield _local.counts
    finally:
        _local.counts = previous


def warn_once(logger, key: str, message: str, *args) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)
