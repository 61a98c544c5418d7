"""Losses: size-aware weights (``SIZE_WEIGHT_REGISTRY``)."""

from detlab.modeling.losses.size_weights import (
    SIZE_WEIGHT_REGISTRY,
    SizeWeighting,
    build_size_weighting,
)

__all__ = ["SIZE_WEIGHT_REGISTRY", "SizeWeighting", "build_size_weighting"]
