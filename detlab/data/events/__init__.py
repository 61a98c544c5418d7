"""Event-camera data: file readers and writers, time index, labels, dense representations.

Readers (:func:`open_events`) cover HDF5 ``events/{x,y,p,t}``, Prophesee ``.dat`` and NumPy
``.npy``/``.npz``; :func:`read_window` returns the events of a time window with repaired
timestamps, found by binary search; ``REPRESENTATION_REGISTRY`` turns a window into a tensor.
Datasets of recordings are in :mod:`detlab.data.datasets.events`.
"""

from detlab.data.events.index import EventIndex, build_index, get_index, read_window
from detlab.data.events.labels import BBOX_DTYPE, label_path_for, load_labels, save_labels
from detlab.data.events.readers import EventReader, Events, open_events
from detlab.data.events.representations import (
    REPRESENTATION_REGISTRY,
    EventRepresentation,
    StackedHistogram,
    TimeSurface,
    VoxelGrid,
    build_representation,
    downsample_events,
)
from detlab.data.events.writers import write_dat, write_events, write_h5, write_npy, write_npz

__all__ = [
    "BBOX_DTYPE",
    "REPRESENTATION_REGISTRY",
    "EventIndex",
    "EventReader",
    "EventRepresentation",
    "Events",
    "StackedHistogram",
    "TimeSurface",
    "VoxelGrid",
    "build_index",
    "build_representation",
    "downsample_events",
    "get_index",
    "label_path_for",
    "load_labels",
    "open_events",
    "read_window",
    "save_labels",
    "write_dat",
    "write_events",
    "write_h5",
    "write_npy",
    "write_npz",
]
