"""Data: dataset catalog, readers (COCO json, Pascal VOC, YOLO txt), built-in datasets, leak-free
splits, mappers, samplers and loaders.

Importing this package registers the built-in synthetic SAR datasets (``sar_ships_synth_*``,
``sar_vessels_synth_*``); their files are generated only when first used.
"""

from detlab.data.build import (
    TestDataLoader,
    TrainDataLoader,
    build_detection_test_loader,
    build_detection_train_loader,
    build_mapper,
    get_detection_dataset_dicts,
)
from detlab.data.catalog import DatasetCatalog, Metadata, MetadataCatalog
from detlab.data.datasets import (
    SyntheticSARSpec,
    data_root,
    dataset_quirks,
    generate_synthetic_sar,
    load_coco_json,
    read_coco,
    read_voc,
    read_yolo,
    register_builtin,
    register_coco_instances,
    register_from_config,
    register_synthetic_sar,
    register_voc_instances,
    register_yolo_instances,
)
from detlab.data.mappers import ClassAwareMapper, DatasetMapper, ShipSARMapper
from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from detlab.data.stats import dataset_stats, format_dataset_stats

register_builtin()

__all__ = [
    "MAPPER_REGISTRY",
    "ClassAwareMapper",
    "DatasetCatalog",
    "DatasetMapper",
    "InferenceSampler",
    "Metadata",
    "MetadataCatalog",
    "RepeatFactorTrainingSampler",
    "ShipSARMapper",
    "SyntheticSARSpec",
    "TestDataLoader",
    "TrainDataLoader",
    "TrainingSampler",
    "build_detection_test_loader",
    "build_detection_train_loader",
    "build_mapper",
    "data_root",
    "dataset_quirks",
    "dataset_stats",
    "format_dataset_stats",
    "generate_synthetic_sar",
    "get_detection_dataset_dicts",
    "load_coco_json",
    "read_coco",
    "read_voc",
    "read_yolo",
    "register_builtin",
    "register_coco_instances",
    "register_from_config",
    "register_synthetic_sar",
    "register_voc_instances",
    "register_yolo_instances",
    "repeat_factors_from_category_frequency",
]
