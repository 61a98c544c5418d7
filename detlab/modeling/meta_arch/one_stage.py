"""One-stage detectors: backbone → neck → dense head.

:class:`OneStageDetector` is the whole forward of FCOS-, RetinaNet- and YOLO-style detectors;
a registered subclass only says which config keys name its dense head and the neck levels the
head reads (see :class:`detlab.modeling.meta_arch.fcos.FCOS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detlab.modeling.backbone.build import build_backbone
from detlab.modeling.heads.build import build_dense_head
from detlab.modeling.meta_arch.base import Detector, detector_base_config, select_features
from detlab.modeling.neck.build import build_neck
from detlab.structures import Instances

__all__ = ["OneStageDetector"]


class OneStageDetector(Detector):
    """backbone → neck → dense head; ``forward(batched_inputs)`` follows the META_ARCH contract.

    Args:
        backbone: BACKBONE-contract module (``res*`` maps with ``output_shape()``).
        neck: NECK-contract module over the backbone maps, returning ``p*`` levels.
        head: DENSE_HEAD-contract module taking ``(features, image_sizes, targets)``.
        in_features: neck levels fed to the head, finest first.
        pixel_mean, pixel_std, size_divisibility, channels_last: see :class:`Detector`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        in_features: Sequence[str],
        pixel_mean: tuple[float, ...],
        pixel_std: tuple[float, ...],
        size_divisibility: int = 32,
        channels_last: bool = False,
    ) -> None:
        super().__init__(pixel_mean, pixel_std, size_divisibility, channels_last)
        self.backbone, self.neck, self.head = backbone, neck, head
        self.in_features = list(in_features)
        self.finish_init(backbone)

    @classmethod
    def parts_from_config(
        cls, cfg: Any, head_name: str, in_features: Sequence[str], key: str
    ) -> dict[str, Any]:
        """Constructor arguments: backbone and neck from ``MODEL.BACKBONE``/``MODEL.NECK``, the
        dense head ``head_name`` over the neck levels ``in_features`` (config key ``key``;
        empty = all levels)."""
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        shapes = neck.output_shape()
        names = select_features(shapes, in_features, key)
        head = build_dense_head(cfg, head_name, {n: shapes[n] for n in names})
        max_stride = max(s.stride for s in backbone.output_shape().values())
        return {
            "backbone": backbone,
            "neck": neck,
            "head": head,
            "in_features": names,
            **detector_base_config(cfg, max_stride),
        }

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone + neck on a preprocessed batch → the head's input levels."""
        feats = self.neck(self.backbone(images))
        return [feats[n] for n in self.in_features]

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        images, sizes = self.preprocess(batched_inputs)
        features = self.features(images)
        if self.training:
            return self.head(features, sizes, self.prepare_targets(batched_inputs, sizes))
        results = self.head(features, sizes)
        return self.postprocess(results, batched_inputs, sizes)
