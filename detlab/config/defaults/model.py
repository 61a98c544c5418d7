"""``MODEL.*`` defaults: meta-architecture, backbone, neck, heads, losses, weights."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_model_defaults"]


def add_model_defaults(cfg: CN) -> None:
    cfg.MODEL = CN()
    # Name in META_ARCH_REGISTRY: "FCOS" (one-stage) or "FasterRCNN" (two-stage).
    cfg.MODEL.META_ARCHITECTURE = "FCOS"
    cfg.MODEL.DEVICE = "cpu"
    # Path to a detlab checkpoint or a torchvision-style backbone state dict. Applied only when
    # not resuming (`--resume` restores everything from OUTPUT_DIR/last_checkpoint instead).
    cfg.MODEL.WEIGHTS = ""
    # Per-channel normalisation of the mapper's float image (0..255 scale); length = channels.
    cfg.MODEL.PIXEL_MEAN = (103.53, 116.28, 123.675)
    cfg.MODEL.PIXEL_STD = (57.375, 57.12, 58.395)

    cfg.MODEL.BACKBONE = CN()
    cfg.MODEL.BACKBONE.NAME = "resnet50"  # name in BACKBONE_REGISTRY
    cfg.MODEL.BACKBONE.IN_CHANNELS = 3  # 1 for single-channel SAR
    cfg.MODEL.BACKBONE.FREEZE_AT = 0  # 0 = train all; k = freeze stem + first k-1 stages
    cfg.MODEL.BACKBONE.NORM = "FrozenBN"  # "BN" | "FrozenBN" | "GN"

    cfg.MODEL.NECK = CN()
    cfg.MODEL.NECK.NAME = "FPN"  # name in NECK_REGISTRY: "FPN" | "PAFPN"
    cfg.MODEL.FPN = CN()
    # Backbone stages fed to the FPN, 1..4 = strides 4/8/16/32. 3-scale: [2, 3, 4];
    # 4-scale: [1, 2, 3, 4].
    cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    cfg.MODEL.FPN.TOP_BLOCK = "P6P7"  # "none" | "P6" | "P6P7"
    cfg.MODEL.FPN.NORM = ""

    cfg.MODEL.SIZE_AWARE_LOSS = CN()
    cfg.MODEL.SIZE_AWARE_LOSS.ENABLED = False
    cfg.MODEL.SIZE_AWARE_LOSS.TYPE = "exponential"  # name in SIZE_WEIGHT registry
    cfg.MODEL.SIZE_AWARE_LOSS.MAX_WEIGHT = 2.5
    cfg.MODEL.SIZE_AWARE_LOSS.SMALL_AREA = 1024.0  # px² in the original image (32²)
    cfg.MODEL.SIZE_AWARE_LOSS.MEDIUM_AREA = 9216.0  # px² in the original image (96²)
    cfg.MODEL.SIZE_AWARE_LOSS.NORMALIZE = "num_pos"  # "num_pos" | "weight_sum"
