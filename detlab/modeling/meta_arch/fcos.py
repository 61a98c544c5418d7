"""The FCOS one-stage detector: backbone → neck → FCOS head."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from detlab.modeling.backbone.build import build_backbone
from detlab.modeling.heads.build import HEAD_REGISTRY
from detlab.modeling.meta_arch.base import Detector, detector_base_config
from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY
from detlab.modeling.neck.build import build_neck
from detlab.structures import Instances
from detlab.utils.errors import UserError

__all__ = ["FCOS", "select_features"]


def select_features(available: dict, names: Any, key: str) -> list[str]:
    """The neck levels a head reads: ``names`` if given, else all of them (finest first)."""
    names = list(names) or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(
            f"{key} names {unknown}, which the neck does not output (it has "
            f"{list(available)}); pick from those."
        )
    return names


@META_ARCH_REGISTRY.register()
class FCOS(Detector):
    """FCOS detector. ``forward(batched_inputs)`` follows the META_ARCH contract.

    Args:
        backbone: module returning ``res2``..``res5`` with ``output_shape()``.
        neck: module over the backbone features returning ``p*`` levels.
        head: FCOS head taking ``(features, image_sizes, targets)``.
        in_features: neck levels fed to the head, finest first.
        pixel_mean, pixel_std, size_divisibility, channels_last: see :class:`Detector`.

    ``head_config`` names the ``MODEL.<node>`` whose ``HEAD_NAME`` and ``IN_FEATURES`` choose
    the head; subclasses (other one-stage detectors) change only that.
    """

    head_config = "FCOS"

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        in_features: list[str],
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
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        shapes = neck.output_shape()
        node, key = cfg.MODEL[cls.head_config], f"MODEL.{cls.head_config}"
        names = select_features(shapes, node.IN_FEATURES, f"{key}.IN_FEATURES")
        head_cls = HEAD_REGISTRY.get(node.HEAD_NAME)
        head = head_cls(**head_cls.from_config(cfg, {n: shapes[n] for n in names}))
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
