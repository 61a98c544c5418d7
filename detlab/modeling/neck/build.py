"""``NECK_REGISTRY`` and :func:`build_neck`."""

from __future__ import annotations

from typing import Any

from detlab.utils.registry import Registry

__all__ = ["NECK_REGISTRY", "build_neck"]

NECK_REGISTRY = Registry(
    "NECK",
    doc="""Multi-scale feature necks (FPN variants), selected by ``MODEL.NECK.NAME``.

A registered class takes plain arguments (``in_channels``/``in_strides`` of the backbone
stages it reads, ``in_stages``, ``out_channels``, ...) and has ``from_config(cfg,
input_shape) -> dict``. ``forward(features: dict[str, Tensor]) -> dict[str, Tensor]`` returns
levels keyed ``"p2".."p7"`` (``pK`` has stride 2**K), and ``output_shape()`` their ShapeSpecs.
""",
)


def build_neck(cfg: Any, input_shape: dict) -> Any:
    """Build the neck named by ``cfg.MODEL.NECK.NAME`` over the backbone's ``input_shape``."""
    cls = NECK_REGISTRY.get(cfg.MODEL.NECK.NAME)
    return cls(**cls.from_config(cfg, input_shape))
