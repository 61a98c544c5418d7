"""Convolutional recurrent cells: ``ConvLSTM`` (Shi et al. 2015) and ``ConvGRU``.

Both keep the input's channel count as their hidden size and use one ``k×k`` convolution
over the concatenated input and hidden state for all gates, with "same" padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detlab.modeling.temporal.build import TEMPORAL_REGISTRY
from detlab.utils.errors import UserError

__all__ = ["ConvGRU", "ConvLSTM"]


def _check(channels: int, kernel_size: int) -> None:
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UserError(f"MODEL.TEMPORAL.KERNEL_SIZE must be odd and >= 1, got {kernel_size}.")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")


@TEMPORAL_REGISTRY.register()
class ConvLSTM(nn.Module):
    """``i, f, o, g = conv([x, h])``; ``c' = σ(f)·c + σ(i)·tanh(g)``; ``h' = σ(o)·tanh(c')``.

    State ``(h, c)``; the output is ``h'``. The forget-gate bias starts at 1.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check(channels, kernel_size)
        self.channels = channels
        self.gates = nn.Conv2d(2 * channels, 4 * channels, kernel_size, padding=kernel_size // 2)
        with torch.no_grad():
            self.gates.bias.zero_()
            self.gates.bias[channels : 2 * channels].fill_(1.0)

    @classmethod
    def from_config(cls, cfg: Any, channels: int) -> dict[str, Any]:
        return {"channels": channels, "kernel_size": int(cfg.MODEL.TEMPORAL.KERNEL_SIZE)}

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        if state is None:
            h = c = torch.zeros_like(x)
        else:
            h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


@TEMPORAL_REGISTRY.register()
class ConvGRU(nn.Module):
    """``z, r = σ(conv([x, h]))``; ``n = tanh(conv([x, r·h]))``; ``h' = (1 - z)·n + z·h``."""

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        _check(channels, kernel_size)
        self.channels = channels
        pad = kernel_size // 2
        self.gates = nn.Conv2d(2 * channels, 2 * channels, kernel_size, padding=pad)
        self.candidate = nn.Conv2d(2 * channels, channels, kernel_size, padding=pad)

    @classmethod
    def from_config(cls, cfg: Any, channels: int) -> dict[str, Any]:
        return {"channels": channels, "kernel_size": int(cfg.MODEL.TEMPORAL.KERNEL_SIZE)}

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        h = torch.zeros_like(x) if state is None else state[0]
        z, r = torch.sigmoid(self.gates(torch.cat([x, h], 1))).chunk(2, 1)
        n = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        h = (1 - z) * n + z * h
        return h, (h,)
