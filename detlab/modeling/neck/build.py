"""``NECK_REGISTRY`` and :func:`build_neck`."""

from __future__ import annotations

from typing import Any

from torch import nn

from detlab.modeling.contracts import check_neck
from detlab.structures import ShapeSpec
from detlab.utils.registry import Registry

__all__ = ["NECK_REGISTRY", "build_neck"]

NECK_REGISTRY = Registry(
    "NECK",
    doc="""Multi-scale feature necks (FPN variants), selected by ``MODEL.NECK.NAME``.

Contract (checked when built; a mismatch is one ContractError sentence naming the neck):

* registered: an ``nn.Module`` class with ``from_config(cfg, input_shape) -> dict`` of
  constructor arguments, where ``input_shape`` is the backbone's ``output_shape()``;
* it consumes exactly the names and strides the backbone declares: ``in_features`` lists the
  backbone maps it reads, and it is given their ShapeSpecs (channels and strides) rather than
  deriving strides itself; given strides other than the ones it expects, it fails in one
  sentence;
* ``output_shape() -> dict[str, ShapeSpec]``: levels ``p{k}`` of stride ``2**k``, finest first;
* ``forward(features: dict[str, Tensor]) -> dict[str, Tensor]`` returns exactly those levels,
  ``p{k}`` of shape ``B × channels × ceil(H / 2**k) × ceil(W / 2**k)``.
""",
    check=check_neck,
)


def build_neck(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build and check the neck named by ``cfg.MODEL.NECK.NAME`` over the backbone's
    ``input_shape``."""
    return NECK_REGISTRY.build(cfg.MODEL.NECK.NAME, cfg, input_shape)
