"""Box regression losses shared by the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["smooth_l1"]


def smooth_l1(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise smooth-L1 loss with transition point ``beta`` (below 1e-5: plain L1),
    Detectron2's convention for ``SMOOTH_L1_BETA`` = 0."""
    if beta < 1e-5:
        return (x - y).abs()
    return F.smooth_l1_loss(x, y, beta=beta, reduction="none")
