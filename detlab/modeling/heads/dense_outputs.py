"""Steps shared by dense heads: input channels, per-anchor layout, candidates, final NMS."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from detlab.structures import Instances, ShapeSpec
from detlab.utils.errors import UserError

__all__ = ["detections_after_nms", "level_channels", "per_anchor", "select_candidates"]


def level_channels(input_shape: dict[str, ShapeSpec], head: str) -> int:
    """The one channel count of the levels a dense head reads (its subnets are shared)."""
    channels = {s.channels for s in input_shape.values()}
    if len(channels) != 1:
        raise UserError(f"The {head} head needs pyramid levels with equal channel counts.")
    return channels.pop()


def per_anchor(x: torch.Tensor, channels: int) -> torch.Tensor:
    """Conv output B×(A·C)×H×W → B×(H·W·A)×C, rows ordered like the anchors (y, x, anchor)."""
    b, _, h, w = x.shape
    return x.view(b, -1, channels, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, channels)


def select_candidates(scores: torch.Tensor, score_thresh: float, topk: int) -> torch.Tensor:
    """Indices of the flat ``scores`` above ``score_thresh``, at most the best ``topk``."""
    keep = torch.nonzero(scores > score_thresh).squeeze(1)
    if keep.numel() > topk:
        keep = keep[scores[keep].topk(topk).indices]
    return keep


def detections_after_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    image_size: tuple[int, int],
    nms_thresh: float,
    max_detections: int,
) -> Instances:
    """Clip XYXY ``boxes`` to ``image_size`` (h, w), class-wise NMS, the best
    ``max_detections``, as one image's ``Instances`` (boxes, scores, classes)."""
    h, w = image_size
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keep = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    return Instances((h, w), boxes=boxes[keep], scores=scores[keep], classes=classes[keep])
