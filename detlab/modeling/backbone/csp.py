"""CSP-Darknet backbones (the YOLOv8 layout) with depth and width multipliers.

Stem: a 3×3 stride-2 ConvBNAct. Stage k (1..4): a 3×3 stride-2 ConvBNAct then a :class:`C2f`
with residual bottlenecks; stage 4 ends in an :class:`SPPF`. Base widths
``(64, 128, 256, 512, 1024)`` (stem, stages 1..4) are multiplied by ``width_mult``, capped at
``max_channels`` (before the multiplier) and rounded up to a multiple of 8; base block counts
``(3, 6, 6, 3)`` are multiplied by ``depth_mult`` (at least 1). Maps are named by stride, as
the backbone contract asks: stage k (stride ``2**(k+1)``) is ``res{k+1}``, so res2..res5 =
strides 4..32.

Named scales (:data:`CSP_SCALES`, the YOLOv8 n/s/m/l multipliers): ``n`` (0.33, 0.25, 1024),
``s`` (0.33, 0.50, 1024), ``m`` (0.67, 0.75, 768), ``l`` (1.0, 1.0, 512).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detlab.modeling.backbone.build import BACKBONE_REGISTRY
from detlab.modeling.backbone.resnet import convert_frozen_batchnorm
from detlab.modeling.contracts import level_name
from detlab.modeling.csp_blocks import SPPF, C2f, ConvBNAct, make_divisible, scaled_depth
from detlab.structures import ShapeSpec
from detlab.utils.errors import UserError

__all__ = ["CSP_SCALES", "CSPDarknet"]

# scale: (depth multiplier, width multiplier, max channels)
CSP_SCALES: dict[str, tuple[float, float, int]] = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
}
BASE_WIDTHS = (64, 128, 256, 512, 1024)
BASE_DEPTHS = (3, 6, 6, 3)


def csp_widths(width_mult: float, max_channels: int) -> list[int]:
    """Stem and stage widths after the multiplier (multiples of 8)."""
    return [make_divisible(min(c, max_channels) * width_mult) for c in BASE_WIDTHS]


@BACKBONE_REGISTRY.register()
class CSPDarknet(nn.Module):
    """CSP-Darknet feature extractor returning ``res2``..``res5`` (strides 4, 8, 16, 32).

    Args:
        in_channels: input image channels (1 for SAR, 3 for RGB).
        depth_mult: multiplies the C2f block counts (3, 6, 6, 3).
        width_mult: multiplies the widths (64, 128, 256, 512, 1024).
        max_channels: cap on a base width before ``width_mult``.
        stage_depths: base block counts of stages 1..4 (before ``depth_mult``).
        freeze_at: 0 trains everything; k >= 1 freezes the stem and stages 1..k-1 (no
            gradient, BatchNorms frozen), as for the ResNets.

    Norm layers are BatchNorm with the YOLO family's settings (eps 1e-3, momentum 0.03);
    ``MODEL.BACKBONE.NORM`` is the ResNets' choice.
    """

    def __init__(
        self,
        in_channels: int = 3,
        depth_mult: float = 0.33,
        width_mult: float = 0.25,
        max_channels: int = 1024,
        stage_depths: Sequence[int] = BASE_DEPTHS,
        freeze_at: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise UserError(f"MODEL.BACKBONE.IN_CHANNELS is {in_channels}; use 1 or 3.")
        if depth_mult <= 0 or width_mult <= 0:
            raise UserError(
                f"MODEL.CSP.DEPTH_MULT ({depth_mult}) and WIDTH_MULT ({width_mult}) must be > 0."
            )
        depths = [int(d) for d in stage_depths]
        if len(depths) != 4 or min(depths) < 1:
            raise UserError(
                f"MODEL.CSP.STAGE_DEPTHS is {tuple(stage_depths)}; give four block counts >= 1."
            )
        widths = csp_widths(width_mult, max_channels)
        self.in_channels = in_channels
        self.stem = ConvBNAct(in_channels, widths[0], 3, 2)
        for k in range(4):
            blocks: list[nn.Module] = [
                ConvBNAct(widths[k], widths[k + 1], 3, 2),
                C2f(widths[k + 1], widths[k + 1], scaled_depth(depths[k], depth_mult), True),
            ]
            if k == 3:
                blocks.append(SPPF(widths[4], widths[4], 5))
            setattr(self, f"stage{k + 1}", nn.Sequential(*blocks))
        self._out_channels = widths[1:]
        self._strides = [2 ** (k + 2) for k in range(4)]  # stem and every stage halve the size
        if not 0 <= freeze_at <= 5:
            raise UserError(f"MODEL.BACKBONE.FREEZE_AT is {freeze_at}; use 0..5.")
        for name in ["stem", "stage1", "stage2", "stage3", "stage4"][:freeze_at]:
            module = convert_frozen_batchnorm(getattr(self, name))
            setattr(self, name, module)
            for p in module.parameters():
                p.requires_grad_(False)

    @classmethod
    def from_scale(cls, scale: str, in_channels: int = 3) -> CSPDarknet:
        """The named scale ``"n" | "s" | "m" | "l"`` (see :data:`CSP_SCALES`)."""
        if scale not in CSP_SCALES:
            raise UserError(f"CSP scale '{scale}' is unknown; use one of {sorted(CSP_SCALES)}.")
        d, w, mc = CSP_SCALES[scale]
        return cls(in_channels, d, w, mc)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.CSP
        return {
            "in_channels": cfg.MODEL.BACKBONE.IN_CHANNELS,
            "depth_mult": float(c.DEPTH_MULT),
            "width_mult": float(c.WIDTH_MULT),
            "max_channels": int(c.MAX_CHANNELS),
            "stage_depths": tuple(c.STAGE_DEPTHS),
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
        }

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{"res2": ShapeSpec(C2, 4), ..., "res5": ShapeSpec(C5, 32)}``."""
        return {
            level_name("res", s): ShapeSpec(c, s)
            for s, c in zip(self._strides, self._out_channels, strict=True)
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: B×C×H×W normalised image → stage outputs keyed ``res2``..``res5``."""
        x = self.stem(x)
        out = {}
        for k, s in enumerate(self._strides):
            x = getattr(self, f"stage{k + 1}")(x)
            out[level_name("res", s)] = x
        return out
