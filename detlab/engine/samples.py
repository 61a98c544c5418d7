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

    Drawn by :func:`detlab.visualization.draw_on_tensor`, the code ``tools/visualize.py``
    uses: ground truth solid green, predictions dashed red.
    """
    from detlab.visualization.draw import draw_on_tensor

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
    model = unwrap_model(trainer.model)
    was_training = model.training
    try:
        model.eval()
        _draw_samples(trainer, model, storage)
    except Exception as err:  # noqa: BLE001 - pictures are a convenience, never fatal
        logger.warning(f"Could not draw sample images for TensorBoard: {err}")
    finally:
        model.train(was_training)


def _draw_samples(trainer: Any, model: Any, storage: Any) -> None:
    cfg = trainer.cfg
    n = int(cfg.LOGGING.NUM_SAMPLE_IMAGES)
    name = cfg.DATASETS.TEST[0]
    gt_by_id: dict[Any, torch.Tensor] | None = None
    shown = 0
    for batch in trainer.build_test_loader(cfg, name):
        if gt_by_id is None and not all("instances" in d for d in batch):
            gt_by_id = _ground_truth(name)
        outputs = model(batch)
        for inp, out in zip(batch, outputs, strict=False):
            img = inp["image"]
            sy, sx = img.shape[-2] / inp["height"], img.shape[-1] / inp["width"]
            scale = torch.tensor([sx, sy, sx, sy])
            inst = out["instances"]
            keep = inst.scores >= cfg.LOGGING.SAMPLE_SCORE_THRESH
            pred = inst.boxes[keep].detach().cpu().float() * scale
            if "instances" in inp and inp["instances"].has("boxes"):
                gt = inp["instances"].boxes.detach().cpu().float()  # already in image pixels
            else:
                gt = (gt_by_id or {}).get(inp["image_id"], torch.zeros(0, 4)) * scale
            storage.put_image(f"val/{name}/{shown}", draw_detections(img, gt, pred))
            shown += 1
            if shown >= n:
                return


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
