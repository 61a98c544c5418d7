"""Box labels of event recordings: structured ``.npy`` arrays as Prophesee and RVT store them.

One row per box: ``t`` (µs, the label timestamp), ``x``, ``y`` (top-left corner, sensor px),
``w``, ``h`` (px), ``class_id``, ``track_id``, ``class_confidence``. Older files name the
timestamp ``ts`` and the confidence ``confidence``; both are accepted. :func:`load_labels`
returns the rows in :data:`BBOX_DTYPE`, sorted by timestamp (stable), and how many rows were
out of order.
"""

from __future__ import annotations

import os

import numpy as np

from detlab.utils.errors import UserError

__all__ = ["BBOX_DTYPE", "label_path_for", "load_labels", "save_labels"]

BBOX_DTYPE = np.dtype(
    [
        ("t", "<i8"),
        ("x", "<f4"),
        ("y", "<f4"),
        ("w", "<f4"),
        ("h", "<f4"),
        ("class_id", "<u4"),
        ("track_id", "<u4"),
        ("class_confidence", "<f4"),
    ]
)
_ALIASES = {"t": ("t", "ts", "timestamp"), "class_confidence": ("class_confidence", "confidence")}
_REQUIRED = ("t", "x", "y", "w", "h", "class_id")


def load_labels(path: str) -> tuple[np.ndarray, int]:
    """Read a label file → (rows in :data:`BBOX_DTYPE` sorted by ``t``, number of rows whose
    timestamp is earlier than an earlier row's)."""
    try:
        raw = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"Label file {path} does not exist.") from None
    except (ValueError, OSError) as err:
        raise UserError(f"Label file {path} is not a readable .npy array ({err}).") from None
    names = raw.dtype.names or ()
    out = np.zeros(raw.shape[0] if raw.ndim else 0, BBOX_DTYPE)
    for field in BBOX_DTYPE.names:
        source = next((a for a in _ALIASES.get(field, (field,)) if a in names), None)
        if source is None:
            if field in _REQUIRED:
                raise UserError(
                    f"Label file {path} has no '{field}' field (it has "
                    f"{', '.join(names) or 'no fields'}); labels need t, x, y, w, h, class_id."
                )
            out[field] = 1.0 if field == "class_confidence" else 0
            continue
        out[field] = raw[source]
    t = out["t"]
    unsorted = int(np.count_nonzero(t < np.maximum.accumulate(t))) if len(t) else 0
    return out[np.argsort(t, kind="stable")], unsorted


def save_labels(path: str, labels: np.ndarray) -> None:
    """Write rows (any structured array with the :data:`BBOX_DTYPE` fields) as ``.npy``."""
    out = np.zeros(len(labels), BBOX_DTYPE)
    for field in BBOX_DTYPE.names:
        if labels.dtype.names and field in labels.dtype.names:
            out[field] = labels[field]
    np.save(path, out)


def label_path_for(events_path: str) -> str:
    """The label file that belongs to an event file: ``<base>_bbox.npy``.

    ``<base>`` is the event file name without its extension(s) and a trailing ``_td`` (so
    ``rec_td.dat``, ``rec_td.dat.h5``, ``rec_td.h5`` and ``rec.npy`` all map to
    ``rec_bbox.npy``), in the same folder.
    """
    folder, name = os.path.split(events_path)
    base = name
    for ext in (".h5", ".hdf5", ".npy", ".npz", ".dat"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    if base.lower().endswith(".dat"):
        base = base[:-4]
    if base.endswith("_td"):
        base = base[:-3]
    return os.path.join(folder, base + "_bbox.npy")
