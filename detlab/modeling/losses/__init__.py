"""Losses: size-aware weights (``SIZE_WEIGHT_REGISTRY``) and box regression losses
(smooth-L1, IoU family, DFL)."""

from detlab.modeling.losses.box_losses import distribution_focal_loss, iou_loss, smooth_l1
from detlab.modeling.losses.size_weights import (
    SIZE_WEIGHT_REGISTRY,
    SizeWeighting,
    build_size_weighting,
)

__all__ = [
    "SIZE_WEIGHT_REGISTRY",
    "SizeWeighting",
    "build_size_weighting",
    "distribution_focal_loss",
    "iou_loss",
    "smooth_l1",
]
