"""Detectron2 model-zoo configs written in Detectron2's own syntax, for compatibility tests.

The texts reproduce the content and syntax of Detectron2's ``Base-RCNN-FPN.yaml``,
``Base-RetinaNet.yaml`` and the COCO-Detection R50/R101-FPN files (tuple syntax in strings,
``!!python/object/apply:eval``, ``VERSION: 2``, Mask R-CNN keys switched off), so the tests do
not depend on fetched files. :func:`write_zoo` writes them in Detectron2's folder layout.
"""

from __future__ import annotations

from pathlib import Path

BASE_RCNN_FPN = """\
MODEL:
  META_ARCHITECTURE: "GeneralizedRCNN"
  BACKBONE:
    NAME: "build_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
  FPN:
    IN_FEATURES: ["res2", "res3", "res4", "res5"]
  ANCHOR_GENERATOR:
    SIZES: [[32], [64], [128], [256], [512]]  # One size for each in feature map
    ASPECT_RATIOS: [[0.5, 1.0, 2.0]]  # Three aspect ratios (same for all in feature maps)
  RPN:
    IN_FEATURES: ["p2", "p3", "p4", "p5", "p6"]
    PRE_NMS_TOPK_TRAIN: 2000  # Per FPN level
    PRE_NMS_TOPK_TEST: 1000  # Per FPN level
    # Detectron1 uses 2000 proposals per-batch,
    # which is approximately 1000 proposals per-image since the default batch size for FPN is 2.
    POST_NMS_TOPK_TRAIN: 1000
    POST_NMS_TOPK_TEST: 1000
  ROI_HEADS:
    NAME: "StandardROIHeads"
    IN_FEATURES: ["p2", "p3", "p4", "p5"]
  ROI_BOX_HEAD:
    NAME: "FastRCNNConvFCHead"
    NUM_FC: 2
    POOLER_RESOLUTION: 7
  ROI_MASK_HEAD:
    NAME: "MaskRCNNConvUpsampleHead"
    NUM_CONV: 4
    POOLER_RESOLUTION: 14
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.02
  STEPS: (60000, 80000)
  MAX_ITER: 90000
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
VERSION: 2
"""

BASE_RETINANET = """\
MODEL:
  META_ARCHITECTURE: "RetinaNet"
  BACKBONE:
    NAME: "build_retinanet_resnet_fpn_backbone"
  RESNETS:
    OUT_FEATURES: ["res3", "res4", "res5"]
  ANCHOR_GENERATOR:
    SIZES: @SIZES@
  FPN:
    IN_FEATURES: ["res3", "res4", "res5"]
  RETINANET:
    IOU_THRESHOLDS: [0.4, 0.5]
    IOU_LABELS: [0, -1, 1]
    SMOOTH_L1_LOSS_BETA: 0.0
DATASETS:
  TRAIN: ("coco_2017_train",)
  TEST: ("coco_2017_val",)
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.01  # Note that RetinaNet uses a different default learning rate
  STEPS: (60000, 80000)
  MAX_ITER: 90000
INPUT:
  MIN_SIZE_TRAIN: (640, 672, 704, 736, 768, 800)
VERSION: 2
""".replace(
    "@SIZES@",
    '!!python/object/apply:eval ["[[x, x * 2**(1.0/3), x * 2**(2.0/3) ] '
    'for x in [32, 64, 128, 256, 512 ]]"]',
)


def _rcnn(depth: int, schedule: str) -> str:
    text = f"""\
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-{depth}.pkl"
  MASK_ON: False
  RESNETS:
    DEPTH: {depth}
"""
    if schedule == "3x":
        text += "SOLVER:\n  STEPS: (210000, 250000)\n  MAX_ITER: 270000\n"
    return text


def _retinanet(depth: int, schedule: str) -> str:
    text = f"""\
_BASE_: "../Base-RetinaNet.yaml"
MODEL:
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-{depth}.pkl"
  RESNETS:
    DEPTH: {depth}
"""
    if schedule == "3x":
        text += "SOLVER:\n  STEPS: (210000, 250000)\n  MAX_ITER: 270000\n"
    return text


FILES = {
    "Base-RCNN-FPN.yaml": BASE_RCNN_FPN,
    "Base-RetinaNet.yaml": BASE_RETINANET,
    "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml": _rcnn(50, "1x"),
    "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml": _rcnn(50, "3x"),
    "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml": _rcnn(101, "3x"),
    "COCO-Detection/retinanet_R_50_FPN_1x.yaml": _retinanet(50, "1x"),
    "COCO-Detection/retinanet_R_50_FPN_3x.yaml": _retinanet(50, "3x"),
    "COCO-Detection/retinanet_R_101_FPN_3x.yaml": _retinanet(101, "3x"),
}
DETECTORS = [k for k in FILES if k.startswith("COCO-Detection/")]


def write_zoo(root: Path) -> Path:
    """Write :data:`FILES` under ``root`` (Detectron2's layout); returns ``root``."""
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
