"""Built-in synthetic event datasets: generated once into the cache folder, then read like
any folder of recordings (:mod:`detlab.data.datasets.events`).

``events_synth_train`` (48 recordings of 2 s) and ``events_synth_val`` (12) hold pedestrians,
cars and buses on a 304×240 sensor (Gen1's geometry), labelled every 50 ms. Files are written
on first use into ``$DETLAB_DATA/synthetic_events/<name>-<hash>/`` (``seq_NNNN_td.npy`` and
``seq_NNNN_bbox.npy``; no h5py needed) through a private temporary folder renamed into place,
so concurrent first uses end up reading one complete copy.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from dataclasses import replace

from detlab.data.catalog import DatasetCatalog
from detlab.data.datasets.events import load_event_sequences, set_event_metadata
from detlab.data.datasets.generated import build_folder_once, data_root
from detlab.data.datasets.quirks import Quirks, record_quirks
from detlab.data.datasets.synthetic_events import SyntheticEventSpec, render_recording
from detlab.data.events.labels import save_labels
from detlab.data.events.writers import write_events

__all__ = [
    "BUILTIN_SYNTHETIC_EVENTS",
    "generate_synthetic_events",
    "register_builtin_events",
    "register_synthetic_events",
]

logger = logging.getLogger(__name__)
_DONE = "COMPLETE"

BUILTIN_SYNTHETIC_EVENTS: dict[str, SyntheticEventSpec] = {
    "events_synth_train": SyntheticEventSpec(num_sequences=48, seed=11),
    "events_synth_val": SyntheticEventSpec(num_sequences=12, seed=12),
}


def _write_one(args: tuple[SyntheticEventSpec, int, str]) -> None:
    spec, i, folder = args
    events, labels = render_recording(spec, i)
    base = os.path.join(folder, f"seq_{i:04d}")
    write_events(
        f"{base}_td.{spec.ext}",
        events["x"],
        events["y"],
        events["p"],
        events["t"],
        spec.height,
        spec.width,
    )
    save_labels(f"{base}_bbox.npy", labels)


def generate_synthetic_events(out_dir: str, spec: SyntheticEventSpec, workers: int = 0) -> str:
    """Write the recordings of ``spec`` into ``out_dir`` (atomically); return ``out_dir``.

    ``workers`` processes render in parallel (0: up to 2, as many as there are cores).
    """

    def fill(tmp: str) -> None:
        jobs = [(spec, i, tmp) for i in range(spec.num_sequences)]
        n = workers or min(2, os.cpu_count() or 1)
        if n > 1 and len(jobs) >= 16:  # a pool pays off only for larger sets
            # spawn, not fork: forked children of a process that ran OpenCV threads can hang
            with multiprocessing.get_context("spawn").Pool(n) as pool:
                pool.map(_write_one, jobs, chunksize=1)
        else:
            for job in jobs:
                _write_one(job)

    what = f"synthetic event set ({spec.num_sequences} recordings)"
    return build_folder_once(out_dir, spec.fingerprint(), fill, what)


def _folder(name: str, spec: SyntheticEventSpec, root: str | None) -> str:
    digest = hashlib.sha1(spec.fingerprint().encode()).hexdigest()[:10]
    return os.path.join(root or data_root(), "synthetic_events", f"{name}-{digest}")


def register_synthetic_events(name: str, spec: SyntheticEventSpec, root: str | None = None) -> None:
    """Register a synthetic event set generated on first use into ``root`` (default cache)."""
    spec = replace(spec)
    classes = list(spec.classes)
    cache: dict[str, tuple[list[dict], Quirks]] = {}

    def load() -> list[dict]:
        folder = generate_synthetic_events(_folder(name, spec, root), spec)
        if folder not in cache:
            cache[folder] = load_event_sequences(
                folder,
                classes,
                window_us=spec.label_period_us,
                sensor_size=(spec.height, spec.width),
                name=name,
            )
        dicts, quirks = cache[folder]
        record_quirks(name, quirks)
        return list(dicts)

    DatasetCatalog.register(name, load)
    set_event_metadata(name, classes, spec.label_period_us)


def register_builtin_events() -> None:
    """Register the built-in synthetic event sets (idempotent)."""
    for name, spec in BUILTIN_SYNTHETIC_EVENTS.items():
        if name not in DatasetCatalog:
            register_synthetic_events(name, spec)
