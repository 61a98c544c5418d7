"""``DATASETS.*``, ``DATALOADER.*`` and ``INPUT.*`` defaults."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_data_defaults"]


def add_data_defaults(cfg: CN) -> None:
    cfg.DATASETS = CN()
    cfg.DATASETS.TRAIN = ("sar_ships_synth_train",)
    cfg.DATASETS.TEST = ("sar_ships_synth_val",)
    # COCO datasets registered from the config file, no Python needed. Each entry is a mapping
    # {name: str, json_file: str, image_root: str}; relative paths are resolved against the
    # directory of the config file that declares them.
    cfg.DATASETS.REGISTER = []

    cfg.DATALOADER = CN()
    cfg.DATALOADER.NUM_WORKERS = 2
    cfg.DATALOADER.MAPPER = "DatasetMapper"  # name in MAPPER_REGISTRY
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.0
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

    cfg.INPUT = CN()
    cfg.INPUT.MIN_SIZE_TRAIN = (800,)
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 1333
    cfg.INPUT.MIN_SIZE_TEST = 800
    cfg.INPUT.MAX_SIZE_TEST = 1333
    cfg.INPUT.FORMAT = "BGR"
    # Extra augmentations: list of {name: <albumentations transform>, ...params}.
    cfg.INPUT.AUGMENTATIONS = []
