"""Write event files in the formats :mod:`detlab.data.events.readers` reads.

Used by the synthetic dataset and by converters; each writer takes parallel arrays ``x``,
``y``, ``p`` (0/1), ``t`` (µs) and the sensor ``height``/``width``, and writes atomically
(a temporary sibling renamed into place).
"""

from __future__ import annotations

import datetime
import os

import numpy as np

from detlab.data.events.readers import DAT_EVENT_SIZE, require_h5py
from detlab.utils.errors import UserError
from detlab.utils.file_io import atomic_open

__all__ = ["write_dat", "write_events", "write_h5", "write_npy", "write_npz"]


def _check(x, y, p, t, height: int, width: int) -> tuple[np.ndarray, ...]:
    x, y, p, t = (np.asarray(a) for a in (x, y, p, t))
    if not (len(x) == len(y) == len(p) == len(t)):
        raise ValueError("x, y, p and t must have the same length")
    if len(x) and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise ValueError(f"event coordinates outside the {width}x{height} sensor")
    return x, y, (p > 0).astype(np.uint8), t.astype(np.int64)


def write_dat(path: str, x, y, p, t, height: int, width: int, ev_type: int = 0) -> None:
    """Prophesee .dat: ``%`` header (version 2, date, height, width), type and size bytes,
    then ``uint32 t`` and ``uint32 x | y << 14 | p << 28`` per event."""
    x, y, p, t = _check(x, y, p, t, height, width)
    if max(height, width) > 2**14:
        raise UserError(f"A .dat file stores coordinates in 14 bits; {width}x{height} is too big.")
    if len(t) and (t.min() < 0 or t.max() >= 2**32):
        raise UserError("A .dat file stores timestamps as uint32 µs; shift them into 0..2^32-1.")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    header = (
        f"% Data file containing {'Event2D' if ev_type == 0 else 'EventCD'} events.\n"
        f"% Version 2\n% Date {now}\n% Height {height}\n% Width {width}\n"
    ).encode("latin-1")
    data = np.empty(len(t), [("t", "<u4"), ("v", "<u4")])
    data["t"] = t
    data["v"] = x.astype(np.uint32) | (y.astype(np.uint32) << 14) | (p.astype(np.uint32) << 28)
    with atomic_open(path, "wb") as f:
        f.write(header)
        f.write(bytes([ev_type, DAT_EVENT_SIZE]))
        f.write(data.tobytes())


def write_npy(path: str, x, y, p, t, height: int, width: int) -> None:
    """Structured ``.npy`` with fields x, y (uint16), p (uint8), t (int64 µs)."""
    x, y, p, t = _check(x, y, p, t, height, width)
    arr = np.empty(len(t), [("x", "<u2"), ("y", "<u2"), ("p", "u1"), ("t", "<i8")])
    arr["x"], arr["y"], arr["p"], arr["t"] = x, y, p, t
    with atomic_open(path, "wb") as f:
        np.save(f, arr)


def write_npz(path: str, x, y, p, t, height: int, width: int) -> None:
    """``.npz`` with arrays x, y, p, t, height, width (uncompressed)."""
    x, y, p, t = _check(x, y, p, t, height, width)
    with atomic_open(path, "wb") as f:
        np.savez(
            f,
            x=x.astype(np.uint16),
            y=y.astype(np.uint16),
            p=p,
            t=t,
            height=np.int64(height),
            width=np.int64(width),
        )


def write_h5(
    path: str, x, y, p, t, height: int, width: int, compression: str | None = "auto"
) -> None:
    """HDF5 ``events/{x,y,p,t,height,width}``; ``compression`` "auto" uses blosc (zstd) when
    hdf5plugin is installed, else gzip; ``None`` writes uncompressed datasets."""
    h5py = require_h5py(f"Writing the HDF5 event file {path}")
    x, y, p, t = _check(x, y, p, t, height, width)
    opts: dict = {}
    if compression == "auto":
        try:
            import hdf5plugin

            opts = dict(hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE))
        except ImportError:
            opts = {"compression": "gzip", "compression_opts": 1}
    elif compression:
        opts = {"compression": compression}
    chunk = {"chunks": (min(max(len(t), 1), 1 << 16),)} if opts else {}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as f:
            g = f.create_group("events")
            g.create_dataset("x", data=x.astype(np.uint16), **chunk, **opts)
            g.create_dataset("y", data=y.astype(np.uint16), **chunk, **opts)
            g.create_dataset("p", data=p, **chunk, **opts)
            g.create_dataset("t", data=t, **chunk, **opts)
            g.create_dataset("height", data=np.int64(height))
            g.create_dataset("width", data=np.int64(width))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_events(path: str, x, y, p, t, height: int, width: int) -> None:
    """Write by extension: ``.dat``, ``.npy``, ``.npz``, ``.h5``/``.hdf5``."""
    ext = os.path.splitext(path)[1].lower()
    writers = {
        ".dat": write_dat,
        ".npy": write_npy,
        ".npz": write_npz,
        ".h5": write_h5,
        ".hdf5": write_h5,
    }
    if ext not in writers:
        raise UserError(f"Cannot write events as '{ext}'; use .dat, .npy, .npz or .h5.")
    writers[ext](path, x, y, p, t, height, width)
