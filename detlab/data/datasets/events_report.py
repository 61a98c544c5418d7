"""A plain-text report of a folder of event recordings: what detlab will read from it.

Per recording: format, sensor, events, duration, timestamps repaired, windows, labelled
windows, boxes; then boxes per class and size bucket, and what was clipped or dropped.
Used by ``datasets/inspect_events.py``.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from detlab.data.datasets.events import EVENT_PRESETS, load_event_sequences
from detlab.data.events.index import get_index
from detlab.data.events.readers import open_events
from detlab.utils.errors import UserError

__all__ = ["event_dataset_report"]

_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, 1e18))


def event_dataset_report(
    root: str,
    *,
    preset: str | None = None,
    classes: list[str] | None = None,
    class_ids: list[int] | None = None,
    window_us: int = 50000,
    sensor_size: tuple[int, int] | None = None,
    min_box_side: float = 0.0,
    cache_dir: str | None = None,
) -> str:
    """The report as text (see the module docstring)."""
    if preset:
        if preset not in EVENT_PRESETS:
            raise UserError(f"Unknown preset '{preset}'; use one of {', '.join(EVENT_PRESETS)}.")
        classes = classes or list(EVENT_PRESETS[preset]["classes"])
        sensor_size = sensor_size or EVENT_PRESETS[preset]["sensor_size"]
    if not classes:
        raise UserError("Give the class names (--classes) or a --preset.")
    dicts, quirks = load_event_sequences(
        root,
        list(classes),
        class_ids=class_ids,
        window_us=window_us,
        sensor_size=sensor_size,
        min_box_side=min_box_side,
        name=os.path.basename(os.path.abspath(root)),
    )
    per_seq: dict[str, list[dict]] = {}
    for d in dicts:
        per_seq.setdefault(d["file_name"], []).append(d)
    lines = [
        f"{root}: {len(per_seq)} recordings, {len(dicts)} windows of {window_us / 1000:g} ms",
        "",
        f"{'recording':40s} {'sensor':>10s} {'events':>11s} {'seconds':>8s} {'repaired':>9s} "
        f"{'windows':>8s} {'labelled':>9s} {'boxes':>7s}",
    ]
    per_class: Counter = Counter()
    per_bucket: Counter = Counter()
    for path, windows in per_seq.items():
        reader = open_events(path)
        idx = get_index(path, cache_dir)
        seconds = (idx.t_last - idx.t_first) / 1e6 if idx.num_events else 0.0
        boxes = [a for w in windows for a in w["annotations"]]
        for a in boxes:
            per_class[classes[a["category_id"]]] += 1
            per_bucket[next(n for n, lo, hi in _BUCKETS if lo <= a["area"] < hi)] += 1
        d0 = windows[0]
        lines.append(
            f"{windows[0]['sequence'][-40:]:40s} {d0['width']:>5d}x{d0['height']:<4d} "
            f"{reader.num_events:>11d} {seconds:>8.1f} {idx.repaired:>9d} {len(windows):>8d} "
            f"{sum(w['labelled'] for w in windows):>9d} {len(boxes):>7d}"
        )
    lines += ["", "boxes per class: " + _fmt(per_class, classes)]
    lines += ["boxes per size (sensor px²): " + _fmt(per_bucket, [b[0] for b in _BUCKETS])]
    lines += quirks.lines() or ["labels: nothing to report"]
    return "\n".join(lines)


def _fmt(counts: Any, keys: list[str]) -> str:
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in keys)
