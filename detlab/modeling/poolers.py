"""The RoI pooler of ``MODEL.ROI_BOX_HEAD``: which RoIAlign, and how it is computed.

``POOLER_TYPE`` says *what* is pooled:

* ``"ROIAlign"`` — torchvision's ``MultiScaleRoIAlign``: no half-pixel offset, level
  k = floor(4 + log2(sqrt(w·h) / 224) + 1e-6);
* ``"ROIAlignV2"`` — Detectron2's default: pixel centres at +0.5 (``aligned=True``), level
  k = floor(4 + log2(sqrt(w·h) / 224 + 1e-8)); boxes from checkpoints trained that way pool
  the same features.

Both clamp k to the levels given. ``POOLER_KERNEL`` says *how*: ``"auto"`` computes it on CPU as
one sparse bilinear-weight product (:mod:`detlab.modeling.roi_align`, same values up to float
rounding) and with torchvision's kernel elsewhere; ``"torchvision"`` always uses torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence

from detlab.modeling.roi_align import POOLER_KERNELS, ROIPooler
from detlab.utils.errors import UserError

__all__ = ["POOLER_KERNELS", "POOLER_TYPES", "build_roi_pooler"]

# POOLER_TYPE → (aligned, level rule)
_TYPES = {"ROIAlign": (False, "torchvision"), "ROIAlignV2": (True, "detectron2")}
POOLER_TYPES = tuple(_TYPES)


def build_roi_pooler(
    pooler_type: str,
    in_features: Sequence[str],
    strides: Sequence[int],
    output_size: int,
    sampling_ratio: int,
    kernel: str = "auto",
) -> ROIPooler:
    """The pooler of ``MODEL.ROI_BOX_HEAD.POOLER_TYPE`` / ``POOLER_KERNEL`` (module docstring)."""
    if pooler_type not in _TYPES:
        raise UserError(
            f"MODEL.ROI_BOX_HEAD.POOLER_TYPE is '{pooler_type}'; use {' or '.join(POOLER_TYPES)}."
        )
    if kernel not in POOLER_KERNELS:
        raise UserError(
            f"MODEL.ROI_BOX_HEAD.POOLER_KERNEL is '{kernel}'; use {' or '.join(POOLER_KERNELS)}."
        )
    aligned, rule = _TYPES[pooler_type]
    return ROIPooler(in_features, strides, output_size, sampling_ratio, aligned, rule, kernel)
