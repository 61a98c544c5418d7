"""Losses: size-aware weights (``SIZE_WEIGHT_REGISTRY``) and box regression losses."""

from detlab.modeling.losses.box_losses import smooth_l1
from detlab.modeling.losses.size_weights import (
    SIZE_WEIGHT_REGISTRY,
    SizeWeighting,
    build_size_weighting,
)

__all__ = ["SIZE_WEIGHT_REGISTRY", "SizeWeighting", "build_size_weighting", "smooth_l1"]
