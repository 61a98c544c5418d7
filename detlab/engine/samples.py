"""Validation images with ground truth (green) and predictions (red) for TensorBoard."""

from __future__ import annotations

import logging
from typing import Any

import torch

from detlab.engine.checkpoint import unwrap_model

__all__ = ["draw_detections", "log_sample_images"]

logger = logging.getLogger("detlab")


def _to_uint8_rgb(image: torch.Tensor) -> torch.Tensor:
    """C×H×W float (0..255 scale) → 3×H×W uint8, min-max stretched per image."""
    img = image.detach().float().cpu()
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    elif img.shape[0] >= 3:
        img = img[:3].flip(0)  # BGR → RGB for display
    lo, hi = float(img.min()), float(img.max())
    img = (img - lo) / max(hi - lo, 1e-6) * 255.0
    return img.clamp(0, 255).to(torch.uint8)


def draw_detections(
    image: torch.Tensor, gt_boxes: torch.Tensor, pred_boxes: torch.Tensor
) -> torch.Tensor:
    """Boxes are XYXY in ``image``'s pixels; returns a 3×H×W uint8 image."""
    from torchvision.utils import draw_bounding_boxes

    img = _to_uint8_rgb(image)
    if len(gt_boxes):
        img = draw_bounding_boxes(img, gt_boxes.float(), colors="lime", width=1)
    if len(pred_boxes):
        img = draw_bounding_boxes(img, pred_boxes.float(), colors="red", width=1)
    return img


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
