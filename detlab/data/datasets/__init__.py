"""Datasets: readers for COCO json, Pascal VOC folders and YOLO txt sets, their registration
(from Python or ``DATASETS.REGISTER``), and the built-in synthetic SAR sets."""

from detlab.data.datasets.builtin import (
    BUILTIN_SYNTHETIC,
    data_root,
    generate_synthetic_sar,
    register_builtin,
    register_synthetic_sar,
)
from detlab.data.datasets.coco import (
    load_coco_json,
    load_stats,
    read_coco,
    register_coco_instances,
)
from detlab.data.datasets.quirks import (
    Quirks,
    ReadResult,
    dataset_quirks,
    load_counters,
)
from detlab.data.datasets.register import (
    register_from_config,
    register_reader,
    register_voc_instances,
    register_yolo_instances,
)
from detlab.data.datasets.synthetic_sar import SyntheticSARSpec, render_scene
from detlab.data.datasets.voc import read_voc
from detlab.data.datasets.yolo import read_yolo

__all__ = [
    "BUILTIN_SYNTHETIC",
    "Quirks",
    "ReadResult",
    "SyntheticSARSpec",
    "data_root",
    "dataset_quirks",
    "generate_synthetic_sar",
    "load_coco_json",
    "load_counters",
    "load_stats",
    "read_coco",
    "read_voc",
    "read_yolo",
    "register_builtin",
    "register_coco_instances",
    "register_from_config",
    "register_reader",
    "register_synthetic_sar",
    "register_voc_instances",
    "register_yolo_instances",
    "render_scene",
]
