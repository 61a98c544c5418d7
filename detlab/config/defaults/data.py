"""``DATASETS.*``, ``DATALOADER.*`` and ``INPUT.*`` defaults."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_data_defaults"]


def add_data_defaults(cfg: CN) -> None:
    cfg.DATASETS = CN()
    # catalog names of the training datasets (concatenated)
    cfg.DATASETS.TRAIN = ("sar_ships_synth_train",)
    # catalog names evaluated during and after training
    cfg.DATASETS.TEST = ("sar_ships_synth_val",)
    # Datasets registered from the config file, no Python needed. Each entry is a mapping with
    # name, format (coco | voc | yolo; default coco) and that format's fields: coco {json_file,
    # image_root}; voc {root, split, classes, image_dir, annotation_dir, difficult: keep|crowd|
    # drop, one_based}; yolo {root (folder or data.yaml), split, images, labels, names}. Any
    # entry may add split_ratios {part: fraction} (+ split_seed, group_pattern) to also register
    # <name>_<part> sets with no image in two parts. Relative paths are resolved against the
    # directory of the config file that declares them. See datasets/README.md.
    cfg.DATASETS.REGISTER = []

    cfg.DATALOADER = CN()
    # Worker processes per loader (0 = load in the main process). If workers die, loading
    # continues in-process at the same position with a warning.
    cfg.DATALOADER.NUM_WORKERS = 2
    cfg.DATALOADER.MAPPER = "DatasetMapper"  # name in MAPPER_REGISTRY
    # "TrainingSampler" (seeded shuffle, every epoch a new permutation) or
    # "RepeatFactorTrainingSampler" (images with rare classes repeated, LVIS-style).
    cfg.DATALOADER.SAMPLER_TRAIN = "TrainingSampler"
    # Repeat-factor threshold t: an image is repeated max(1, sqrt(t / f_c)) times per epoch,
    # f_c = fraction of training images holding its rarest class c (0 = no repeats).
    cfg.DATALOADER.REPEAT_THRESHOLD = 0.0
    # Batch images of the same orientation (landscape/portrait) together.
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = True
    # Drop training images without any (non-crowd) box.
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    # Images a test loader puts in one batch.
    cfg.DATALOADER.TEST_BATCH_SIZE = 1

    cfg.INPUT = CN()
    # Shortest-edge sizes in training: one drawn per image ("choice") or uniform between
    # min and max ("range"). 0 keeps the original size.
    cfg.INPUT.MIN_SIZE_TRAIN = (800,)
    # "choice": one of MIN_SIZE_TRAIN per image; "range": uniform between its two values
    cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
    cfg.INPUT.MAX_SIZE_TRAIN = 1333  # cap on the longest edge (0 = none)
    cfg.INPUT.MIN_SIZE_TEST = 800  # shortest edge at inference (0 = no resize)
    cfg.INPUT.MAX_SIZE_TEST = 1333  # longest edge cap at inference
    # "shortest_edge": MIN_SIZE_*/MAX_SIZE_* as Detectron2; "letterbox": the longest edge
    # becomes MAX_SIZE_TRAIN/MAX_SIZE_TEST, aspect kept, the model pads bottom/right (YOLO-style
    # test-time resize).
    cfg.INPUT.RESIZE_MODE = "shortest_edge"
    # Channel order of 3-channel output: "BGR" | "RGB" ("L" = grey, used with 1 channel).
    cfg.INPUT.FORMAT = "BGR"
    # DatasetMapper flips: "none" | "horizontal" | "vertical" | "both" (probability 0.5 each).
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    # Extra augmentations: list of {name: <albumentations transform>, ...params}, e.g.
    # [{name: GaussNoise, p: 0.3}, {name: Affine, scale: [0.9, 1.1], p: 0.5}]; boxes follow.
    cfg.INPUT.AUGMENTATIONS = []

    # YOLO-style training pipeline around the DATALOADER.MAPPER (any mapper derived from
    # DatasetMapper, so any detector): each training image is a mosaic of 4 images (with
    # probability PROB) or one letterboxed image, on a SIZE x SIZE canvas, then a random affine
    # (INPUT.RANDOM_AFFINE), optional mixup with a second such image, HSV jitter (INPUT.HSV;
    # 3-channel images only), then the mapper's own augmentations (flips, SAR set, ...).
    cfg.INPUT.MOSAIC = CN()
    cfg.INPUT.MOSAIC.ENABLED = False
    cfg.INPUT.MOSAIC.SIZE = 640  # side of the square training image, px
    cfg.INPUT.MOSAIC.PROB = 1.0  # chance that an image is a mosaic of 4
    cfg.INPUT.MOSAIC.MIXUP_PROB = 0.0  # chance of blending with a second image (Beta(32, 32))
    # The last CLOSE_ITERS iterations train without mosaic and mixup (letterboxed single
    # images). Decided per loader batch, so a resumed run closes at the same iteration.
    cfg.INPUT.MOSAIC.CLOSE_ITERS = 0
    cfg.INPUT.MOSAIC.PAD_VALUE = 114  # canvas fill on the 0..255 scale
    cfg.INPUT.RANDOM_AFFINE = CN()  # applied by the INPUT.MOSAIC pipeline
    cfg.INPUT.RANDOM_AFFINE.DEGREES = 0.0  # max |rotation|, degrees
    cfg.INPUT.RANDOM_AFFINE.TRANSLATE = 0.1  # max shift, fraction of SIZE
    cfg.INPUT.RANDOM_AFFINE.SCALE = (0.5, 1.5)  # scale range
    cfg.INPUT.RANDOM_AFFINE.SHEAR = 0.0  # max |shear|, degrees
    # HSV jitter gains (hue, saturation, value) of the INPUT.MOSAIC pipeline, for 3-channel
    # images (single-channel images, e.g. SAR, are left alone); (0, 0, 0) = off.
    cfg.INPUT.HSV = (0.0, 0.0, 0.0)

    # ShipSARMapper: intensity handling and the SAR augmentation set.
    cfg.INPUT.SAR = CN()
    cfg.INPUT.SAR.SCALING = "db"  # "db" | "log" | "linear" | "none" (full-range, no stretch)
    cfg.INPUT.SAR.CLIP_PERCENTILES = (1.0, 99.8)  # per-image stretch range, percent
    # Round the stretched image to 256 grey levels and augment as uint8 (fast; ~0.1 dB steps
    # over a 25 dB stretch). False keeps float32 precision through the pipeline.
    cfg.INPUT.SAR.EIGHT_BIT = True
    cfg.INPUT.SAR.HFLIP_PROB = 0.5
    cfg.INPUT.SAR.VFLIP_PROB = 0.5
    cfg.INPUT.SAR.ROT90_PROB = 0.5  # random multiple of 90 degrees
    cfg.INPUT.SAR.ROTATION_ANGLE = 0.0  # max |angle| in degrees of arbitrary rotations (0 = off)
    cfg.INPUT.SAR.ROTATION_PROB = 0.5
    cfg.INPUT.SAR.BRIGHTNESS = 0.1  # max brightness shift, fraction of the 0..1 range
    cfg.INPUT.SAR.CONTRAST = 0.1  # max contrast change, fraction
    cfg.INPUT.SAR.BRIGHTNESS_CONTRAST_PROB = 0.5
    cfg.INPUT.SAR.SPECKLE_PROB = 0.0  # extra gamma speckle on the linear image
    cfg.INPUT.SAR.SPECKLE_LOOKS = (4.0, 16.0)  # looks of the extra speckle (uniform range)

    # ClassAwareMapper: extra augmentation for images holding given classes. Each policy is
    # {classes: [names or contiguous ids], augmentations: [{name: ..., ...}], p: 1.0}.
    cfg.INPUT.CLASS_AWARE = CN()
    cfg.INPUT.CLASS_AWARE.POLICIES = []
