"""Feature pyramids over backbone stages: ``FPN`` (top-down) and ``PAFPN`` (+ bottom-up).

Both take ``in_stages`` (backbone stages 1..4 = maps ``res2``..``res5`` = strides 4/8/16/32):
``(2, 3, 4)`` is the 3-scale pyramid P3–P5, ``(1, 2, 3, 4)`` the 4-scale P2–P5. The strides of
those maps come from the backbone's ``output_shape()`` (``in_strides``); a backbone whose
declared strides differ from the ones a stage stands for is refused in one sentence, so a
neck never reads a map at the wrong stride. A top block adds P6 (``"P6"``,
a stride-2 3×3 conv on the top output; ``"P6pool"``, a parameter-free stride-2 subsampling
as Faster R-CNN FPNs use) or P6 and P7 (``"P6P7"``, P7 from ReLU(P6); ``"P6P7C5"``, the same
with P6 computed from the coarsest backbone stage read, C5, as RetinaNet does). Output levels
are keyed ``p{log2(stride)}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from detlab.modeling.contracts import level_name
from detlab.modeling.layers import c2_xavier_fill, get_norm
from detlab.modeling.neck.build import NECK_REGISTRY
from detlab.structures import ShapeSpec
from detlab.utils.errors import UserError

__all__ = ["FPN", "PAFPN"]

TOP_BLOCKS = {"none": 0, "": 0, "P6": 1, "P6P7": 2, "P6P7C5": 2, "P6pool": 1}


def _conv(cin: int, cout: int, k: int, stride: int, norm: str) -> nn.Module:
    norm_layer = get_norm(norm)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=norm_layer is None)
    c2_xavier_fill(conv)
    return conv if norm_layer is None else nn.Sequential(conv, norm_layer(cout))


class FPN(nn.Module):
    """Top-down feature pyramid (Lin et al. 2017) over chosen backbone stages.

    Args:
        in_channels: channels of each backbone stage in ``in_stages`` order.
        in_stages: backbone stages (1..4) to read, ascending, e.g. ``(2, 3, 4)``.
        out_channels: channels of every output level.
        top_block: ``"none" | "P6" | "P6P7" | "P6P7C5" | "P6pool"``: extra coarser levels.
        norm: norm after each conv (``""`` for none, ``"GN"``, ``"BN"``).
        in_strides: strides of the backbone maps it is given (from the backbone's
            ``output_shape()``), in ``in_stages`` order; None = the strides the stages stand
            for (stage k → ``2**(k+1)``). Any other value is refused.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_stages: Sequence[int] = (2, 3, 4),
        out_channels: int = 256,
        top_block: str = "P6P7",
        norm: str = "",
        in_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        stages = [int(s) for s in in_stages]
        if not stages or stages != sorted(set(stages)) or not set(stages) <= {1, 2, 3, 4}:
            raise UserError(
                f"MODEL.FPN.IN_STAGES is {tuple(in_stages)}; give ascending stages from 1..4, "
                "e.g. (2, 3, 4) or (1, 2, 3, 4)."
            )
        if top_block not in TOP_BLOCKS:
            raise UserError(
                f"MODEL.FPN.TOP_BLOCK is '{top_block}'; use none, P6, P6P7, P6P7C5 or P6pool."
            )
        if len(in_channels) != len(stages):
            raise ValueError("in_channels and in_stages must have the same length")
        expected = [2 ** (s + 1) for s in stages]
        given = expected if in_strides is None else [int(s) for s in in_strides]
        if given != expected:
            raise UserError(
                f"{type(self).__name__} reads backbone stages {tuple(stages)} "
                f"({', '.join(f'res{s + 1}' for s in stages)}) expecting strides {expected}, but "
                f"the backbone declares strides {given} for them; fix the backbone's "
                "output_shape() names (res{k} must have stride 2**k)."
            )
        self.in_stages = tuple(stages)
        self.in_features = [f"res{s + 1}" for s in stages]
        self.out_channels = out_channels
        widths = self.level_widths(list(in_channels), out_channels)
        self.level_channels = widths
        self.lateral = nn.ModuleList(
            self.make_lateral(c, w, norm) for c, w in zip(in_channels, widths, strict=True)
        )
        self.output = nn.ModuleList(self.make_output(w, norm) for w in widths)
        self.num_top = TOP_BLOCKS[top_block]
        self.top_pool = top_block == "P6pool"
        self.top_from_backbone = top_block == "P6P7C5"
        top_in = [in_channels[-1] if self.top_from_backbone else widths[-1], widths[-1]]
        self.top = nn.ModuleList(
            self.make_top(top_in[i], widths[-1])
            for i in range(0 if self.top_pool else self.num_top)
        )
        strides = list(given)
        strides += [strides[-1] * 2 ** (i + 1) for i in range(self.num_top)]
        self._strides = strides

    # Steps a subclass may replace (PAN: concatenation and CSP blocks instead of sums and convs).
    def level_widths(self, in_channels: list[int], out_channels: int) -> list[int]:
        """Channels of each output level (``out_channels`` on every level)."""
        return [out_channels] * len(in_channels)

    def make_lateral(self, cin: int, cout: int, norm: str) -> nn.Module:
        return _conv(cin, cout, 1, 1, norm)

    def make_output(self, channels: int, norm: str) -> nn.Module:
        return _conv(channels, channels, 3, 1, norm)

    def make_top(self, cin: int, cout: int) -> nn.Module:
        return _conv(cin, cout, 3, 2, "")

    def merge(self, moving: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
        """Combine a resampled coarser (or finer) level with this level's lateral: a sum."""
        return lateral + moving

    def fuse_top_down(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """What the merged top-down level passes on (FPN: the sum itself)."""
        return x

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        stages = tuple(cfg.MODEL.FPN.IN_STAGES)
        missing = [f"res{s + 1}" for s in stages if f"res{s + 1}" not in input_shape]
        if missing:
            raise UserError(
                f"MODEL.FPN.IN_STAGES {stages} asks for {missing}, which the backbone does not "
                f"output (it has {sorted(input_shape)}); choose stages it has."
            )
        names = [f"res{s + 1}" for s in stages]
        return {
            "in_channels": [input_shape[n].channels for n in names],
            "in_strides": [input_shape[n].stride for n in names],
            "in_stages": stages,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "top_block": cfg.MODEL.FPN.TOP_BLOCK,
            "norm": cfg.MODEL.FPN.NORM,
        }

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{"p3": ShapeSpec(C, 8), ...}`` for every output level, finest first."""
        widths = self.level_channels + [self.level_channels[-1]] * self.num_top
        return {
            level_name("p", s): ShapeSpec(c, s) for s, c in zip(self._strides, widths, strict=True)
        }

    def _top_down(self, features: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        xs = [features[name] for name in self.in_features]
        prev = self.lateral[-1](xs[-1])
        outs = [self.output[-1](prev)]
        for i in range(len(xs) - 2, -1, -1):
            lat = self.lateral[i](xs[i])
            up = F.interpolate(prev, size=lat.shape[-2:], mode="nearest")
            prev = self.fuse_top_down(i, self.merge(up, lat))
            outs.insert(0, self.output[i](prev))
        return outs

    def _add_top(
        self, outs: list[torch.Tensor], features: dict[str, torch.Tensor]
    ) -> list[torch.Tensor]:
        x = features[self.in_features[-1]] if self.top_from_backbone else outs[-1]
        if self.top_pool:
            outs.append(F.max_pool2d(x, kernel_size=1, stride=2))
        for i, conv in enumerate(self.top):
            x = conv(F.relu(x) if i > 0 else x)
            outs.append(x)
        return outs

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Backbone stage dict → ``{"p3": B×C×H/8×W/8, ...}`` (finest first)."""
        outs = self._add_top(self._top_down(features), features)
        return dict(zip(self.output_shape(), outs, strict=True))


class PAFPN(FPN):
    """FPN plus a bottom-up path aggregation (PANet, as YOLOX-style detectors use).

    After the top-down pass, N_lo = P_lo and N_{i+1} = conv3×3(P_{i+1} + conv3×3_s2(N_i)).
    Same arguments and outputs as :class:`FPN`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        in_stages: Sequence[int] = (2, 3, 4),
        out_channels: int = 256,
        top_block: str = "P6P7",
        norm: str = "",
        in_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__(in_channels, in_stages, out_channels, top_block, norm, in_strides)
        w = self.level_channels
        self.down = nn.ModuleList(self.make_down(w[i - 1], norm) for i in range(1, len(w)))
        self.fuse = nn.ModuleList(self.make_fuse(w[i - 1], w[i], norm) for i in range(1, len(w)))

    def make_down(self, channels: int, norm: str) -> nn.Module:
        return _conv(channels, channels, 3, 2, norm)

    def make_fuse(self, moving: int, channels: int, norm: str) -> nn.Module:
        return _conv(channels, channels, 3, 1, norm)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ps = self._top_down(features)
        outs = [ps[0]]
        for i in range(1, len(ps)):
            down = self.act(self.down[i - 1](outs[-1]))
            if down.shape[-2:] != ps[i].shape[-2:]:
                down = F.interpolate(down, size=ps[i].shape[-2:], mode="nearest")
            outs.append(self.act(self.fuse[i - 1](self.merge(down, ps[i]))))
        outs = self._add_top(outs, features)
        return dict(zip(self.output_shape(), outs, strict=True))


NECK_REGISTRY.register(FPN)
NECK_REGISTRY.register(PAFPN)
