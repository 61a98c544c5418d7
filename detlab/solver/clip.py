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
from typing import Any

import torch

from detlab.utils.errors import ConfigError
from detlab.utils.registry import instantiate

__all__ = [
    "CLIP_TYPES",
    "GradientClipper",
    "build_gradient_clipper",
    "clip_gradients",
    "global_grad_norm",
]

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


class GradientClipper:
    """Clips gradients in place with one of :data:`CLIP_TYPES`; validated once when built.

    Args:
        clip_type: ``"value" | "norm" | "full_model"`` (see the module docstring).
        clip_value: the bound, > 0 (max element for ``value``, max norm otherwise).
        norm_type: p of the p-norm for ``norm`` and ``full_model`` (> 0; ``inf`` allowed).

    ``clipper(params, total_norm=None)`` returns how many parameters' gradients changed;
    ``total_norm`` is the already computed global norm (saves a pass for ``full_model``).
    """

    def __init__(self, clip_type: str, clip_value: float, norm_type: float = 2.0) -> None:
        if clip_type not in CLIP_TYPES:
            raise ConfigError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {', '.join(CLIP_TYPES)}, got "
                f"'{clip_type}'."
            )
        if not float(clip_value) > 0:
            raise ConfigError(
                f"SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be > 0, got {clip_value}; disable "
                "clipping with SOLVER.CLIP_GRADIENTS.ENABLED False instead."
            )
        if not float(norm_type) > 0:
            raise ConfigError(f"SOLVER.CLIP_GRADIENTS.NORM_TYPE must be > 0, got {norm_type}.")
        self.clip_type = clip_type
        self.clip_value = float(clip_value)
        self.norm_type = float(norm_type)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.SOLVER.CLIP_GRADIENTS
        return {"clip_type": c.CLIP_TYPE, "clip_value": c.CLIP_VALUE, "norm_type": c.NORM_TYPE}

    def __call__(
        self, params: Iterable[torch.nn.Parameter], total_norm: torch.Tensor | None = None
    ) -> int:
        return clip_gradients(params, self.clip_type, self.clip_value, self.norm_type, total_norm)

    def __repr__(self) -> str:
        return (
            f"GradientClipper({self.clip_type}, {self.clip_value:g}, norm_type={self.norm_type:g})"
        )


def build_gradient_clipper(cfg: Any) -> GradientClipper | None:
    """The clipper of ``SOLVER.CLIP_GRADIENTS``, or None when clipping is disabled."""
    return instantiate(GradientClipper, cfg) if cfg.SOLVER.CLIP_GRADIENTS.ENABLED else None
