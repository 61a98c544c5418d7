"""Optimizer construction: parameter groups with per-kind weight decay, SGD or AdamW."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detlab.utils.errors import ConfigError

__all__ = ["build_optimizer", "get_param_groups", "NORM_MODULE_TYPES"]

NORM_MODULE_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def _is_norm(module: nn.Module) -> bool:
    # FrozenBatchNorm variants (torchvision's or detlab's) have no trainable parameters, but a
    # user may unfreeze them; match them by name so they never get decay either.
    return isinstance(module, NORM_MODULE_TYPES) or "norm" in type(module).__name__.lower()


def get_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float | None = None,
    weight_decay_bias: float | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into groups by weight decay.

    Parameters of normalisation layers get ``weight_decay_norm``; other biases get
    ``weight_decay_bias``; everything else ``weight_decay``. ``None`` means "same as
    ``weight_decay``". Each parameter appears once (shared parameters are deduplicated).
    """
    wd_norm = weight_decay if weight_decay_norm is None else weight_decay_norm
    wd_bias = weight_decay if weight_decay_bias is None else weight_decay_bias
    groups: dict[float, list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module in model.modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if norm:
                wd = wd_norm
            elif name == "bias" or param.ndim <= 1:
                wd = wd_bias
            else:
                wd = weight_decay
            groups.setdefault(float(wd), []).append(param)
    return [{"params": p, "lr": base_lr, "weight_decay": wd} for wd, p in groups.items()]


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """``SOLVER.OPTIMIZER`` ("SGD" with momentum/Nesterov, or "AdamW") over the model's groups."""
    s = cfg.SOLVER
    groups = get_param_groups(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=s.WEIGHT_DECAY_NORM,
        weight_decay_bias=s.WEIGHT_DECAY_BIAS,
    )
    if not groups:
        raise ConfigError("The model has no trainable parameters; check MODEL.BACKBONE.FREEZE_AT.")
    name = s.OPTIMIZER.lower()
    if name == "sgd":
        return torch.optim.SGD(
            groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV and s.MOMENTUM > 0
        )
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, betas=tuple(s.ADAMW_BETAS))
    raise ConfigError(f"SOLVER.OPTIMIZER must be 'SGD' or 'AdamW', got '{s.OPTIMIZER}'.")
