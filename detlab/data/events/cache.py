"""Optional HDF5 cache of representations: one file per recording, one tensor per window.

With ``INPUT.EVENTS.CACHE`` on, the loaders compute every window of each recording once (in
the main process, before workers start; rank 0 under DDP) and training then reads tensors
instead of events, as RVT's preprocessing does. A cache file is named by a digest of the
event file (path, size, modification time), the window grid and the representation's
fingerprint (including downsampling), so changing any of them writes a new file instead of
reading stale data. Files are written to a temporary name and renamed when complete.
The ``data`` dataset has shape ``(num_windows, C, H, W)``, one chunk per window, compressed
with blosc/lz4 when hdf5plugin is installed, else gzip. Needs h5py (the ``events`` extra).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detlab.data.events.index import get_index
from detlab.data.events.readers import Events, open_events, require_h5py
from detlab.data.events.representations import EventRepresentation, downsample_events

__all__ = ["RepresentationCache", "ensure_event_cache", "event_cache_root"]

logger = logging.getLogger(__name__)
CACHE_VERSION = 1
_WINDOWS_PER_READ = 64


class RepresentationCache:
    """Where and how representations of one configuration are cached under ``root``."""

    def __init__(
        self, root: str, representation: EventRepresentation, downsample: int, mode: str
    ) -> None:
        self.root = os.path.abspath(root)
        self.rep, self.downsample, self.mode = representation, int(downsample), mode
        self._files: dict[tuple[int, str], object] = {}
        self._lock = threading.Lock()

    def path_for(self, d: dict) -> str:
        """Cache file of the recording of window dict ``d``."""
        src = d["file_name"]
        st = os.stat(src)
        anchor = int(d["t_end_us"]) - int(d["window_index"]) * self._window_us(d)
        key = (
            f"v{CACHE_VERSION}|{os.path.abspath(src)}|{st.st_size}|{st.st_mtime_ns}|"
            f"{self._window_us(d)}|{anchor}|{d['num_windows']}|{self.rep.fingerprint()}|"
            f"ds{self.downsample}{self.mode}|{d['height']}x{d['width']}"
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        stem = os.path.splitext(os.path.basename(src))[0]
        return os.path.join(self.root, "repr", f"{stem}-{digest}.h5")

    @staticmethod
    def _window_us(d: dict) -> int:
        return int(d["t_end_us"]) - int(d["t_start_us"])

    def ensure(self, dicts: Sequence[dict]) -> int:
        """Write the cache files missing for the recordings of ``dicts``; return how many."""
        first: dict[str, dict] = {}
        for d in dicts:
            if "sequence_id" in d and d["file_name"] not in first:
                first[d["file_name"]] = d
        written = 0
        for d in first.values():
            path = self.path_for(d)
            if not os.path.isfile(path):
                self._write(d, path)
                written += 1
        return written

    def _write(self, d: dict, path: str) -> None:
        h5py = require_h5py("INPUT.EVENTS.CACHE")
        t0 = time.perf_counter()
        src, win = d["file_name"], self._window_us(d)
        n = int(d["num_windows"])
        anchor = int(d["t_end_us"]) - int(d["window_index"]) * win
        ends = anchor + win * np.arange(n, dtype=np.int64)
        height, width = int(d["height"]), int(d["width"])
        _, h, w = downsample_events(Events.empty(), self.downsample, self.mode, height, width)
        shape = (n, self.rep.num_channels, h, w)
        reader, index = open_events(src), get_index(src, self.root)
        opts = _compression()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with h5py.File(tmp, "w") as f:
                ds = None
                for a in range(0, n, _WINDOWS_PER_READ):
                    chunk = ends[a : a + _WINDOWS_PER_READ]
                    since = int(chunk[0]) - max(win, self.rep.history_us)
                    lo, hi = index.search(reader, [since, int(chunk[-1])]).tolist()
                    ev = reader.read(lo, hi)
                    if index.repaired and len(ev):
                        carry = index.carry_before(reader, lo)
                        ev = ev._replace(t=np.maximum.accumulate(np.maximum(ev.t, carry)))
                    ev, hh, ww = downsample_events(ev, self.downsample, self.mode, height, width)
                    reps = self.rep.windows(ev, chunk, win, hh, ww)
                    block = torch.stack(reps).numpy()
                    if ds is None:
                        ds = f.create_dataset(
                            "data",
                            shape=shape,
                            dtype=block.dtype,
                            chunks=(1, *shape[1:]),
                            **opts,
                        )
                    ds[a : a + len(chunk)] = block
                f.create_dataset("t_end_us", data=ends)
                f.attrs["fingerprint"] = self.rep.fingerprint()
                f.attrs["source"] = os.path.abspath(src)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        logger.info(
            "Cached %d windows of %s in %s (%.1f s).", n, src, path, time.perf_counter() - t0
        )

    def read(self, d: dict) -> torch.Tensor | None:
        """The cached tensor of window ``d``, or None when its recording is not cached."""
        path = self.path_for(d)
        key = (os.getpid(), path)
        with self._lock:
            f = self._files.get(key)
        if f is None:
            if not os.path.isfile(path):
                return None
            h5py = require_h5py("INPUT.EVENTS.CACHE")
            f = h5py.File(path, "r")
            with self._lock:
                for stale in [k for k in self._files if k[0] != os.getpid()]:
                    self._files.pop(stale)
                self._files[key] = f
        return torch.from_numpy(np.asarray(f["data"][int(d["window_index"])]))

    def __getstate__(self) -> dict:  # open files stay in their process
        state = dict(self.__dict__)
        state["_files"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def event_cache_root(cfg: Any) -> str:
    """``INPUT.EVENTS.CACHE_DIR``, or ``$DETLAB_DATA/event_cache`` when empty."""
    if cfg.INPUT.EVENTS.CACHE_DIR:
        return os.path.abspath(os.path.expanduser(cfg.INPUT.EVENTS.CACHE_DIR))
    from detlab.data.datasets.generated import data_root

    return os.path.join(data_root(), "event_cache")


def ensure_event_cache(cfg: Any, dataset: list[dict]) -> None:
    """With ``INPUT.EVENTS.CACHE``, write the missing representation caches of the event
    recordings in ``dataset`` (rank 0, before any worker starts; other ranks wait)."""
    if not cfg.INPUT.EVENTS.CACHE or not any("window_index" in d for d in dataset[:1]):
        return
    from detlab.data.events.representations import build_representation
    from detlab.utils import comm

    if comm.is_main_process():
        e = cfg.INPUT.EVENTS
        cache = RepresentationCache(
            event_cache_root(cfg), build_representation(cfg), e.DOWNSAMPLE, e.DOWNSAMPLE_MODE
        )
        n = cache.ensure(dataset)
        if n:
            logger.info("Wrote representation caches of %d recordings.", n)
    comm.synchronize()


def _compression() -> dict:
    try:
        import hdf5plugin

        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    except ImportError:
        return {"compression": "gzip", "compression_opts": 1}
