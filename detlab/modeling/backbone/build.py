"""``BACKBONE_REGISTRY`` and :func:`build_backbone`."""

from __future__ import annotations

from typing import Any

from torch import nn

from detlab.modeling.contracts import check_backbone
from detlab.utils.registry import Registry

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry(
    "BACKBONE",
    doc="""Feature extractors, selected by ``MODEL.BACKBONE.NAME``.

Contract (checked when built; a mismatch is one :class:`~detlab.utils.errors.ContractError`
sentence naming the backbone):

* registered: an ``nn.Module`` class whose ``from_config(cfg) -> dict`` returns its
  constructor's keyword arguments, or a builder function ``fn(cfg) -> nn.Module``;
* ``in_channels: int``, the image channels it takes;
* ``output_shape() -> dict[str, ShapeSpec]``, finest first, each map named by its stride:
  ``res{k}`` has stride ``2**k`` (``res2`` = stride 4 ... ``res5`` = stride 32), whatever the
  network's stage numbering;
* ``forward(x: Tensor[B, C, H, W]) -> dict[str, Tensor]`` returns exactly those names, map
  ``res{k}`` of shape ``B × channels × ceil(H / 2**k) × ceil(W / 2**k)`` for ``H, W``
  multiples of the largest stride.

A module placed between backbone and neck (e.g. a recurrent temporal memory) keeps this
contract, so necks need not know it is there.
""",
    check=check_backbone,
)


def build_backbone(cfg: Any) -> nn.Module:
    """Build and check the backbone named by ``cfg.MODEL.BACKBONE.NAME``."""
    return BACKBONE_REGISTRY.build(cfg.MODEL.BACKBONE.NAME, cfg)
