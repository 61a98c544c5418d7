"""Gradient norm and clipping.

Three clip types, as in ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE``:

* ``value``: every gradient element is clamped to ``[-clip_value, clip_value]``.
* ``norm``: each parameter's gradient is rescaled so that its own ``norm_type`` norm is at most
  ``clip_value`` (Detectron2's per-parameter meaning).
* ``full_model``: all gradients are rescaled together so that their global norm is at most
  ``clip_value``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["CLIP_TYPES", "clip_gradients", "global_grad_norm"]

CLIP_TYPES = ("value", "norm", "full_model")


def _grads(params: Iterable[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


def global_grad_norm(params: Iterable[torch.nn.Parameter], norm_type: float = 2.0) -> torch.Tensor:
    """Norm of all gradients together (a 0-dim tensor; non-finite if any gradient is)."""
    grads = _grads(params)
    if not grads:
        return torch.zeros(())
    return torch.nn.utils.get_total_norm(grads, norm_type=norm_type)


@torch.no_grad()
def clip_gradients(
    params: Iterable[torch.nn.Parameter],
    clip_type: str,
    clip_value: float,
    norm_type: float = 2.0,
    total_norm: torch.Tensor | None = None,
) -> int:
    """Clip gradients in place; return how many parameters' gradients were changed."""
    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params]
    if not grads:
        return 0
    if clip_type == "value":
        changed = 0
        for g in grads:
            if bool((g.abs() > clip_value).any()):
                changed += 1
                g.clamp_(-clip_value, clip_value)
        return changed
    if clip_type == "norm":
        norms = torch._foreach_norm(grads, norm_type)
        changed = 0
        for g, n in zip(grads, norms, strict=True):
            if float(n) > clip_value:
                changed += 1
                g.mul_(clip_value / (float(n) + 1e-6))
        return changed
    if clip_type == "full_model":
        if total_norm is None:
            total_norm = torch.nn.utils.get_total_norm(grads, norm_type=norm_type)
        if float(total_norm) <= clip_value:
            return 0
        torch.nn.utils.clip_grads_with_norm_(params, clip_value, total_norm)
        return len(grads)
    raise ValueError(f"clip_type must be one of {CLIP_TYPES}, got {clip_type!r}")
