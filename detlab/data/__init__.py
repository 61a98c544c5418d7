"""Data: dataset catalog, readers (COCO json, Pascal VOC, YOLO txt, event recordings), built-in
datasets, leak-free splits, event representations, mappers, samplers and loaders.

Importing this package registers the built-in synthetic SAR datasets (``sar_ships_synth_*``,
``sar_vessels_synth_*``) and synthetic event recordings (``events_synth_*``); their files are
generated only when first used.
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
from detlab.data.datasets.builtin_events import register_builtin_events
from detlab.data.datasets.events import register_event_sequences
from detlab.data.mappers import ClassAwareMapper, DatasetMapper, EventWindowMapper, ShipSARMapper
from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.data.samplers import (
    InferenceSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
    repeat_factors_from_category_frequency,
)
from detlab.data.sequence_samplers import SequenceBatchStream, SequenceLayout
from detlab.data.stats import dataset_stats, format_dataset_stats

register_builtin()
register_builtin_events()

__all__ = [
    "MAPPER_REGISTRY",
    "ClassAwareMapper",
    "DatasetCatalog",
    "DatasetMapper",
    "EventWindowMapper",
    "InferenceSampler",
    "Metadata",
    "MetadataCatalog",
    "RepeatFactorTrainingSampler",
    "SequenceBatchStream",
    "SequenceLayout",
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
    "register_builtin_events",
    "register_coco_instances",
    "register_event_sequences",
    "register_from_config",
    "register_synthetic_sar",
    "register_voc_instances",
    "register_yolo_instances",
    "repeat_factors_from_category_frequency",
]
