"""Fixtures for the operations tools: a tiny on-disk COCO set and tiny model configs."""

from __future__ import annotations

import json
import os
import uuid

import cv2
import numpy as np
import pytest

# Boxes (XYWH px) per image of the tiny set: far enough apart that their edges never overlap.
TINY_BOXES = {
    1: [([8, 10, 20, 14], 1), ([40, 36, 16, 20], 2)],
    2: [([30, 6, 24, 12], 2)],
    3: [([5, 40, 12, 12], 1), ([36, 20, 22, 30], 1)],
    4: [([20, 20, 30, 24], 2)],
}


def write_tiny_coco(root: str, size: int = 64, dtype=np.uint16, missing: tuple = ()) -> str:
    """A 4-image, 2-class COCO set with bright boxes on speckle; returns the json path.

    Category ids are 1 ("boat") and 2 ("buoy"). Images listed in ``missing`` are not written.
    """
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    peak = 255 if dtype == np.uint8 else 4000
    images, anns = [], []
    for image_id, boxes in TINY_BOXES.items():
        img = rng.gamma(2.0, peak / 40, (size, size))
        for (x, y, w, h), _ in boxes:
            img[y : y + h, x : x + w] += peak / 2
        fname = f"images/{image_id:03d}.png"
        if image_id not in missing:
            cv2.imwrite(os.path.join(root, fname), np.clip(img, 0, peak).astype(dtype))
        images.append({"id": image_id, "file_name": fname, "height": size, "width": size})
        for (x, y, w, h), cat in boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    cats = [{"id": 1, "name": "boat"}, {"id": 2, "name": "buoy"}]
    path = os.path.join(root, "annotations.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)
    return path


TINY_MODEL_YAML = """
MODEL:
  META_ARCHITECTURE: {arch}
  DEVICE: cpu
  PIXEL_MEAN: [128.0]
  PIXEL_STD: [64.0]
  BACKBONE: {{NAME: {backbone}, IN_CHANNELS: 1, NORM: BN, FREEZE_AT: 0}}
  RESNETS: {{WIDTH_MULT: 0.25, BLOCKS_PER_STAGE: [1, 1, 1, 1]}}
  CSP: {{WIDTH_MULT: 0.125}}
  NECK: {{NAME: {neck}}}
  FPN: {{IN_STAGES: [2, 3, 4], OUT_CHANNELS: 16, TOP_BLOCK: none}}
  FCOS: {{NUM_CLASSES: 2, NUM_CONVS: 1}}
  YOLO: {{NUM_CLASSES: 2, REG_MAX: 4, SCORE_THRESH_TEST: 0.001}}
  RETINANET: {{NUM_CLASSES: 2, NUM_CONVS: 1, PRIOR_PROB: 0.2}}
  ROI_HEADS: {{NUM_CLASSES: 2, BATCH_SIZE_PER_IMAGE: 32}}
  ROI_BOX_HEAD: {{FC_DIM: 32, CONV_DIM: 16}}
  RPN: {{BATCH_SIZE_PER_IMAGE: 32, PRE_NMS_TOPK_TEST: 200, POST_NMS_TOPK_TEST: 50}}
DATASETS:
  REGISTER: [{{name: {name}, json_file: {json}, image_root: {root}}}]
  TRAIN: [{name}]
  TEST: [{name}]
DATALOADER: {{MAPPER: ShipSARMapper, NUM_WORKERS: 0}}
INPUT: {{MIN_SIZE_TRAIN: [64], MAX_SIZE_TRAIN: 64, MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 64, FORMAT: L}}
SOLVER: {{IMS_PER_BATCH: 2, BASE_LR: 0.01, MAX_ITER: 10, WARMUP_ITERS: 0}}
OUTPUT_DIR: {out}
SEED: 3
"""


@pytest.fixture
def tiny_boxes():
    """``{image_id: [(XYWH box, category id), ...]}`` of the tiny set."""
    return TINY_BOXES


@pytest.fixture
def make_tiny_coco(tmp_path):
    """Factory ``(folder name, **write_tiny_coco kwargs) -> json path`` under tmp_path."""
    return lambda name, **kw: write_tiny_coco(str(tmp_path / name), **kw)


@pytest.fixture
def tiny_coco(tmp_path):
    """Path of the tiny COCO json (16-bit images) in a tmp folder."""
    return write_tiny_coco(str(tmp_path / "tiny"))


@pytest.fixture
def tiny_config(tmp_path, tiny_coco):
    """Factory: write a tiny single-channel config over the tiny set; returns its path."""
    counter = iter(range(1000))

    def make(arch: str = "FCOS", name: str | None = None, json_file: str | None = None) -> str:
        k = next(counter)
        json_file = json_file or tiny_coco
        text = TINY_MODEL_YAML.format(
            arch=arch,
            backbone="CSPDarknet" if arch == "YOLO" else "tiny_resnet",
            neck="PAN" if arch == "YOLO" else "FPN",
            name=name or f"ops_tiny_{uuid.uuid4().hex[:10]}",
            json=json_file,
            root=os.path.dirname(json_file),
            out=str(tmp_path / f"out{k}"),
        )
        path = tmp_path / f"tiny_{arch}_{k}.yaml"
        path.write_text(text)
        return str(path)

    return make


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
