"""The YOLO-family one-stage detector: CSP backbone → PAN neck → YOLO head.

Input/output handling is :class:`~detlab.modeling.meta_arch.one_stage.OneStageDetector`'s;
only the configuration node differs: the dense head is ``MODEL.YOLO.HEAD_NAME`` over the neck
levels ``MODEL.YOLO.IN_FEATURES``.
"""

from __future__ import annotations

from typing import Any

from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY
from detlab.modeling.meta_arch.one_stage import OneStageDetector

__all__ = ["YOLO"]


@META_ARCH_REGISTRY.register()
class YOLO(OneStageDetector):
    """YOLO detector (``MODEL.META_ARCHITECTURE: YOLO``): the dense head
    ``MODEL.YOLO.HEAD_NAME`` on ``MODEL.YOLO.IN_FEATURES``.

    Arguments as :class:`OneStageDetector`.
    """

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.YOLO
        return cls.parts_from_config(cfg, c.HEAD_NAME, c.IN_FEATURES, "MODEL.YOLO.IN_FEATURES")
