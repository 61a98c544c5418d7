"""Event-file readers: HDF5 ``events/{x,y,p,t}``, Prophesee ``.dat`` and NumPy ``.npy``/``.npz``.

Every reader exposes the same small interface (:class:`EventReader`): ``num_events``,
``sensor_size`` (height, width) when the file states it, ``read_t(start, stop)`` (int64 µs)
and ``read(start, stop)`` → :class:`Events` of the raw, unrepaired events in index order.
Timestamp repair and time windows live in :mod:`detlab.data.events.index`.

Formats:

* **HDF5** (RVT / eTraM / DSEC layout): datasets ``events/x``, ``events/y``, ``events/p``,
  ``events/t`` (µs), optional ``events/height``/``events/width`` (datasets or attributes) and
  ``t_offset`` (added to ``t``); a Metavision ``CD/events`` compound dataset is read too.
  Compressed files (blosc, zstd, ...) need ``hdf5plugin``; HDF5 support needs the ``events``
  extra (``pip install 'detlab[events]'``) and is imported only when such a file is opened.
* **Prophesee .dat** (Gen1 / 1 Mpx "Event2D"/"EventCD"): text header lines starting with
  ``%`` (``% Height 240``, ``% Width 304``, ``% geometry 304x240``), then one byte event type
  and one byte event size (8), then events of two little-endian uint32: ``t`` (µs) and
  ``x | y << 14 | p << 28`` (x, y 14 bits, p the bit 28). Read through a memory map.
* **NumPy .npy**: a structured array with fields ``x``, ``y``, ``p`` (or ``polarity``) and
  ``t`` (or ``ts``/``timestamp``), memory-mapped. **.npz**: arrays ``x``, ``y``, ``p``, ``t``
  (or one structured array), read into memory on first access.

Polarity is returned as uint8 0/1 (any value > 0 is ON). Readers are cached per process by
:func:`open_events` (HDF5 handles must not cross a fork, so the cache is keyed by process id).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import NamedTuple

import numpy as np

from detlab.utils.errors import UserError

__all__ = [
    "DAT_EVENT_SIZE",
    "EVENT_SUFFIXES",
    "DatReader",
    "EventReader",
    "Events",
    "HDF5Reader",
    "event_format",
    "open_events",
    "parse_dat_header",
    "require_h5py",
]

EVENT_SUFFIXES = (".h5", ".hdf5", ".dat", ".npy", ".npz")
DAT_EVENT_SIZE = 8
_DAT_TYPES = {0: "Event2D", 12: "EventCD"}
_X_MASK, _Y_SHIFT, _P_SHIFT = 0x3FFF, 14, 28
_T_NAMES = ("t", "ts", "timestamp")
_P_NAMES = ("p", "polarity", "pol")


class Events(NamedTuple):
    """Events as parallel arrays: ``x``, ``y`` (pixels), ``p`` (uint8 0/1), ``t`` (int64 µs)."""

    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    t: np.ndarray

    def __len__(self) -> int:  # number of events, not of fields
        return int(self.t.shape[0])

    @staticmethod
    def empty() -> Events:
        z = np.zeros(0, np.int64)
        return Events(z.astype(np.uint16), z.astype(np.uint16), z.astype(np.uint8), z)


def require_h5py(what: str) -> object:
    """Import h5py (and hdf5plugin when present) or raise one sentence naming the extra."""
    try:
        import h5py
    except ImportError:
        raise UserError(
            f"{what} needs h5py, which is not installed; pip install 'detlab[events]' "
            "(h5py and hdf5plugin)."
        ) from None
    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401 - registers blosc/zstd/lz4 filters with HDF5
    return h5py


def _polarity(p: np.ndarray) -> np.ndarray:
    return (np.asarray(p) > 0).astype(np.uint8)


class EventReader:
    """Random access to one event file by event index (raw order, raw timestamps)."""

    path: str
    num_events: int
    sensor_size: tuple[int, int] | None  # (height, width) when the file states it

    def read_t(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def read(self, start: int, stop: int) -> Events:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def _clip(self, start: int, stop: int) -> tuple[int, int]:
        start = min(max(int(start), 0), self.num_events)
        return start, min(max(int(stop), start), self.num_events)


class _ArrayReader(EventReader):
    """Reader over four (possibly memory-mapped) arrays."""

    def __init__(self, path: str, x, y, p, t, sensor_size=None) -> None:
        self.path, self.sensor_size = path, sensor_size
        self._x, self._y, self._p, self._t = x, y, p, t
        self.num_events = int(len(t))

    def read_t(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._clip(start, stop)
        return np.ascontiguousarray(self._t[start:stop], dtype=np.int64)

    def read(self, start: int, stop: int) -> Events:
        start, stop = self._clip(start, stop)
        return Events(
            np.ascontiguousarray(self._x[start:stop]),
            np.ascontiguousarray(self._y[start:stop]),
            _polarity(self._p[start:stop]),
            np.ascontiguousarray(self._t[start:stop], dtype=np.int64),
        )


def _field(names: tuple[str, ...], wanted: tuple[str, ...], path: str, what: str) -> str:
    for w in wanted:
        if w in names:
            return w
    raise UserError(
        f"Event file {path} has no {what} field (looked for {', '.join(wanted)}; it has "
        f"{', '.join(names) or 'none'}); store events with fields x, y, p, t."
    )


def _structured_reader(path: str, arr: np.ndarray) -> _ArrayReader:
    names = tuple(arr.dtype.names or ())
    if not names:
        raise UserError(
            f"Event file {path} holds a plain {arr.dtype} array of shape {arr.shape}; save a "
            "structured array with fields x, y, p, t (µs) so the columns are unambiguous."
        )
    fx = _field(names, ("x",), path, "x")
    fy = _field(names, ("y",), path, "y")
    fp = _field(names, _P_NAMES, path, "polarity")
    ft = _field(names, _T_NAMES, path, "timestamp")
    return _ArrayReader(path, arr[fx], arr[fy], arr[fp], arr[ft])


def _open_npy(path: str) -> EventReader:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise UserError(f"Event file {path} is not a readable .npy array ({err}).") from None
    return _structured_reader(path, arr)


def _open_npz(path: str) -> EventReader:
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
        if {"x", "y", "t"} <= keys and keys & set(_P_NAMES):
            fp = next(k for k in _P_NAMES if k in keys)
            size = None
            if "height" in keys and "width" in keys:
                size = (int(data["height"]), int(data["width"]))
            return _ArrayReader(
                path, data["x"], data["y"], data["p" if fp == "p" else fp], data["t"], size
            )
        for k in data.files:
            if data[k].dtype.names:
                return _structured_reader(path, data[k])
    except (ValueError, OSError) as err:
        raise UserError(f"Event file {path} is not a readable .npz archive ({err}).") from None
    raise UserError(
        f"Event file {path} has arrays {sorted(keys)}; an .npz of events needs x, y, p, t "
        "arrays (or one structured array with those fields)."
    )


def parse_dat_header(f) -> tuple[int, int, int, tuple[int, int] | None]:
    """Parse a Prophesee .dat header → (data offset, event type, event size, (h, w) or None)."""
    f.seek(0)
    height = width = None
    header_lines = 0
    while True:
        pos = f.tell()
        line = f.readline()
        if not line.startswith(b"%"):
            break
        header_lines += 1
        words = line[1:].decode("latin-1").split()
        if len(words) >= 2 and words[0].lower() == "height":
            height = int(words[1])
        elif len(words) >= 2 and words[0].lower() == "width":
            width = int(words[1])
        elif len(words) >= 2 and words[0].lower() == "geometry":
            m = re.match(r"(\d+)x(\d+)", words[1])
            if m:
                width, height = int(m.group(1)), int(m.group(2))
        if words[:1] == ["end"]:
            pos = f.tell()
            break
    f.seek(pos)
    if header_lines:
        ev = f.read(2)
        ev_type, ev_size = (ev[0], ev[1]) if len(ev) == 2 else (0, DAT_EVENT_SIZE)
    else:  # very old files: no header, no type/size bytes
        ev_type, ev_size = 0, DAT_EVENT_SIZE
    size = (height, width) if height and width else None
    return f.tell(), int(ev_type), int(ev_size), size


class DatReader(EventReader):
    """Prophesee .dat (Event2D / EventCD, 8-byte events) through a memory map."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            offset, ev_type, ev_size, self.sensor_size = parse_dat_header(f)
        if ev_size != DAT_EVENT_SIZE or ev_type not in _DAT_TYPES:
            raise UserError(
                f"Event file {path} holds event type {ev_type} of {ev_size} bytes; detlab reads "
                "Prophesee Event2D/EventCD .dat files (type 0 or 12, 8 bytes per event)."
            )
        n_bytes = os.path.getsize(path) - offset
        self.num_events = n_bytes // DAT_EVENT_SIZE
        self.trailing_bytes = n_bytes % DAT_EVENT_SIZE  # a cut-off last event is ignored
        dtype = np.dtype([("t", "<u4"), ("v", "<u4")])
        self._raw = (
            np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(self.num_events,))
            if self.num_events
            else np.zeros(0, dtype)
        )

    def read_t(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._clip(start, stop)
        return self._raw["t"][start:stop].astype(np.int64)

    def read(self, start: int, stop: int) -> Events:
        start, stop = self._clip(start, stop)
        chunk = np.asarray(self._raw[start:stop])
        v = chunk["v"]
        x = (v & _X_MASK).astype(np.uint16)
        y = ((v >> _Y_SHIFT) & _X_MASK).astype(np.uint16)
        p = ((v >> _P_SHIFT) & 1).astype(np.uint8)
        return Events(x, y, p, chunk["t"].astype(np.int64))


class HDF5Reader(EventReader):
    """``events/{x,y,p,t}`` datasets (or a ``CD/events`` compound dataset) in an HDF5 file."""

    def __init__(self, path: str) -> None:
        h5py = require_h5py(f"Reading the HDF5 event file {path}")
        self.path = path
        try:
            self._file = h5py.File(path, "r")
        except OSError as err:
            raise UserError(f"Event file {path} is not a readable HDF5 file ({err}).") from None
        f = self._file
        self._compound = None
        if "events" in f and isinstance(f["events"], h5py.Group):
            group = f["events"]
            missing = [k for k in ("x", "y", "t") if k not in group]
            fp = next((k for k in _P_NAMES if k in group), None)
            if missing or fp is None:
                raise UserError(
                    f"Event file {path}: the 'events' group lacks "
                    f"{', '.join(missing + ([] if fp else ['p']))}; expected events/x, y, p, t."
                )
            self._x, self._y, self._p, self._t = group["x"], group["y"], group[fp], group["t"]
            self.sensor_size = _h5_size(group) or _h5_size(f)
        elif "CD" in f and "events" in f["CD"]:
            self._compound = f["CD"]["events"]
            self._t = None
            self.sensor_size = _h5_size(f["CD"]) or _h5_size(f)
        else:
            raise UserError(
                f"Event file {path} has no 'events' group (keys: {sorted(f.keys())}); expected "
                "events/x, events/y, events/p, events/t as written by RVT, eTraM or DSEC."
            )
        self.t_offset = int(np.asarray(f["t_offset"][()]).item()) if "t_offset" in f else 0
        ds = self._compound if self._compound is not None else self._t
        self.num_events = int(ds.shape[0])

    def _load(self, ds, start: int, stop: int) -> np.ndarray:
        try:
            return ds[start:stop]
        except OSError as err:
            raise UserError(
                f"Cannot read {ds.name} of {self.path} ({err}); a compressed file needs "
                "hdf5plugin: pip install 'detlab[events]'."
            ) from None

    def read_t(self, start: int, stop: int) -> np.ndarray:
        start, stop = self._clip(start, stop)
        if self._compound is not None:
            t = self._load(self._compound, start, stop)["t"]
        else:
            t = self._load(self._t, start, stop)
        return t.astype(np.int64) + self.t_offset

    def read(self, start: int, stop: int) -> Events:
        start, stop = self._clip(start, stop)
        if self._compound is not None:
            c = self._load(self._compound, start, stop)
            return Events(
                c["x"], c["y"], _polarity(c["p"]), c["t"].astype(np.int64) + self.t_offset
            )
        return Events(
            self._load(self._x, start, stop),
            self._load(self._y, start, stop),
            _polarity(self._load(self._p, start, stop)),
            self._load(self._t, start, stop).astype(np.int64) + self.t_offset,
        )

    def close(self) -> None:
        self._file.close()


def _h5_size(node) -> tuple[int, int] | None:
    for h, w in (("height", "width"), ("sensor_height", "sensor_width")):
        if h in node.attrs and w in node.attrs:
            return int(node.attrs[h]), int(node.attrs[w])
        try:
            if h in node and w in node:
                return int(np.asarray(node[h][()]).item()), int(np.asarray(node[w][()]).item())
        except TypeError:  # node is a dataset, not a group
            return None
    return None


_OPENERS = {
    ".h5": HDF5Reader,
    ".hdf5": HDF5Reader,
    ".dat": DatReader,
    ".npy": _open_npy,
    ".npz": _open_npz,
}
_CACHE: dict[tuple[int, str], EventReader] = {}
_LOCK = threading.Lock()
_MAX_OPEN = 64


def event_format(path: str) -> str:
    """The reader key of ``path`` (its lower-case suffix), or a UserError for other files."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in _OPENERS:
        raise UserError(
            f"{path} is not an event file detlab reads; use .h5/.hdf5 (events/x,y,p,t), "
            "Prophesee .dat, or a structured .npy/.npz."
        )
    return ext


def open_events(path: str) -> EventReader:
    """A reader for ``path`` (cached per process; the newest ``_MAX_OPEN`` files stay open)."""
    path = os.path.abspath(path)
    ext = event_format(path)
    key = (os.getpid(), path)
    with _LOCK:
        reader = _CACHE.get(key)
        if reader is not None:
            return reader
    if not os.path.isfile(path):
        raise UserError(f"Event file {path} does not exist; check the dataset folder.")
    reader = _OPENERS[ext](path)
    with _LOCK:
        for stale in [k for k in _CACHE if k[0] != os.getpid()]:
            _CACHE.pop(stale)  # handles inherited from a parent process are not ours to use
        if len(_CACHE) >= _MAX_OPEN:
            _CACHE.pop(next(iter(_CACHE))).close()
        _CACHE[key] = reader
    return reader
