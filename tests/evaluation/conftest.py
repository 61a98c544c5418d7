"""Random COCO ground truth and detections for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest


def make_coco(
    seed: int,
    num_images: int = 40,
    num_classes: int = 4,
    max_gt: int = 8,
    dets_per_image: int = 20,
    crowd_rate: float = 0.08,
    empty_rate: float = 0.15,
    classes_without_gt: int = 1,
) -> tuple[dict, list[dict]]:
    """COCO GT dict + results list: crowd boxes, empty images, classes with no GT, ties."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 10 + 7 * k, "name": f"cls{k}"} for k in range(num_classes)]
    gt_cats = cats[: num_classes - classes_without_gt]
    images = [
        {"id": 100 + i, "width": 320, "height": 240, "file_name": f"{i}.png"}
        for i in range(num_images)
    ]
    anns, dets = [], []
    for img in images:
        n = 0 if rng.random() < empty_rate else int(rng.integers(1, max_gt + 1))
        gts = []
        for _ in range(n):
            # sizes spanning tiny to large (areas ~ 4 px² .. 40k px²)
            w, h = np.exp(rng.uniform(np.log(2), np.log(200), 2))
            x, y = rng.uniform(0, 300, 2)
            ann = {
                "id": len(anns) + 1,
                "image_id": img["id"],
                "category_id": int(gt_cats[rng.integers(len(gt_cats))]["id"]),
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": float(w * h * rng.uniform(0.7, 1.0)),
                "iscrowd": int(rng.random() < crowd_rate),
            }
            anns.append(ann)
            gts.append(ann)
        for _ in range(int(rng.integers(0, dets_per_image + 1))):
            if gts and rng.random() < 0.6:
                g = gts[rng.integers(len(gts))]
                b = np.asarray(g["bbox"]) * rng.normal(1.0, 0.1, 4)
                b[2:] = np.abs(b[2:]) + 0.5
                other = cats[rng.integers(len(cats))]["id"]
                cat = g["category_id"] if rng.random() < 0.85 else other
            else:
                w, h = np.exp(rng.uniform(np.log(2), np.log(200), 2))
                b = np.array([*rng.uniform(0, 300, 2), w, h])
                cat = cats[rng.integers(len(cats))]["id"]
            # coarse scores create ties, which COCO breaks by a stable sort
            score = float(np.round(rng.random(), 2))
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": int(cat),
                    "bbox": [float(v) for v in b],
                    "score": score,
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.fixture
def coco_factory():
    """``make_coco`` itself, for tests that want several seeds or sizes."""
    return make_coco
