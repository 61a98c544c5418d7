"""Backbones; importing this package registers them in ``BACKBONE_REGISTRY``."""

from detlab.modeling.backbone import csp, resnet, timm_backbone  # noqa: F401  (registers)
from detlab.modeling.backbone.build import BACKBONE_REGISTRY, build_backbone
from detlab.modeling.backbone.csp import CSPDarknet
from detlab.modeling.backbone.resnet import ResNet

__all__ = ["BACKBONE_REGISTRY", "CSPDarknet", "ResNet", "build_backbone"]
