"""Solver: optimizer with per-kind weight decay, warmup + multistep/cosine LR, gradient clipping."""

from detlab.solver.build import build_optimizer, get_param_groups
from detlab.solver.clip import (
    CLIP_TYPES,
    GradientClipper,
    build_gradient_clipper,
    clip_gradients,
    global_grad_norm,
)
from detlab.solver.lr_scheduler import WarmupLRScheduler, build_lr_scheduler, lr_factor

__all__ = [
    "CLIP_TYPES",
    "GradientClipper",
    "WarmupLRScheduler",
    "build_gradient_clipper",
    "build_lr_scheduler",
    "build_optimizer",
    "clip_gradients",
    "get_param_groups",
    "global_grad_norm",
    "lr_factor",
]
