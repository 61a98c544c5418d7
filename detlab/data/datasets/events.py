"""Event-camera sequences as datasets: one dataset dict per time window, labels at window ends.

A folder of recordings (each an event file plus its ``<base>_bbox.npy`` labels, the layout of
Gen1, 1 Mpx and eTraM) becomes a list of windows of ``window_us`` (default 50 ms), one dataset
dict each, in sequence order. Window ``k`` of a recording covers events with (repaired)
timestamps in ``[end_k - window_us, end_k)``; the grid ``end_k = anchor + k·window_us`` is
anchored on the first label timestamp, so regularly timed labels fall exactly on window ends.
A label timestamp ``t`` belongs to the window with ``end_k - window_us < t <= end_k``; when
several label timestamps fall into one window, the latest one is kept.

Each dict carries the usual keys (``file_name`` = the event file, ``height``/``width`` = the
sensor, ``image_id``, ``annotations`` with XYWH boxes and contiguous ``category_id``) plus
``sequence`` (name), ``sequence_id``, ``window_index``, ``num_windows``, ``t_start_us``,
``t_end_us``, ``labelled`` (False for windows without a label timestamp: the stream still
visits them, but they give no loss and are not evaluated) and ``label_t_us``. Image ids are
``sequence_id · 10^7 + window_index`` with sequences in sorted path order, so they are the same
in every run and loader.

Boxes go through the readers' one box check (clipped to the sensor; empty, non-finite or
outside boxes dropped), then boxes narrower than ``min_box_side`` or of a class outside
``classes`` are dropped; everything is counted as the dataset's quirks (logged once, fed to
the loader counters ``data/clipped_boxes`` and ``data/dropped_boxes``).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import numpy as np

from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.data.datasets.quirks import Quirks, clean_box, record_quirks
from detlab.data.events.labels import label_path_for, load_labels
from detlab.data.events.readers import EVENT_SUFFIXES, open_events
from detlab.utils.errors import UserError

__all__ = [
    "EVENT_PRESETS",
    "IMAGE_ID_STRIDE",
    "event_files",
    "forget_event_dataset",
    "load_event_sequences",
    "register_event_sequences",
    "register_events_entry",
    "set_event_metadata",
    "window_grid",
]

logger = logging.getLogger(__name__)
IMAGE_ID_STRIDE = 10_000_000

# Known layouts: class names in label class_id order, sensor (height, width).
EVENT_PRESETS: dict[str, dict[str, Any]] = {
    "etram": {
        "classes": [
            "pedestrian",
            "car",
            "bicycle",
            "bus",
            "motorbike",
            "truck",
            "tram",
            "wheelchair",
        ],
        "sensor_size": (720, 1280),
    },
    "gen1": {"classes": ["car", "pedestrian"], "sensor_size": (240, 304)},
    "gen4": {
        "classes": [
            "pedestrian",
            "two_wheeler",
            "car",
            "truck",
            "bus",
            "traffic_sign",
            "traffic_light",
        ],
        "sensor_size": (720, 1280),
    },
}


def event_files(root: str) -> list[str]:
    """Event files under ``root`` (recursively), sorted; label files are not event files."""
    if os.path.isfile(root):
        return [os.path.abspath(root)]
    if not os.path.isdir(root):
        raise UserError(f"Event dataset folder {root} does not exist; check events_root.")
    out = []
    for folder, _, names in os.walk(root):
        for n in names:
            low = n.lower()
            if n.startswith(".") or low.endswith("_bbox.npy"):
                continue
            if low.endswith(EVENT_SUFFIXES):
                out.append(os.path.abspath(os.path.join(folder, n)))
    return sorted(out)


def window_grid(t_first: int, t_last: int, label_t: np.ndarray, window_us: int) -> np.ndarray:
    """Window end times: the first window holds the first event (or ends at the first label),
    the last holds the last event and ends at or after the last label (see the module)."""
    dt = int(window_us)
    anchor = int(label_t[0]) if len(label_t) else int(t_first) + dt
    k_min = (int(t_first) - anchor) // dt + 1  # first end > t_first
    k_max = -((anchor - int(t_last) - 1) // dt)  # first end >= t_last + 1
    if len(label_t):
        k_min = min(k_min, 0)
        k_max = max(k_max, -((anchor - int(label_t[-1])) // dt))
    return anchor + dt * np.arange(k_min, max(k_max, k_min) + 1, dtype=np.int64)


def _sequence_dicts(
    path: str,
    seq_id: int,
    root: str,
    *,
    window_us: int,
    class_map: dict[int, int],
    sensor_size: tuple[int, int] | None,
    min_box_side: float,
    quirks: Quirks,
) -> list[dict]:
    reader = open_events(path)
    size = reader.sensor_size or sensor_size
    if size is None:
        raise UserError(
            f"Event file {path} does not state its sensor size; give sensor_size [height, width] "
            "(or a preset) when registering the dataset."
        )
    height, width = int(size[0]), int(size[1])
    label_file = label_path_for(path)
    labels = None
    if os.path.isfile(label_file):
        labels, unsorted = load_labels(label_file)
        if unsorted:
            quirks.add("unsorted_labels", os.path.basename(label_file), n=unsorted)
    else:
        quirks.add("missing_event_labels", os.path.basename(path))
    n = reader.num_events
    t_first = int(reader.read_t(0, 1)[0]) if n else 0
    t_last = int(reader.read_t(n - 1, n)[0]) if n else 0
    label_times = np.unique(labels["t"]) if labels is not None and len(labels) else np.zeros(0)
    t_last = max(t_last, t_first)
    ends = window_grid(t_first, t_last, label_times.astype(np.int64), window_us)
    per_window: dict[int, np.ndarray] = {}
    if labels is not None and len(labels):
        win = np.searchsorted(ends, labels["t"], side="left")  # first end >= t
        for k in np.unique(win).tolist():
            rows = labels[win == k]
            latest = rows["t"].max()
            merged = len(np.unique(rows["t"])) - 1
            if merged:
                quirks.add("merged_label_times", f"{os.path.basename(path)} @{latest} µs", merged)
            per_window[k] = rows[rows["t"] == latest]
    name = os.path.relpath(path, root) if os.path.isdir(root) else os.path.basename(path)
    dicts = []
    for k, end in enumerate(ends.tolist()):
        rows = per_window.get(k)
        where = f"{os.path.basename(path)} @{end} µs"
        anns = (
            []
            if rows is None
            else _annotations(rows, height, width, class_map, min_box_side, quirks, where)
        )
        dicts.append(
            {
                "file_name": path,
                "sequence": name,
                "sequence_id": seq_id,
                "window_index": k,
                "num_windows": len(ends),
                "t_start_us": end - window_us,
                "t_end_us": end,
                "height": height,
                "width": width,
                "image_id": seq_id * IMAGE_ID_STRIDE + k,
                "labelled": rows is not None,
                "label_t_us": int(rows["t"][0]) if rows is not None else -1,
                "annotations": anns,
            }
        )
    if len(ends) >= IMAGE_ID_STRIDE:
        raise UserError(f"{path} has {len(ends)} windows; use longer windows (window_us).")
    return dicts


def _annotations(rows, height, width, class_map, min_side, quirks: Quirks, where) -> list[dict]:
    anns = []
    for r in rows.tolist():
        _, x, y, w, h, class_id, track_id, _ = r
        cls = class_map.get(int(class_id))
        if cls is None:
            quirks.add("unknown_class", f"{where}: class_id {class_id}")
            continue
        box = clean_box(x, y, x + w, y + h, width, height, quirks, where)
        if box is None:
            continue
        if min(box[2], box[3]) < min_side:
            quirks.add("small_box", where)
            continue
        anns.append(
            {
                "bbox": box,
                "category_id": cls,
                "iscrowd": 0,
                "area": box[2] * box[3],
                "track_id": int(track_id),
            }
        )
    return anns


def load_event_sequences(
    root: str,
    classes: list[str],
    *,
    class_ids: list[int] | None = None,
    window_us: int = 50000,
    sensor_size: tuple[int, int] | None = None,
    min_box_side: float = 0.0,
    require_labels: bool = False,
    name: str = "",
) -> tuple[list[dict], Quirks]:
    """Dataset dicts of every recording under ``root`` → (dicts, what was repaired/dropped)."""
    if window_us <= 0:
        raise UserError(f"Event dataset '{name}': window_us must be positive, got {window_us}.")
    files = event_files(root)
    if not files:
        raise UserError(
            f"Event dataset '{name}': no event files (.h5, .dat, .npy, .npz) under {root}."
        )
    ids = list(range(len(classes))) if class_ids is None else [int(c) for c in class_ids]
    if len(ids) != len(classes):
        raise UserError(
            f"Event dataset '{name}': class_ids has {len(ids)} entries for {len(classes)} classes."
        )
    class_map = {src: i for i, src in enumerate(ids)}
    quirks = Quirks(f"Event dataset '{name}'" if name else root)
    dicts: list[dict] = []
    for seq_id, path in enumerate(files):
        if require_labels and not os.path.isfile(label_path_for(path)):
            raise UserError(
                f"Event dataset '{name}': {path} has no label file {label_path_for(path)}."
            )
        dicts.extend(
            _sequence_dicts(
                path,
                seq_id,
                root,
                window_us=int(window_us),
                class_map=class_map,
                sensor_size=sensor_size,
                min_box_side=float(min_box_side),
                quirks=quirks,
            )
        )
    quirks.log()
    return dicts, quirks


_LOADED: dict[tuple, tuple[list[dict], Quirks]] = {}
_LOCK = threading.Lock()


def register_event_sequences(
    name: str,
    root: str,
    classes: list[str] | None = None,
    *,
    preset: str | None = None,
    class_ids: list[int] | None = None,
    window_us: int = 50000,
    sensor_size: tuple[int, int] | None = None,
    min_box_side: float = 0.0,
    **metadata: Any,
) -> None:
    """Register the recordings under ``root`` as dataset ``name``: read once now (errors show
    at registration) and served from memory on every ``DatasetCatalog.get``.

    ``preset`` ("etram", "gen1", "gen4") supplies ``classes`` and ``sensor_size``;
    ``class_ids`` picks and orders the label class ids to keep (default: ``0..K-1``).
    """
    if preset:
        if preset not in EVENT_PRESETS:
            raise UserError(
                f"Event dataset '{name}': unknown preset '{preset}'; use one of "
                f"{', '.join(EVENT_PRESETS)}."
            )
        p = EVENT_PRESETS[preset]
        classes = list(classes or p["classes"])
        sensor_size = sensor_size or p["sensor_size"]
    if not classes:
        raise UserError(f"Event dataset '{name}': give its classes (or a preset).")
    root = os.path.abspath(os.path.expanduser(root))
    classes = [str(c) for c in classes]

    size = tuple(sensor_size) if sensor_size else None
    ids = tuple(class_ids) if class_ids is not None else None
    key = (name, root, tuple(classes), ids, int(window_us), size, float(min_box_side))

    def load() -> list[dict]:
        with _LOCK:
            if key not in _LOADED:
                _LOADED[key] = load_event_sequences(
                    root,
                    classes,
                    class_ids=class_ids,
                    window_us=window_us,
                    sensor_size=size,
                    min_box_side=min_box_side,
                    name=name,
                )
            dicts, quirks = _LOADED[key]
        record_quirks(name, quirks)
        return list(dicts)

    if name in DatasetCatalog:
        raise UserError(f"Dataset '{name}' is already registered; choose another name.")
    load()  # read now, so a bad folder or label file is reported at registration
    DatasetCatalog.register(name, load)
    set_event_metadata(name, classes, window_us, events_root=root, **metadata)


def set_event_metadata(name: str, classes: list[str], window_us: int, **extra: Any) -> None:
    """Class names, COCO category ids ``1..K`` (stable across runs) and window length."""
    MetadataCatalog.get(name).set(
        thing_classes=list(classes),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(classes))},
        thing_contiguous_id_to_dataset_id={i: i + 1 for i in range(len(classes))},
        evaluator_type="coco",
        window_us=int(window_us),
        **extra,
    )


def forget_event_dataset(name: str) -> None:
    """Drop the cached dicts of every registration named ``name`` (e.g. its files changed)."""
    with _LOCK:
        for key in [k for k in _LOADED if k[0] == name]:
            _LOADED.pop(key)


def register_events_entry(where: str, name: str, opts: dict[str, Any], extra: dict) -> None:
    """Register a ``DATASETS.REGISTER`` entry of format ``events`` (fields in ``opts``)."""
    root = os.path.abspath(os.path.expanduser(str(opts.get("root") or "")))
    if not opts.get("root") or not os.path.exists(root):
        raise UserError(
            f"{where} needs root, an existing folder of event recordings (format events); got "
            f"{opts.get('root')!r} (paths are relative to the config file that declares them)."
        )
    from detlab.data.datasets.names import class_names

    classes = class_names(opts.get("classes"), where)  # a list, or a names file
    register_event_sequences(
        name,
        root,
        classes,
        preset=opts.get("preset"),
        class_ids=opts.get("class_ids"),
        window_us=int(opts.get("window_us") or 50000),
        sensor_size=opts.get("sensor_size"),
        min_box_side=float(opts.get("min_box_side") or 0.0),
        dataset_format="events",
        **extra,
    )
