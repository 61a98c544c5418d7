"""Datasets: COCO json loading/registration and the built-in synthetic SAR sets."""

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
    register_coco_instances,
    register_from_config,
)
from detlab.data.datasets.synthetic_sar import SyntheticSARSpec, render_scene

__all__ = [
    "BUILTIN_SYNTHETIC",
    "SyntheticSARSpec",
    "data_root",
    "generate_synthetic_sar",
    "load_coco_json",
    "load_stats",
    "register_builtin",
    "register_coco_instances",
    "register_from_config",
    "register_synthetic_sar",
    "render_scene",
]
