"""``SIZE_WEIGHT_REGISTRY``: per-target loss weights as a function of object area."""

from __future__ import annotations

from detlab.utils.registry import Registry

__all__ = ["SIZE_WEIGHT_REGISTRY"]

SIZE_WEIGHT_REGISTRY = Registry(
    "SIZE_WEIGHT",
    doc="""Size-aware loss weight functions, selected by ``MODEL.SIZE_AWARE_LOSS.TYPE``.

A registered callable ``fn(area: Tensor[N], *, max_weight, small_area, medium_area) ->
Tensor[N]`` maps each positive target's box area (px², measured in the original image, the
same pixels the COCO size buckets use) to a weight >= 1 that multiplies that target's
classification and regression loss terms.
""",
)
