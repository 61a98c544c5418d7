"""``PAN``: the YOLO-family path-aggregation neck, built from :class:`PAFPN`'s steps.

Same pass structure as :class:`~detlab.modeling.neck.fpn.PAFPN` (top-down, then bottom-up),
with the YOLOv8 choices for each step: levels are *concatenated* (not summed) and fused by a
:class:`~detlab.modeling.csp_blocks.C2f` block (plain bottlenecks), the top-down pass hands the
fused map on, the bottom-up path downsamples with a 3×3 stride-2 ConvBNAct, and there are no
extra output convolutions. Works over 3 or 4 backbone stages (``in_stages`` as for the FPN),
reading exactly the maps and strides the backbone's ``output_shape()`` declares.

Channels: with ``out_channels`` 0 each level keeps its backbone stage's width (YOLOv8: e.g.
64/128/256 for the n scale), so the outputs differ in width; with ``out_channels`` > 0 a 1×1
ConvBNAct brings every stage to that width first (YOLOX-style uniform levels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detlab.modeling.csp_blocks import C2f, ConvBNAct
from detlab.modeling.neck.build import NECK_REGISTRY
from detlab.modeling.neck.fpn import PAFPN
from detlab.structures import ShapeSpec

__all__ = ["PAN"]


@NECK_REGISTRY.register()
class PAN(PAFPN):
    """YOLO path-aggregation network; see the module docstring.

    Args:
        in_channels: channels of each backbone stage in ``in_stages`` order.
        in_stages: backbone stages (1..4) to read, ascending: ``(2, 3, 4)`` or ``(1, 2, 3, 4)``.
        out_channels: 0 = per-level backbone widths; > 0 = this width on every level.
        top_block: ``"none"`` (usual), or extra coarser levels as for the FPN.
        num_blocks: bottlenecks in each fusing C2f block.
        in_strides: strides the backbone declares for those stages (its ``output_shape()``),
            in ``in_stages`` order; None = the strides the stages stand for. A stride other
            than ``2**(k+1)`` for stage k is refused in one sentence, as by the FPN.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_stages: Sequence[int] = (2, 3, 4),
        out_channels: int = 0,
        top_block: str = "none",
        num_blocks: int = 1,
        in_strides: Sequence[int] | None = None,
    ) -> None:
        self.num_blocks = max(1, int(num_blocks))
        super().__init__(in_channels, in_stages, out_channels, top_block, "BN", in_strides)
        w = self.level_channels
        self.td = nn.ModuleList(
            C2f(w[i + 1] + w[i], w[i], self.num_blocks) for i in range(len(w) - 1)
        )

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        args = super().from_config(cfg, input_shape)
        args.pop("norm")
        args["out_channels"] = cfg.MODEL.PAN.OUT_CHANNELS
        args["num_blocks"] = cfg.MODEL.PAN.NUM_BLOCKS
        return args

    def level_widths(self, in_channels: list[int], out_channels: int) -> list[int]:
        return list(in_channels) if out_channels <= 0 else [out_channels] * len(in_channels)

    def make_lateral(self, cin: int, cout: int, norm: str) -> nn.Module:
        return nn.Identity() if cin == cout else ConvBNAct(cin, cout, 1)

    def make_output(self, channels: int, norm: str) -> nn.Module:
        return nn.Identity()

    def make_top(self, cin: int, cout: int) -> nn.Module:
        return ConvBNAct(cin, cout, 3, 2)

    def make_down(self, channels: int, norm: str) -> nn.Module:
        return ConvBNAct(channels, channels, 3, 2)

    def make_fuse(self, moving: int, channels: int, norm: str) -> nn.Module:
        return C2f(moving + channels, channels, self.num_blocks)

    def merge(self, moving: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        return torch.cat([moving, lateral], dim=1)

    def fuse_top_down(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.td[i](x)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return x  # ConvBNAct and C2f end in SiLU already
