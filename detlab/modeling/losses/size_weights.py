"""``SIZE_WEIGHT_REGISTRY``: per-target loss weights as a function of object area."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from detlab.utils.errors import ContractError, UserError
from detlab.utils.registry import Registry, instantiate

__all__ = [
    "SIZE_WEIGHT_REGISTRY",
    "SizeWeighting",
    "build_size_weighting",
    "exponential",
    "linear",
    "step",
]

SIZE_WEIGHT_REGISTRY = Registry(
    "SIZE_WEIGHT",
    doc="""Size-aware loss weight functions, selected by ``MODEL.SIZE_AWARE_LOSS.TYPE``.

A registered callable ``fn(area: Tensor[N], *, max_weight, small_area, medium_area) ->
Tensor[N]`` maps each positive target's box area (px², measured in the original image, the
same pixels the COCO size buckets use) to a weight >= 1 that multiplies that target's
classification and regression loss terms.
""",
)


@SIZE_WEIGHT_REGISTRY.register()
def exponential(
    area: Tensor, *, max_weight: float, small_area: float, medium_area: float
) -> Tensor:
    """w(a) = max(1, max_weight · exp(−a / small_area)); with 2.5 and 1024: w(16²) ≈ 1.95."""
    del medium_area
    return torch.clamp(max_weight * torch.exp(-area / small_area), min=1.0)


@SIZE_WEIGHT_REGISTRY.register()
def linear(area: Tensor, *, max_weight: float, small_area: float, medium_area: float) -> Tensor:
    """Falls linearly from ``max_weight`` at a = 0 to 1 at a = ``medium_area``, then stays 1."""
    del small_area
    frac = torch.clamp(1.0 - area / medium_area, min=0.0, max=1.0)
    return 1.0 + (max_weight - 1.0) * frac


@SIZE_WEIGHT_REGISTRY.register()
def step(area: Tensor, *, max_weight: float, small_area: float, medium_area: float) -> Tensor:
    """Three tiers: ``max_weight`` below ``small_area``, the midpoint (1+max)/2 below
    ``medium_area``, 1 above (the COCO small / medium / large buckets with the defaults)."""
    mid = (1.0 + max_weight) / 2.0
    w = torch.where(area < medium_area, torch.full_like(area, mid), torch.ones_like(area))
    return torch.where(area < small_area, torch.full_like(area, max_weight), w)


class SizeWeighting:
    """A configured size-aware weighting: ``weighting(area) -> Tensor[N]`` weights >= 1.

    Args:
        fn_name: name in ``SIZE_WEIGHT_REGISTRY``.
        max_weight, small_area, medium_area: passed to the function (areas in px² of the
            original image).
        normalize: ``"num_pos"`` divides weighted sums by the positive count (weights raise
            the loss of small objects); ``"weight_sum"`` divides by the sum of weights (they
            redistribute it).
    """

    def __init__(
        self,
        fn_name: str = "exponential",
        max_weight: float = 2.5,
        small_area: float = 1024.0,
        medium_area: float = 9216.0,
        normalize: str = "num_pos",
    ) -> None:
        if normalize not in ("num_pos", "weight_sum"):
            raise UserError(
                f"MODEL.SIZE_AWARE_LOSS.NORMALIZE is '{normalize}'; use num_pos or weight_sum."
            )
        self.fn = SIZE_WEIGHT_REGISTRY.get(fn_name)
        self.kwargs = {
            "max_weight": float(max_weight),
            "small_area": float(small_area),
            "medium_area": float(medium_area),
        }
        self.normalize = normalize
        probe = torch.tensor([0.0, float(small_area), float(medium_area), 1e6])
        w = self.fn(probe, **self.kwargs)
        if (
            not isinstance(w, Tensor)
            or w.shape != probe.shape
            or not bool(torch.isfinite(w).all())
            or bool((w < 1.0 - 1e-6).any())
        ):
            got = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ContractError(
                f"SIZE_WEIGHT '{fn_name}' breaks its contract: on areas {probe.tolist()} it "
                f"returned {w.tolist() if isinstance(w, Tensor) else got}, not one finite "
                "weight >= 1 per area."
            )

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.SIZE_AWARE_LOSS
        return {
            "fn_name": c.TYPE,
            "max_weight": c.MAX_WEIGHT,
            "small_area": c.SMALL_AREA,
            "medium_area": c.MEDIUM_AREA,
            "normalize": c.NORMALIZE,
        }

    def __call__(self, area: Tensor) -> Tensor:
        return self.fn(area.float(), **self.kwargs)

    def __repr__(self) -> str:
        return f"SizeWeighting({self.fn.__name__}, {self.kwargs}, normalize={self.normalize})"


def build_size_weighting(cfg: Any) -> SizeWeighting | None:
    """The configured weighting, or None when ``MODEL.SIZE_AWARE_LOSS.ENABLED`` is off."""
    return instantiate(SizeWeighting, cfg) if cfg.MODEL.SIZE_AWARE_LOSS.ENABLED else None
