"""Small building blocks shared by backbones, necks and heads: norm layers, conv init."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detlab.utils.errors import UserError

__all__ = [
    "NORMS",
    "Scale",
    "c2_xavier_fill",
    "check_sync_batchnorm",
    "conv_tower",
    "get_norm",
    "group_count",
    "init_prediction_convs",
    "prior_bias",
]

NORMS = ("", "none", "BN", "FrozenBN", "GN", "SyncBN")


def group_count(channels: int, preferred: int = 32) -> int:
    """Largest group count <= ``preferred`` that divides ``channels`` (GroupNorm of thin nets)."""
    for g in range(min(preferred, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


def get_norm(norm: str) -> Callable[[int], nn.Module] | None:
    """Constructor ``f(channels) -> nn.Module`` for a norm name, or None for no norm.

    ``"BN"`` trains batch statistics, ``"SyncBN"`` is ``nn.SyncBatchNorm`` (batch statistics
    over all DDP processes, which needs CUDA; in one process it is BN), ``"FrozenBN"`` uses
    fixed statistics and affine parameters (torchvision's FrozenBatchNorm2d), ``"GN"`` is
    GroupNorm with up to 32 groups. BN and SyncBN have the same state-dict keys.
    """
    if norm in ("", "none", None):
        return None
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "SyncBN":
        return nn.SyncBatchNorm
    if norm == "FrozenBN":
        return FrozenBatchNorm2d
    if norm == "GN":
        return lambda c: nn.GroupNorm(group_count(c), c)
    raise UserError(
        f"Unknown norm '{norm}' in the model config; use one of BN, SyncBN, FrozenBN, GN, ''."
    )


def check_sync_batchnorm(model: nn.Module, device: torch.device) -> None:
    """Refuse SyncBN in a multi-process run off CUDA (PyTorch synchronises on GPUs only)."""
    if device.type != "cuda" and any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
        raise UserError(
            f"The model uses SyncBN, which synchronises batch statistics over GPUs only, but this "
            f"distributed run is on {device.type}; set the NORM keys to BN (or GN) instead."
        )


def conv_tower(channels: int, num_convs: int, norm: str, bias: bool | None = None) -> nn.Sequential:
    """``num_convs`` × (3×3 conv, norm, ReLU) at constant width, weights N(0, 0.01²), bias 0.

    The subnet of dense heads (FCOS towers, RetinaNet subnets): conv ``i`` sits at index
    ``i·2`` without a norm and ``i·3`` with one, as in Detectron2. ``bias`` None gives convs a
    bias only without a norm.
    """
    layers: list[nn.Module] = []
    norm_layer = get_norm(norm)
    for _ in range(num_convs):
        conv = nn.Conv2d(
            channels, channels, 3, padding=1, bias=norm_layer is None if bias is None else bias
        )
        nn.init.normal_(conv.weight, std=0.01)
        if conv.bias is not None:
            nn.init.zeros_(conv.bias)
        layers.append(conv)
        if norm_layer is not None:
            layers.append(norm_layer(channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def c2_xavier_fill(module: nn.Module) -> None:
    """Caffe2-style Xavier init (uniform, fan-in, a=1) with zero bias, used for FPN convs."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class Scale(nn.Module):
    """A learnable scalar multiplier (FCOS per-level regression scale)."""

    def __init__(self, init: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def init_prediction_convs(convs: Sequence[nn.Conv2d], prior_prob: float) -> None:
    """Dense-head output convs: weights N(0, 0.01²) in the given order, biases 0, and the first
    (the classification conv) biased to ``prior_prob`` (see :func:`prior_bias`)."""
    for conv in convs:
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.bias)
    nn.init.constant_(convs[0].bias, prior_bias(prior_prob))


def prior_bias(prior_prob: float) -> float:
    """Bias that makes a sigmoid output ``prior_prob`` at init (focal-loss stabiliser)."""
    return -math.log((1 - prior_prob) / prior_prob)
