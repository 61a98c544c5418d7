"""``MAPPER_REGISTRY``: dataset dict → model input."""

from __future__ import annotations

from detlab.utils.registry import Registry

__all__ = ["MAPPER_REGISTRY"]

MAPPER_REGISTRY = Registry(
    "MAPPER",
    doc="""Dataset mappers, selected by ``DATALOADER.MAPPER``.

A registered class is callable on one dataset dict (``file_name``, ``height``, ``width``,
``image_id``, ``annotations`` with XYWH ``bbox`` and contiguous ``category_id``) and returns
``image`` (float32 C×H×W tensor, 0..255 scale), ``instances`` (``boxes`` N×4 XYXY float in the
augmented image's pixels, ``classes`` N int64), ``height``, ``width`` and ``image_id`` of the
original image — or ``None`` for an image that cannot be read (the loader skips and counts it).
It has ``from_config(cfg, is_train: bool) -> dict`` of plain constructor arguments.
""",
)
