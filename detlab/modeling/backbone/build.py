"""``BACKBONE_REGISTRY`` and :func:`build_backbone`."""

from __future__ import annotations

from typing import Any

from detlab.utils.registry import Registry

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry(
    "BACKBONE",
    doc="""Feature extractors, selected by ``MODEL.BACKBONE.NAME``.

A registered object is an ``nn.Module`` class with a ``from_config(cfg) -> dict`` classmethod
(plain constructor arguments) or a function ``fn(cfg) -> nn.Module``. The module's
``forward(x: Tensor[B, C, H, W]) -> dict[str, Tensor]`` returns stage outputs keyed
``"res2".."res5"`` (stages 1..4, strides 4/8/16/32), and ``output_shape()`` returns
``{name: ShapeSpec(channels, stride)}`` for each of them.
""",
)


def build_backbone(cfg: Any) -> Any:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME``."""
    obj = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)
    return obj(**obj.from_config(cfg)) if hasattr(obj, "from_config") else obj(cfg)
