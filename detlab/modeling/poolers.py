"""RoI pooling over pyramid levels with half-pixel-aligned RoIAlign (Detectron2's ROIAlignV2).

``MODEL.ROI_BOX_HEAD.POOLER_TYPE "ROIAlign"`` pools with torchvision's ``MultiScaleRoIAlign``
(``aligned=False``). ``"ROIAlignV2"`` pools with :class:`LevelRoIAlign`: each RoI goes to the
level of the FPN paper's rule, k = floor(4 + log2(sqrt(w·h) / 224 + 1e-8)) clamped to the
levels given, and is pooled there by ``torchvision.ops.roi_align(..., aligned=True)`` (pixel
centres at +0.5, as Detectron2's default pooler), so boxes from checkpoints trained that way
pool the same features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, roi_align

__all__ = ["POOLER_TYPES", "LevelRoIAlign", "build_roi_pooler"]

POOLER_TYPES = ("ROIAlign", "ROIAlignV2")


class LevelRoIAlign(nn.Module):
    """Aligned RoIAlign of each box on its pyramid level.

    Args:
        in_features: names of the levels, finest first (keys of the feature dict).
        strides: their strides (power of two, ascending).
        output_size: cells per side of each pooled RoI.
        sampling_ratio: samples per cell side (0 = adaptive).

    ``forward(features, boxes, image_shapes=None)`` takes the ``{name: B×C×H×W}`` dict and one
    K_i×4 XYXY tensor (input pixels) per image; returns (ΣK_i)×C×R×R in the boxes' order.
    """

    def __init__(
        self,
        in_features: Sequence[str],
        strides: Sequence[int],
        output_size: int,
        sampling_ratio: int = 0,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        self.strides = [int(s) for s in strides]
        self.output_size = int(output_size)
        self.sampling_ratio = int(sampling_ratio)
        self.min_level = int(math.log2(self.strides[0]))
        self.max_level = int(math.log2(self.strides[-1]))

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: object = None,
    ) -> torch.Tensor:
        del image_shapes  # levels have fixed strides
        index = torch.cat(
            [torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)]
        )  # (ΣK)×1 image index
        all_boxes = torch.cat(boxes)
        rois = torch.cat([index, all_boxes], 1)
        size = ((all_boxes[:, 2] - all_boxes[:, 0]) * (all_boxes[:, 3] - all_boxes[:, 1])).sqrt()
        level = torch.floor(4 + torch.log2(size / 224 + 1e-8))
        level = level.clamp(self.min_level, self.max_level).to(torch.int64) - self.min_level
        first = features[self.in_features[0]]
        r = self.output_size
        out = first.new_zeros((rois.shape[0], first.shape[1], r, r))
        for i, (name, stride) in enumerate(zip(self.in_features, self.strides, strict=True)):
            idx = torch.where(level == i)[0]
            pooled = roi_align(
                features[name], rois[idx], (r, r), 1.0 / stride, self.sampling_ratio, True
            )
            out = out.index_put((idx,), pooled.to(out.dtype))
        return out


def build_roi_pooler(
    pooler_type: str,
    in_features: Sequence[str],
    strides: Sequence[int],
    output_size: int,
    sampling_ratio: int,
) -> nn.Module:
    """The pooler of ``MODEL.ROI_BOX_HEAD.POOLER_TYPE`` (see the module docstring)."""
    from detlab.utils.errors import UserError

    if pooler_type == "ROIAlign":
        return MultiScaleRoIAlign(list(in_features), output_size, sampling_ratio)
    if pooler_type == "ROIAlignV2":
        return LevelRoIAlign(in_features, strides, output_size, sampling_ratio)
    raise UserError(
        f"MODEL.ROI_BOX_HEAD.POOLER_TYPE is '{pooler_type}'; use {' or '.join(POOLER_TYPES)}."
    )
