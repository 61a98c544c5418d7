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
from detlab.modeling.temporal import build_temporal, labelled_indices, stream_info
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
        temporal: optional :class:`~detlab.modeling.temporal.RecurrentMemory` between backbone
            and neck (event streams): batches are then streams of windows with ``slot``,
            ``step``, ``is_first`` keys (see :mod:`detlab.modeling.temporal.memory`), and in
            training only windows not marked ``labelled: False`` give losses.
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
        temporal: nn.Module | None = None,
    ) -> None:
        super().__init__(pixel_mean, pixel_std, size_divisibility, channels_last)
        self.backbone, self.neck, self.head = backbone, neck, head
        self.temporal = temporal
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
        neck_reads = list(getattr(neck, "in_features", backbone.output_shape()))
        return {
            "backbone": backbone,
            "neck": neck,
            "head": head,
            "in_features": names,
            "temporal": build_temporal(cfg, backbone.output_shape(), neck_reads),
            **detector_base_config(cfg, max_stride),
        }

    def features(self, images: torch.Tensor, stream: Any = None) -> list[torch.Tensor]:
        """Backbone (+ recurrent memory) + neck on a preprocessed batch → the head's levels;
        ``stream`` is the batch's :class:`~detlab.modeling.temporal.StreamInfo` (None: every
        image on its own)."""
        feats = self.backbone(images)
        if self.temporal is not None:
            feats = self.temporal(feats, stream or stream_info([{}] * images.shape[0]))
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
                    return self._zero_losses(features, sizes, batched_inputs[0])
                index = torch.tensor(keep, device=images.device)
                features = [f.index_select(0, index) for f in features]
                batched_inputs = [batched_inputs[i] for i in keep]
                sizes = [sizes[i] for i in keep]
            return self.head(features, sizes, self.prepare_targets(batched_inputs, sizes))
        results = self.head(features, sizes)
        return self.postprocess(results, batched_inputs, sizes)

    def _zero_losses(
        self, features: list[torch.Tensor], sizes: list[tuple[int, int]], first: dict[str, Any]
    ) -> dict[str, torch.Tensor]:
        """Losses of a batch without any labelled window: zeros that keep the graph."""
        inst = first["instances"]
        blank = dict(first, instances=Instances(inst.image_size, boxes=inst.boxes[:0],
                                                classes=inst.classes[:0]))  # fmt: skip
        losses = self.head(
            [f[:1] for f in features], sizes[:1], self.prepare_targets([blank], sizes[:1])
        )
        return {k: v * 0.0 for k, v in losses.items()}
