"""Building blocks of CSP-style networks (YOLO family): conv-BN-SiLU, C2f, SPPF.

* :class:`ConvBNAct`: k×k conv (no bias) → BatchNorm → SiLU, "same" padding.
* :class:`Bottleneck`: two 3×3 ConvBNAct, residual when shapes allow and asked for.
* :class:`C2f`: cross-stage partial block with two convolutions (Wang et al. 2020, as in
  YOLOv8): a 1×1 conv splits into two halves; ``n`` bottlenecks run on the second half and
  every intermediate output is concatenated before a final 1×1 conv.
* :class:`SPPF`: spatial pyramid pooling, fast form: three chained 5×5 max-pools, concatenated.

Shared by the CSP backbone and the PAN neck.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["C2f", "Bottleneck", "ConvBNAct", "SPPF", "make_divisible", "scaled_depth"]

BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # the YOLO family's BatchNorm settings


def make_divisible(x: float, divisor: int = 8) -> int:
    """Smallest multiple of ``divisor`` that is >= ``x`` (channel counts of scaled models)."""
    return max(divisor, int(math.ceil(x / divisor) * divisor))


def scaled_depth(n: int, depth_mult: float) -> int:
    """Blocks in a stage after the depth multiplier: ``max(1, round(n · depth_mult))``."""
    return max(1, round(n * depth_mult)) if n > 1 else n


class ConvBNAct(nn.Sequential):
    """``Conv2d(k, stride, bias=False) → BatchNorm2d → SiLU`` (``act=False``: no activation)."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, act: bool = True) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


class Bottleneck(nn.Module):
    """Two 3×3 ConvBNAct with a residual connection when ``shortcut`` and cin == cout."""

    def __init__(self, cin: int, cout: int, shortcut: bool = True, expansion: float = 1.0):
        super().__init__()
        mid = int(cout * expansion)
        self.cv1 = ConvBNAct(cin, mid, 3)
        self.cv2 = ConvBNAct(mid, cout, 3)
        self.add = shortcut and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with ``n`` bottlenecks; B×cin×H×W → B×cout×H×W.

    Args:
        cin, cout: channels in and out.
        n: bottlenecks on the split half.
        shortcut: residual bottlenecks (backbone) or plain ones (neck).
        expansion: hidden width = ``cout · expansion``.
    """

    def __init__(
        self, cin: int, cout: int, n: int = 1, shortcut: bool = False, expansion: float = 0.5
    ) -> None:
        super().__init__()
        self.hidden = int(cout * expansion)
        self.cv1 = ConvBNAct(cin, 2 * self.hidden, 1)
        self.cv2 = ConvBNAct((2 + n) * self.hidden, cout, 1)
        self.m = nn.ModuleList(Bottleneck(self.hidden, self.hidden, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = list(self.cv1(x).split((self.hidden, self.hidden), dim=1))
        for block in self.m:
            ys.append(block(ys[-1]))
        return self.cv2(torch.cat(ys, dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): 1×1 reduce, three chained k×k max-pools, concat, 1×1."""

    def __init__(self, cin: int, cout: int, k: int = 5) -> None:
        super().__init__()
        hidden = cin // 2
        self.cv1 = ConvBNAct(cin, hidden, 1)
        self.cv2 = ConvBNAct(hidden * 4, cout, 1)
        self.pool = nn.MaxPool2d(k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [self.cv1(x)]
        for _ in range(3):
            ys.append(self.pool(ys[-1]))
        return self.cv2(torch.cat(ys, dim=1))
