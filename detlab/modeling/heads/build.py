"""``HEAD_REGISTRY``: detection heads (FCOS head, RPN, ROI heads)."""

from __future__ import annotations

from detlab.utils.registry import Registry

__all__ = ["HEAD_REGISTRY"]

HEAD_REGISTRY = Registry(
    "HEAD",
    doc="""Detection heads, selected by name from the meta-architecture's config keys.

A registered class takes plain arguments and has ``from_config(cfg, input_shape) -> dict``
where ``input_shape`` maps feature names to ShapeSpecs. In training it returns a dict of named
scalar losses; in inference, per-image predictions (boxes XYXY in the network input's pixels,
scores, classes) that the meta-architecture rescales to the original image.
""",
)
