"""ROI heads of Faster R-CNN: proposal sampling, RoIAlign pooling, box head and predictor.

Training adds the ground-truth boxes to the proposals, labels proposals by IoU
(``MODEL.ROI_HEADS.IOU_THRESHOLDS``), samples ``BATCH_SIZE_PER_IMAGE`` of them with
``POSITIVE_FRACTION`` foreground, pools each with torchvision's ``MultiScaleRoIAlign`` (level
by box size, canonical 224 px at level 4), and computes softmax cross-entropy over K+1
classes (background = K) and smooth-L1 on class-specific deltas of foreground RoIs, both
divided by the number of sampled RoIs. Inference: softmax scores, per-class boxes, score
threshold, class-wise NMS, the best ``detections_per_image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou

from detlab.modeling.box_coding import BoxCoder, Matcher, subsample_labels
from detlab.modeling.heads.build import ROI_HEADS_REGISTRY
from detlab.modeling.layers import c2_xavier_fill, get_norm
from detlab.modeling.losses.box_losses import smooth_l1
from detlab.modeling.losses.size_weights import SizeWeighting, build_size_weighting
from detlab.modeling.poolers import build_roi_pooler
from detlab.structures import Instances, ShapeSpec

__all__ = ["BoxHead", "StandardROIHeads"]


class BoxHead(nn.Module):
    """``num_conv`` 3×3 convs then ``num_fc`` fully connected layers with ReLU (RoI features)."""

    def __init__(
        self,
        in_channels: int,
        resolution: int,
        num_conv: int = 0,
        conv_dim: int = 256,
        num_fc: int = 2,
        fc_dim: int = 1024,
        norm: str = "",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        norm_layer = get_norm(norm)
        for _ in range(num_conv):
            conv = nn.Conv2d(c, conv_dim, 3, padding=1, bias=norm_layer is None)
            c2_xavier_fill(conv)
            layers += [conv] + ([norm_layer(conv_dim)] if norm_layer else []) + [nn.ReLU(True)]
            c = conv_dim
        layers.append(nn.Flatten())
        d = c * resolution * resolution
        for _ in range(num_fc):
            fc = nn.Linear(d, fc_dim)
            c2_xavier_fill(fc)
            layers += [fc, nn.ReLU(True)]
            d = fc_dim
        self.layers = nn.Sequential(*layers)
        self.out_dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@ROI_HEADS_REGISTRY.register()
class StandardROIHeads(nn.Module):
    """Box branch of Faster R-CNN. ``forward(features, proposals, image_sizes, targets)``.

    Args:
        in_features: names of the pyramid levels RoIs are pooled from.
        in_channels: their (common) channel count.
        num_classes: K foreground classes.
        in_strides: their strides (the pooler maps boxes to levels by size).
        pooler_type: ``"ROIAlign"`` (torchvision's MultiScaleRoIAlign) or ``"ROIAlignV2"``
            (half-pixel aligned, Detectron2's default); see :mod:`detlab.modeling.poolers`.
        pooler_kernel: ``"auto"`` (bilinear-matrix RoIAlign on CPU, torchvision's kernel
            elsewhere) or ``"torchvision"``; see :mod:`detlab.modeling.poolers`.
        size_weighting: optional :class:`SizeWeighting` for foreground RoIs' loss terms.
    """

    def __init__(
        self,
        in_features: Sequence[str],
        in_channels: int,
        num_classes: int,
        in_strides: Sequence[int] = (4, 8, 16, 32),
        pooler_resolution: int = 7,
        pooler_sampling_ratio: int = 0,
        pooler_type: str = "ROIAlign",
        pooler_kernel: str = "auto",
        num_conv: int = 0,
        conv_dim: int = 256,
        num_fc: int = 2,
        fc_dim: int = 1024,
        norm: str = "",
        iou_thresholds: Sequence[float] = (0.5,),
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        proposal_append_gt: bool = True,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 0.0,
        cls_agnostic_bbox_reg: bool = False,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        size_weighting: SizeWeighting | None = None,
    ) -> None:
        super().__init__()
        self.in_features = list(in_features)
        self.in_strides = [int(x) for x in in_strides]
        self.num_classes = num_classes
        self.pooler = build_roi_pooler(
            pooler_type,
            self.in_features,
            self.in_strides,
            pooler_resolution,
            pooler_sampling_ratio,
            pooler_kernel,
        )
        self.box_head = BoxHead(
            in_channels, pooler_resolution, num_conv, conv_dim, num_fc, fc_dim, norm
        )
        d = self.box_head.out_dim
        self.cls_score = nn.Linear(d, num_classes + 1)
        self.bbox_pred = nn.Linear(d, 4 if cls_agnostic_bbox_reg else 4 * num_classes)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        iou_thresholds = list(iou_thresholds)
        labels = [0, -1][: len(iou_thresholds)] + [1]
        self.matcher = Matcher(iou_thresholds, labels, allow_low_quality_matches=False)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.proposal_append_gt = proposal_append_gt
        self.smooth_l1_beta = smooth_l1_beta
        self.cls_agnostic = cls_agnostic_bbox_reg
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_image = detections_per_image
        self.size_weighting = size_weighting

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        c, b = cfg.MODEL.ROI_HEADS, cfg.MODEL.ROI_BOX_HEAD
        return {
            "in_features": list(input_shape),
            "in_channels": next(iter(input_shape.values())).channels,
            "num_classes": c.NUM_CLASSES,
            "in_strides": [v.stride for v in input_shape.values()],
            "pooler_resolution": b.POOLER_RESOLUTION,
            "pooler_sampling_ratio": b.POOLER_SAMPLING_RATIO,
            "pooler_type": b.POOLER_TYPE,
            "pooler_kernel": b.POOLER_KERNEL,
            "num_conv": b.NUM_CONV,
            "conv_dim": b.CONV_DIM,
            "num_fc": b.NUM_FC,
            "fc_dim": b.FC_DIM,
            "norm": b.NORM,
            "iou_thresholds": tuple(c.IOU_THRESHOLDS),
            "batch_size_per_image": c.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": c.POSITIVE_FRACTION,
            "proposal_append_gt": c.PROPOSAL_APPEND_GT,
            "bbox_reg_weights": tuple(b.BBOX_REG_WEIGHTS),
            "smooth_l1_beta": b.SMOOTH_L1_BETA,
            "cls_agnostic_bbox_reg": b.CLS_AGNOSTIC_BBOX_REG,
            "score_thresh": c.SCORE_THRESH_TEST,
            "nms_thresh": c.NMS_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "size_weighting": build_size_weighting(cfg),
        }

    @torch.no_grad()
    def label_and_sample(
        self, proposals: list[Instances], targets: list[Instances]
    ) -> list[Instances]:
        """Per image: sampled RoIs with ``gt_classes`` (K = background), ``gt_boxes``,
        ``gt_areas`` (original pixels²)."""
        out = []
        for p, t in zip(proposals, targets, strict=True):
            boxes = p.proposal_boxes
            if self.proposal_append_gt:
                boxes = torch.cat([boxes, t.boxes])
            idx, labels = self.matcher(box_iou(t.boxes, boxes))
            classes = t.classes[idx] if len(t) else torch.zeros_like(idx)
            classes = torch.where(labels == 1, classes, torch.full_like(classes, self.num_classes))
            classes[labels == -1] = -1
            pos, neg = subsample_labels(
                classes, self.batch_size_per_image, self.positive_fraction, self.num_classes
            )
            keep = torch.cat([pos, neg])
            gt_boxes = t.boxes[idx[keep]] if len(t) else torch.zeros_like(boxes[keep])
            gt_areas = t.areas[idx[keep]] if len(t) else boxes.new_zeros(keep.numel())
            out.append(
                Instances(
                    p.image_size,
                    proposal_boxes=boxes[keep],
                    gt_classes=classes[keep],
                    gt_boxes=gt_boxes,
                    gt_areas=gt_areas,
                )
            )
        return out

    def predict(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        padded_size: tuple[int, int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool RoIs (list of N_i×4 per image) → class logits N×(K+1), deltas N×(4K)."""
        x = self.pooler(features, boxes, [padded_size] * len(boxes))
        x = self.box_head(x)
        return self.cls_score(x), self.bbox_pred(x)

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[Instances],
        image_sizes: list[tuple[int, int]],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor] | list[Instances]:
        feats = {k: features[k] for k in self.in_features}
        fh, fw = next(iter(feats.values())).shape[-2:]
        padded_size = (fh * self.in_strides[0], fw * self.in_strides[0])
        if self.training and targets is not None:
            rois = self.label_and_sample(proposals, targets)
            logits, deltas = self.predict(feats, [r.proposal_boxes for r in rois], padded_size)
            return self.losses(logits, deltas, rois)
        boxes = [p.proposal_boxes for p in proposals]
        logits, deltas = self.predict(feats, boxes, padded_size)
        return self.inference(logits, deltas, boxes, image_sizes)

    def losses(
        self, logits: torch.Tensor, deltas: torch.Tensor, rois: list[Instances]
    ) -> dict[str, torch.Tensor]:
        """``loss_cls`` (cross-entropy) and ``loss_box_reg`` (smooth L1 on foreground)."""
        logits, deltas = logits.float(), deltas.float()  # fp32 losses under autocast
        classes = torch.cat([r.gt_classes for r in rois])
        boxes = torch.cat([r.proposal_boxes for r in rois])
        gt_boxes = torch.cat([r.gt_boxes for r in rois])
        areas = torch.cat([r.gt_areas for r in rois])
        fg = (classes >= 0) & (classes < self.num_classes)
        w = torch.ones(classes.numel(), device=logits.device, dtype=logits.dtype)
        if self.size_weighting is not None and fg.any():
            w[fg] = self.size_weighting(areas[fg]).to(w.dtype)
        sw = self.size_weighting
        by_weight = sw is not None and sw.normalize == "weight_sum"
        norm = (w.sum() if by_weight else torch.tensor(float(classes.numel()))).clamp(min=1.0)
        ce = F.cross_entropy(logits, classes, reduction="none")
        fg_idx = torch.nonzero(fg).squeeze(1)
        if self.cls_agnostic:
            pred = deltas[fg_idx]
        else:
            d = deltas.view(deltas.shape[0], -1, 4)
            pred = d[fg_idx, classes[fg_idx]]
        target = self.box_coder.encode(boxes[fg_idx], gt_boxes[fg_idx])
        reg = smooth_l1(pred, target, self.smooth_l1_beta).sum(1)
        return {
            "loss_cls": (ce * w).sum() / norm,
            "loss_box_reg": (reg * w[fg_idx]).sum() / norm,
        }

    @torch.no_grad()
    def inference(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        """Per image detections (boxes XYXY in input pixels, scores, classes)."""
        k = self.num_classes
        counts = [len(p) for p in proposals]
        probs = F.softmax(logits, dim=-1)[:, :k].split(counts)
        all_boxes = self.box_coder.decode(deltas, torch.cat(proposals)).split(counts)
        results = []
        for prob, boxes, (h, w) in zip(probs, all_boxes, image_sizes, strict=True):
            boxes = boxes.reshape(-1, 1 if self.cls_agnostic else k, 4).expand(-1, k, 4)
            boxes = torch.stack(
                [
                    boxes[..., 0].clamp(0, w),
                    boxes[..., 1].clamp(0, h),
                    boxes[..., 2].clamp(0, w),
                    boxes[..., 3].clamp(0, h),
                ],
                -1,
            )
            mask = (prob > self.score_thresh) & torch.isfinite(boxes).all(-1)
            idx = torch.nonzero(mask)
            b, s, c = boxes[idx[:, 0], idx[:, 1]], prob[idx[:, 0], idx[:, 1]], idx[:, 1]
            keep = batched_nms(b, s, c, self.nms_thresh)[: self.detections_per_image]
            results.append(Instances((h, w), boxes=b[keep], scores=s[keep], classes=c[keep]))
        return results
