"""The YOLO-family one-stage detector: CSP backbone → PAN neck → YOLO head.

Same input/output handling as :class:`~detlab.modeling.meta_arch.fcos.FCOS` (the one-stage
detector base); only the configuration node differs: the head is ``MODEL.YOLO.HEAD_NAME``
over the neck levels ``MODEL.YOLO.IN_FEATURES``.
"""

from __future__ import annotations

from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY
from detlab.modeling.meta_arch.fcos import FCOS

__all__ = ["YOLO"]


@META_ARCH_REGISTRY.register()
class YOLO(FCOS):
    """YOLO detector (``MODEL.META_ARCHITECTURE: YOLO``); see :class:`FCOS` for the arguments."""

    head_config = "YOLO"
