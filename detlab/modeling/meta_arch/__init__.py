"""Meta-architectures; importing this package registers them in ``META_ARCH_REGISTRY``."""

from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY, build_model
from detlab.modeling.meta_arch.fcos import FCOS
from detlab.modeling.meta_arch.one_stage import OneStageDetector
from detlab.modeling.meta_arch.rcnn import FasterRCNN
from detlab.modeling.meta_arch.retinanet import RetinaNet
from detlab.modeling.meta_arch.yolo import YOLO

__all__ = [
    "FCOS",
    "META_ARCH_REGISTRY",
    "YOLO",
    "FasterRCNN",
    "OneStageDetector",
    "RetinaNet",
    "build_model",
]
