"""Anchor boxes per pyramid level (Detectron2's ``MODEL.ANCHOR_GENERATOR`` semantics)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detlab.utils.errors import UserError

__all__ = ["AnchorGenerator"]


class AnchorGenerator(nn.Module):
    """XYXY anchors centred on every feature cell of every level.

    Args:
        sizes: per level, anchor sizes (sqrt of area, input pixels); one list is broadcast to
            every level.
        aspect_ratios: per level, height/width ratios; one list is broadcast.
        strides: stride of each level.
        offset: anchor centre offset in strides (0.0: cell corner, 0.5: cell centre).

    ``forward(shapes)`` returns per level a Tensor[H·W·A, 4] ordered (y, x, anchor).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[int],
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(strides)
        sizes, aspect_ratios = [list(s) for s in sizes], [list(a) for a in aspect_ratios]
        if len(sizes) == 1:
            sizes = sizes * n
        if len(aspect_ratios) == 1:
            aspect_ratios = aspect_ratios * n
        if len(sizes) != n or len(aspect_ratios) != n:
            raise UserError(
                f"MODEL.ANCHOR_GENERATOR has {len(sizes)} SIZES and {len(aspect_ratios)} "
                f"ASPECT_RATIOS lists for {n} RPN levels; give one list per level or one in all."
            )
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        cells = [self._cell(s, a) for s, a in zip(sizes, aspect_ratios, strict=True)]
        if len({len(c) for c in cells}) != 1:
            raise UserError("Every level needs the same number of anchors (sizes × ratios).")
        self.num_anchors = len(cells[0])
        for i, c in enumerate(cells):
            self.register_buffer(f"cell{i}", c, persistent=False)

    @staticmethod
    def _cell(sizes: list[float], ratios: list[float]) -> torch.Tensor:
        out = []
        for size in sizes:
            area = float(size) ** 2
            for r in ratios:
                w = math.sqrt(area / r)
                h = r * w
                out.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(out, dtype=torch.float32)

    @classmethod
    def from_config(cls, cfg: Any, strides: Sequence[int]) -> dict[str, Any]:
        sizes = [tuple(s) for s in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
        if not sizes:
            sizes = [(8.0 * s,) for s in strides]
        return {
            "sizes": sizes,
            "aspect_ratios": [tuple(a) for a in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS],
            "strides": strides,
            "offset": cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
        }

    def forward(self, shapes: Sequence[tuple[int, int]]) -> list[torch.Tensor]:
        out = []
        for i, ((h, w), s) in enumerate(zip(shapes, self.strides, strict=True)):
            cell = getattr(self, f"cell{i}")
            xs = (torch.arange(w, device=cell.device, dtype=torch.float32) + self.offset) * s
            ys = (torch.arange(h, device=cell.device, dtype=torch.float32) + self.offset) * s
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)
            out.append((shifts + cell[None]).reshape(-1, 4))
        return out
