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
from detlab.modeling.temporal import build_temporal, labelled_indices, stream_info
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
        temporal: optional :class:`~detlab.modeling.temporal.RecurrentMemory` between backbone
            and neck (event streams); with it, batches are streams of windows (see
            :mod:`detlab.modeling.temporal.memory`) and only labelled windows give losses.
        pixel_mean, pixel_std, size_divisibility, channels_last: see :class:`Detector`.
    """

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
        temporal: nn.Module | None = None,
    ) -> None:
        super().__init__(pixel_mean, pixel_std, size_divisibility, channels_last)
        self.backbone, self.neck, self.head = backbone, neck, head
        self.temporal = temporal
        self.in_features = list(in_features)
        self.finish_init(backbone)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        backbone = build_backbone(cfg)
        neck = build_neck(cfg, backbone.output_shape())
        shapes = neck.output_shape()
        names = select_features(shapes, cfg.MODEL.FCOS.IN_FEATURES, "MODEL.FCOS.IN_FEATURES")
        head_cls = HEAD_REGISTRY.get(cfg.MODEL.FCOS.HEAD_NAME)
        head = head_cls(**head_cls.from_config(cfg, {n: shapes[n] for n in names}))
        max_stride = max(s.stride for s in backbone.output_shape().values())
        neck_in = list(getattr(neck, "in_features", backbone.output_shape()))
        return {
            "backbone": backbone,
            "neck": neck,
            "head": head,
            "in_features": names,
            "temporal": build_temporal(cfg, backbone.output_shape(), neck_in),
            **detector_base_config(cfg, max_stride),
        }

    def features(self, images: torch.Tensor, stream: Any = None) -> list[torch.Tensor]:
        """Backbone (+ recurrent memory) + neck on a preprocessed batch → the head's levels."""
        feats = self.backbone(images)
        if self.temporal is not None:
            feats = self.temporal(
                feats, stream if stream is not None else stream_info([{}] * len(images))
            )
        feats = self.neck(feats)
        return [feats[n] for n in self.in_features]

    def forward(
        self, batched_inputs: list[dict[str, Any]]
    ) -> dict[str, torch.Tensor] | list[dict[str, Instances]]:
        images, sizes = self.preprocess(batched_inputs)
        stream = stream_info(batched_inputs) if self.temporal is not None else None
        features = self.features(images, stream)
        if self.training:
            keep = labelled_indices(batched_inputs)
            if len(keep) < len(batched_inputs):  # windows without labels give no loss
                if not keep:
                    return self._zero_losses(features, sizes, batched_inputs)
                index = torch.tensor(keep, device=images.device)
                features = [f.index_select(0, index) for f in features]
                batched_inputs = [batched_inputs[i] for i in keep]
                sizes = [sizes[i] for i in keep]
            return self.head(features, sizes, self.prepare_targets(batched_inputs, sizes))
        results = self.head(features, sizes)
        return self.postprocess(results, batched_inputs, sizes)

    def _zero_losses(self, features, sizes, batched_inputs) -> dict[str, torch.Tensor]:
        """Losses of a batch without any labelled window: zeros that keep the graph."""
        x = batched_inputs[0]
        blank = dict(
            x,
            instances=Instances(
                x["instances"].image_size,
                boxes=x["instances"].boxes[:0],
                classes=x["instances"].classes[:0],
            ),
        )
        one = [f[:1] for f in features]
        losses = self.head(one, sizes[:1], self.prepare_targets([blank], sizes[:1]))
        return {k: v * 0.0 for k, v in losses.items()}
