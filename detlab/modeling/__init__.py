"""Models: backbones, necks, heads, losses and meta-architectures, each with a registry.

Importing ``detlab.modeling`` registers the built-in components, so ``build_model(cfg)``
finds every name listed in the registries.
"""

from detlab.modeling import backbone, heads, losses, meta_arch, neck  # noqa: F401 (registers)
from detlab.modeling.backbone.build import BACKBONE_REGISTRY, build_backbone
from detlab.modeling.heads.build import (
    DENSE_HEAD_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_HEADS_REGISTRY,
)
from detlab.modeling.losses.size_weights import SIZE_WEIGHT_REGISTRY, SizeWeighting
from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY, build_model
from detlab.modeling.neck.build import NECK_REGISTRY, build_neck
from detlab.modeling.weights import (
    WEIGHT_SOURCE_REGISTRY,
    build_inference_model,
    format_load_report,
    load_model_weights,
)

__all__ = [
    "BACKBONE_REGISTRY",
    "DENSE_HEAD_REGISTRY",
    "META_ARCH_REGISTRY",
    "NECK_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "SIZE_WEIGHT_REGISTRY",
    "SizeWeighting",
    "build_backbone",
    "build_model",
    "build_neck",
    "WEIGHT_SOURCE_REGISTRY",
    "build_inference_model",
    "format_load_report",
    "load_model_weights",
]
