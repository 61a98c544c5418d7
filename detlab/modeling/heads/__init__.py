"""Detection heads; importing this package registers them in their registries:
``DENSE_HEAD_REGISTRY`` (FCOS, RetinaNet, YOLO), ``PROPOSAL_GENERATOR_REGISTRY`` (RPN),
``ROI_HEADS_REGISTRY`` (StandardROIHeads)."""

from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.modeling.heads.build import (
    DENSE_HEAD_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_HEADS_REGISTRY,
    build_dense_head,
    build_proposal_generator,
    build_roi_heads,
)
from detlab.modeling.heads.fcos_head import FCOSHead
from detlab.modeling.heads.retinanet_head import RetinaNetHead
from detlab.modeling.heads.roi_heads import StandardROIHeads
from detlab.modeling.heads.rpn import RPN
from detlab.modeling.heads.yolo_head import YOLOHead

__all__ = [
    "DENSE_HEAD_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "RPN",
    "AnchorGenerator",
    "FCOSHead",
    "RetinaNetHead",
    "StandardROIHeads",
    "YOLOHead",
    "build_dense_head",
    "build_proposal_generator",
    "build_roi_heads",
]
