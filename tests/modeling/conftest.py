"""Tiny configs and synthetic batches for model tests (no dependency on detlab.data)."""

from __future__ import annotations

import pytest
import torch

from detlab.config import get_cfg
from detlab.structures import Instances


def _tiny_cfg(meta: str = "FCOS", channels: int = 1, num_classes: int = 2):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = meta
    cfg.MODEL.BACKBONE.NAME = "tiny_resnet"
    cfg.MODEL.BACKBONE.NORM = "BN"
    cfg.MODEL.BACKBONE.IN_CHANNELS = channels
    cfg.MODEL.RESNETS.WIDTH_MULT = 0.25
    cfg.MODEL.PIXEL_MEAN = (100.0,) * channels
    cfg.MODEL.PIXEL_STD = (50.0,) * channels
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FCOS.NUM_CONVS = 1
    cfg.MODEL.FCOS.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    if meta == "YOLO":
        cfg.MODEL.BACKBONE.NAME = "CSPDarknet"
        cfg.MODEL.CSP.WIDTH_MULT = 0.125
        cfg.MODEL.NECK.NAME = "PAN"
        cfg.MODEL.FPN.TOP_BLOCK = "none"
        cfg.MODEL.YOLO.NUM_CLASSES = num_classes
        cfg.MODEL.YOLO.REG_MAX = 8
    if "ROI_HEADS" in cfg.MODEL:
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
        cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 64
        cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 64
        cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
        cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 100
        cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 200
        cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 100
        cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    return cfg


def _batch(
    n: int = 2, size: tuple[int, int] = (96, 128), scale: float = 1.0, channels: int = 1, seed=0
) -> list[dict]:
    """Bright rectangles on noise; ``scale`` = original size / network input size."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    out = []
    boxes_all = [
        torch.tensor([[10.0, 20.0, 40.0, 50.0], [60.0, 30.0, 110.0, 90.0]]),
        torch.tensor([[50.0, 10.0, 90.0, 34.0], [8.0, 50.0, 56.0, 86.0]]),
    ]
    for i in range(n):
        img = torch.rand(channels, h, w, generator=g) * 60
        boxes = boxes_all[i % 2]
        for b in boxes:
            x0, y0, x1, y1 = (int(v) for v in b)
            img[:, y0:y1, x0:x1] += 150
        out.append(
            {
                "image": img,
                "instances": Instances((h, w), boxes=boxes.clone(), classes=torch.tensor([0, 1])),
                "height": round(h * scale),
                "width": round(w * scale),
                "image_id": i,
            }
        )
    return out


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded, and do not stall on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cfg():
    return _tiny_cfg


@pytest.fixture
def resnet18_cfg():
    """``resnet18_cfg(channels=1)``: the tiny FCOS config on a full-width torchvision ResNet-18
    (so torchvision state dicts fit it)."""

    def make(channels: int = 1):
        cfg = _tiny_cfg("FCOS", channels=channels)
        cfg.MODEL.BACKBONE.NAME = "resnet18"
        cfg.MODEL.RESNETS.WIDTH_MULT = 1.0
        return cfg

    return make


@pytest.fixture
def make_batch():
    return _batch
