"""Losses: size-aware weights (``SIZE_WEIGHT_REGISTRY``), IoU-family box losses and DFL."""

from detlab.modeling.losses.box_losses import distribution_focal_loss, iou_loss
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
]
