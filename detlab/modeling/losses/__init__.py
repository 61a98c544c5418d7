"""Losses: size-aware weights (``SIZE_WEIGHT_REGISTRY``) and box regression coding."""

from detlab.modeling.losses.size_weights import SIZE_WEIGHT_REGISTRY, SizeWeighting

__all__ = ["SIZE_WEIGHT_REGISTRY", "SizeWeighting"]
