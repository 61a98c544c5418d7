"""Detection heads; importing this package registers them in ``HEAD_REGISTRY``."""

from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.modeling.heads.build import HEAD_REGISTRY
from detlab.modeling.heads.fcos_head import FCOSHead
from detlab.modeling.heads.roi_heads import StandardROIHeads
from detlab.modeling.heads.rpn import RPN
from detlab.modeling.heads.yolo_head import YOLOHead

__all__ = ["AnchorGenerator", "FCOSHead", "HEAD_REGISTRY", "RPN", "StandardROIHeads", "YOLOHead"]
