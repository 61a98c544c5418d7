"""Faster R-CNN (Ren et al. 2015) with a feature pyramid: backbone → neck → RPN → ROI heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detlab.modeling.backbone.build import build_backbone
from detlab.modeling.heads.build import build_proposal_generator, build_roi_heads
from detlab.modeling.meta_arch.base import Detector, detector_base_config, select_features
from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY
from detlab.modeling.neck.build import build_neck
from detlab.structures import Instances

__all__ = ["FasterRCNN"]


@META_ARCH_REGISTRY.register()
class FasterRCNN(Detector):
    """Two-stage detector. ``forward(batched_inputs)`` follows the META_ARCH contract.

    Args:
        backbone, neck: BACKBONE- and NECK-contract modules.
        proposal_generator: PROPOSAL_GENERATOR-contract module ``(features, image_sizes,
            targets) -> (proposals, losses)``.
        roi_heads: ROI_HEADS-contract module ``(features_dict, proposals, image_sizes,
            targets)`` → losses or detections.
        rpn_in_features: neck levels fed to the RPN, finest first.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        proposal_generator: nn.Module,
        roi_heads: nn.Module,
        rpn_in_features: list[str],
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        size_divisibility: int = 32,
        channels_last: bool = False,
    ) -> None:
        super().__init__(pixel_mean, pixel_std, size_divisibility, channels_last)
        self.backbone, self.neck = backbone, neck
        self.proposal_generator, self.roi_heads = proposal_generator, roi_heads
        self.rpn_in_features = list(rpn_in_features)
        self.finish_init(backbone)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        shapes = neck.output_shape()
        rpn_names = select_features(shapes, cfg.MODEL.RPN.IN_FEATURES, "MODEL.RPN.IN_FEATURES")
        # By default RoIs are pooled from the levels of stride <= 32 (not P6/P7).
        default_roi = [n for n, s in shapes.items() if s.stride <= 32]
        roi_names = select_features(
            shapes, cfg.MODEL.ROI_HEADS.IN_FEATURES or default_roi, "MODEL.ROI_HEADS.IN_FEATURES"
        )
        rpn = build_proposal_generator(cfg, {n: shapes[n] for n in rpn_names})
        roi = build_roi_heads(cfg, {n: shapes[n] for n in roi_names})
        max_stride = max(s.stride for s in backbone.output_shape().values())
        return {
            "backbone": backbone,
            "neck": neck,
            "proposal_generator": rpn,
            "roi_heads": roi,
            "rpn_in_features": rpn_names,
            **detector_base_config(cfg, max_stride),
        }

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        images, sizes = self.preprocess(batched_inputs)
        features = self.neck(self.backbone(images))
        rpn_feats = [features[n] for n in self.rpn_in_features]
        if self.training:
            targets = self.prepare_targets(batched_inputs, sizes)
            proposals, losses = self.proposal_generator(rpn_feats, sizes, targets)
            losses.update(self.roi_heads(features, proposals, sizes, targets))
            return losses
        proposals, _ = self.proposal_generator(rpn_feats, sizes)
        results = self.roi_heads(features, proposals, sizes)
        return self.postprocess(results, batched_inputs, sizes)
