"""Validation images with ground truth (green) and predictions (red) for TensorBoard."""

from __future__ import annotations

import logging
from typing import Any

import torch

from detlab.engine.checkpoint import unwrap_model

__all__ = ["draw_detections", "log_sample_images"]

logger = logging.getLogger("detlab")


def draw_detections(
    image: torch.Tensor, gt_boxes: torch.Tensor, pred_boxes: torch.Tensor
) -> torch.Tensor:
    """Boxes are XYXY in ``image``'s pixels; returns a 3×H×W uint8 image.

    Drawn by :func:`detlab.utils.visualizer.draw_on_tensor`, the code ``tools/visualize.py``
    uses: ground truth solid green, predictions dashed red.
    """
    from detlab.utils.visualizer import draw_on_tensor

    return draw_on_tensor(
        image,
        gt_boxes=gt_boxes,
        pred_boxes=pred_boxes,
        gt_color=(0, 255, 0),
        pred_color=(255, 0, 0),
        labels=False,
    )


@torch.no_grad()
def log_sample_images(trainer: Any, storage: Any) -> None:
    """Put the first ``LOGGING.NUM_SAMPLE_IMAGES`` images of the first test set in ``storage``."""
    cfg = trainer.cfg
    n = int(cfg.LOGGING.NUM_SAMPLE_IMAGES)
    name = cfg.DATASETS.TEST[0]
    try:
        loader = trainer.build_test_loader(cfg, name)
        gt_by_id = _ground_truth(name)
        model = unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        shown = 0
        for batch in loader:
            outputs = model(batch)
            for inp, out in zip(batch, outputs, strict=False):
                img = inp["image"]
                sy, sx = img.shape[-2] / inp["height"], img.shape[-1] / inp["width"]
                scale = torch.tensor([sx, sy, sx, sy])
                inst = out["instances"]
                keep = inst.scores >= cfg.LOGGING.SAMPLE_SCORE_THRESH
                pred = inst.boxes[keep].cpu() * scale
                gt = gt_by_id.get(inp["image_id"], torch.zeros(0, 4)) * scale
                storage.put_image(f"val/{name}/{shown}", draw_detections(img, gt, pred))
                shown += 1
                if shown >= n:
                    break
            if shown >= n:
                break
        model.train(was_training)
    except Exception as err:  # noqa: BLE001 - pictures are a convenience, never fatal
        logger.warning(f"Could not draw sample images for TensorBoard: {err}")


def _ground_truth(name: str) -> dict[Any, torch.Tensor]:
    """``image_id → N×4 XYXY`` boxes from the dataset catalog (empty if unavailable)."""
    try:
        from detlab.data import DatasetCatalog
    except ImportError:
        return {}
    out = {}
    for d in DatasetCatalog.get(name):
        boxes = [a["bbox"] for a in d.get("annotations", [])]
        t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        t[:, 2:] += t[:, :2]
        out[d["image_id"]] = t
    return out
