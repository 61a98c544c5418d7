"""Time index of an event file: timestamp repair and binary-search time windows.

Event cameras occasionally emit timestamps that step backwards (USB packet reordering, sensor
resets, merged files). Like RVT, detlab repairs them to the running maximum
``t'[i] = max(t[0..i])``, which keeps every event and makes ``t'`` non-decreasing, so windows
can be found by binary search. The repair is counted (``EventIndex.repaired``).

An :class:`EventIndex` is built in one chunked pass over the timestamps and keeps the repaired
timestamp of every ``stride``-th event. Finding the first event at or after a time is then a
binary search in that coarse table plus one read of at most ``stride`` timestamps, never a
scan. Indexes are cached per process and, when a cache folder is given, on disk next to the
representation cache (keyed by the file's path, size and modification time).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from dataclasses import dataclass

import numpy as np

from detlab.data.events.readers import EventReader, Events, open_events
from detlab.utils.file_io import atomic_open

__all__ = ["EventIndex", "build_index", "get_index", "read_window"]

logger = logging.getLogger(__name__)
STRIDE = 1 << 14  # events between coarse index entries
CHUNK = 1 << 22  # timestamps read at once while building an index
INDEX_VERSION = 1


@dataclass
class EventIndex:
    """Coarse table of repaired timestamps of one event file (see the module docstring)."""

    stride: int
    coarse_t: np.ndarray  # repaired t of events 0, stride, 2*stride, ... (int64)
    num_events: int
    repaired: int  # events whose timestamp was raised to the running maximum
    t_first: int  # first (repaired) timestamp; 0 when the file is empty
    t_last: int  # last repaired timestamp (the maximum)

    def _chunk(self, reader: EventReader, j: int) -> np.ndarray:
        """Repaired timestamps of events ``[j*stride, (j+1)*stride)``."""
        start = j * self.stride
        raw = reader.read_t(start, min(start + self.stride, self.num_events))
        rep = np.maximum.accumulate(raw) if len(raw) else raw
        return np.maximum(rep, self.coarse_t[j]) if len(rep) else rep

    def search(self, reader: EventReader, times: np.ndarray | int) -> np.ndarray:
        """Index of the first event whose repaired timestamp is >= each of ``times``."""
        times = np.atleast_1d(np.asarray(times, dtype=np.int64))
        out = np.empty(len(times), np.int64)
        if self.num_events == 0:
            out[:] = 0
            return out
        block = np.searchsorted(self.coarse_t, times, side="left")
        chunks: dict[int, np.ndarray] = {}
        for i, (tq, j) in enumerate(zip(times.tolist(), block.tolist(), strict=True)):
            if j == 0:
                out[i] = 0
                continue
            if j - 1 not in chunks:
                chunks[j - 1] = self._chunk(reader, j - 1)
            rep = chunks[j - 1]
            out[i] = (j - 1) * self.stride + int(np.searchsorted(rep, tq, side="left"))
        return out

    def carry_before(self, reader: EventReader, start: int) -> int:
        """Repaired timestamp of event ``start - 1`` (the running maximum before ``start``)."""
        if start <= 0:
            return np.iinfo(np.int64).min
        j = (start - 1) // self.stride
        return int(self._chunk(reader, j)[(start - 1) - j * self.stride])


def build_index(reader: EventReader, stride: int = STRIDE, chunk: int = CHUNK) -> EventIndex:
    """One chunked pass over the timestamps: coarse table, repair count, first/last time."""
    n = reader.num_events
    chunk = max(stride, (chunk // stride) * stride)
    coarse, repaired = [], 0
    carry = np.iinfo(np.int64).min
    t_first = 0
    for start in range(0, n, chunk):
        raw = reader.read_t(start, min(start + chunk, n))
        rep = np.maximum.accumulate(np.maximum(raw, carry))
        repaired += int(np.count_nonzero(rep != raw))
        if start == 0 and len(rep):
            t_first = int(rep[0])
        coarse.append(rep[::stride])
        carry = int(rep[-1])
    coarse_t = np.concatenate(coarse) if coarse else np.zeros(0, np.int64)
    return EventIndex(stride, coarse_t, n, repaired, t_first, int(carry) if n else 0)


_MEMORY: dict[str, EventIndex] = {}
_LOCK = threading.Lock()


def _key(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.abspath(path)}|{st.st_size}|{int(st.st_mtime_ns)}|v{INDEX_VERSION}"


def get_index(path: str, cache_dir: str | None = None) -> EventIndex:
    """The :class:`EventIndex` of ``path``: from memory, from ``cache_dir``, or built now."""
    key = _key(path)
    with _LOCK:
        hit = _MEMORY.get(key)
    if hit is not None:
        return hit
    file = None
    if cache_dir:
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        file = os.path.join(cache_dir, "index", f"{digest}.npz")
        if os.path.isfile(file):
            try:
                with np.load(file, allow_pickle=False) as z:
                    idx = EventIndex(
                        int(z["stride"]),
                        z["coarse_t"],
                        int(z["num_events"]),
                        int(z["repaired"]),
                        int(z["t_first"]),
                        int(z["t_last"]),
                    )
                with _LOCK:
                    _MEMORY[key] = idx
                return idx
            except (OSError, ValueError, KeyError):
                logger.warning("Rebuilding the unreadable event index %s.", file)
    idx = build_index(open_events(path))
    if idx.repaired:
        logger.warning(
            "%s: %d of %d events had timestamps earlier than a previous event; they were set to "
            "the running maximum.",
            path,
            idx.repaired,
            idx.num_events,
        )
    if file:
        with atomic_open(file, "wb") as f:
            np.savez(
                f,
                stride=idx.stride,
                coarse_t=idx.coarse_t,
                num_events=idx.num_events,
                repaired=idx.repaired,
                t_first=idx.t_first,
                t_last=idx.t_last,
            )
    with _LOCK:
        _MEMORY[key] = idx
    return idx


def read_window(
    path: str, t_start: int, t_end: int, cache_dir: str | None = None
) -> tuple[Events, int]:
    """Events with repaired timestamps in ``[t_start, t_end)`` → (events, their first index)."""
    reader = open_events(path)
    idx = get_index(path, cache_dir)
    lo, hi = (int(v) for v in idx.search(reader, [t_start, t_end]))
    if hi <= lo:
        return Events.empty(), lo
    ev = reader.read(lo, hi)
    if not idx.repaired:
        return ev, lo
    t = np.maximum.accumulate(np.maximum(ev.t, idx.carry_before(reader, lo)))
    return Events(ev.x, ev.y, ev.p, t), lo
