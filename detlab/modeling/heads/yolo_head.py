"""YOLO-family head: anchor-free, decoupled, with dynamic label assignment (YOLOv8/YOLOX style).

Per level (one anchor point per feature cell, at the cell centre): a box branch (two 3×3
ConvBNAct, then a 1×1 conv to ``4·R`` outputs) and a separate classification branch (two 3×3
ConvBNAct, then a 1×1 conv to K sigmoid logits). Box sides (left, top, right, bottom
distances from the anchor point, in strides) are the expectation of a softmax over the bins
``0..R−1`` (distribution focal loss, ``R = reg_max`` = 16) or, with ``reg_max`` 1, a softplus.

Training: predictions are matched to ground truth by the chosen assigner (``"TAL"``:
task-aligned, or ``"SimOTA"``; :mod:`detlab.modeling.heads.assigners`), which also yields soft
classification targets (match quality). Losses, each divided by the sum of the soft targets:
BCE over all anchors and classes (``loss_yolo_cls``), an IoU-family loss on the positives
weighted by their soft target (``loss_yolo_box``), and DFL on the positives (``loss_yolo_dfl``).
Size-aware weights (``MODEL.SIZE_AWARE_LOSS``) multiply each positive anchor's terms in all
three. Inference: sigmoid scores of every (anchor, class) pair above ``score_thresh``, the
``topk_candidates`` best, class-wise NMS, ``detections_per_image`` best.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from detlab.modeling.csp_blocks import ConvBNAct
from detlab.modeling.heads.assigners import ASSIGNER_REGISTRY, Assignment, build_assigner
from detlab.modeling.heads.build import DENSE_HEAD_REGISTRY
from detlab.modeling.heads.dense_outputs import detections_after_nms, select_candidates
from detlab.modeling.losses.box_losses import IOU_LOSSES, distribution_focal_loss, iou_loss
from detlab.modeling.losses.size_weights import SizeWeighting, build_size_weighting
from detlab.structures import Instances, ShapeSpec
from detlab.utils.comm import all_reduce_mean
from detlab.utils.errors import UserError

__all__ = ["YOLOHead", "anchor_points"]


def anchor_points(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres ``(x + 0.5)·s, (y + 0.5)·s`` of all levels (A×2, pixels) and strides (A)."""
    points, stride_list = [], []
    for (h, w), s in zip(shapes, strides, strict=True):
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        stride_list.append(torch.full((xx.numel(),), float(s), device=device))
    return torch.cat(points), torch.cat(stride_list)


def _branch(cin: int, mid: int, cout: int) -> nn.Sequential:
    return nn.Sequential(ConvBNAct(cin, mid, 3), ConvBNAct(mid, mid, 3), nn.Conv2d(mid, cout, 1))


@DENSE_HEAD_REGISTRY.register()
class YOLOHead(nn.Module):
    """The YOLO-family dense head over pyramid levels (channels may differ per level); a
    DENSE_HEAD (see :data:`~detlab.modeling.heads.build.DENSE_HEAD_REGISTRY` for the call
    shape), built from ``MODEL.YOLO``.

    Args:
        in_channels: channels of each input level, finest first.
        strides: stride of each level (``from_config`` takes them from ``input_shape``).
        num_classes: K foreground classes.
        reg_max: DFL bins per box side (16); 1 = no DFL (softplus distances).
        assigner: an ASSIGNER (see :data:`~detlab.modeling.heads.assigners.ASSIGNER_REGISTRY`)
            or its registered name (``"TAL"``, ``"SimOTA"``), built with ``assigner_args``.
        iou_loss: ``"ciou" | "giou" | "diou"``.
        loss_weights: (box, cls, dfl) multipliers (YOLOv8: 7.5, 0.5, 1.5).
        score_thresh, topk_candidates, nms_thresh, detections_per_image: inference (class
            probability threshold, (anchor, class) pairs kept before NMS, class-wise NMS IoU,
            detections kept per image).
        size_weighting: optional :class:`SizeWeighting` for the positives' terms.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        strides: Sequence[int],
        num_classes: int,
        reg_max: int = 16,
        assigner: str | Callable[..., Assignment] = "TAL",
        assigner_args: dict[str, Any] | None = None,
        iou_loss: str = "ciou",
        loss_weights: Sequence[float] = (7.5, 0.5, 1.5),
        score_thresh: float = 0.001,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.7,
        detections_per_image: int = 100,
        size_weighting: SizeWeighting | None = None,
    ) -> None:
        super().__init__()
        chans = [int(c) for c in in_channels]
        self.strides = [int(s) for s in strides]
        if len(chans) != len(self.strides):
            raise ValueError("in_channels and strides must have the same length")
        if reg_max < 1:
            raise UserError(f"MODEL.YOLO.REG_MAX is {reg_max}; use 16 (DFL) or 1 (no DFL).")
        self.num_classes, self.reg_max = int(num_classes), int(reg_max)
        box_mid = max(16, chans[0] // 4, 4 * self.reg_max)
        cls_mid = max(chans[0], min(self.num_classes, 100))
        self.box_branch = nn.ModuleList(_branch(c, box_mid, 4 * self.reg_max) for c in chans)
        self.cls_branch = nn.ModuleList(_branch(c, cls_mid, self.num_classes) for c in chans)
        self.register_buffer("bins", torch.arange(self.reg_max, dtype=torch.float32), False)
        if isinstance(assigner, str):
            assigner = build_assigner(assigner, **(assigner_args or {}))
        self.assigner = assigner
        if iou_loss not in IOU_LOSSES:
            raise UserError(
                f"MODEL.YOLO.IOU_LOSS is '{iou_loss}'; use one of {sorted(IOU_LOSSES)}."
            )
        self.iou_type = iou_loss
        self.loss_weights = tuple(float(w) for w in loss_weights)
        if len(self.loss_weights) != 3:
            raise UserError("MODEL.YOLO.LOSS_WEIGHTS needs three values: box, cls, dfl.")
        self.score_thresh, self.topk_candidates = float(score_thresh), int(topk_candidates)
        self.nms_thresh, self.detections_per_image = float(nms_thresh), int(detections_per_image)
        self.size_weighting = size_weighting
        self.reset_bias()

    def reset_bias(self, image_size: int = 640) -> None:
        """Initial biases: box bins 1.0; class prior of ~5 objects per ``image_size``² image."""
        for box, cls, s in zip(self.box_branch, self.cls_branch, self.strides, strict=True):
            nn.init.constant_(box[-1].bias, 1.0)
            prior = 5 / self.num_classes / (image_size / s) ** 2
            nn.init.constant_(cls[-1].bias, math.log(max(prior, 1e-8)))

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        y = cfg.MODEL.YOLO
        shapes = list(input_shape.values())
        return {
            "in_channels": [s.channels for s in shapes],
            "strides": [s.stride for s in shapes],
            "num_classes": y.NUM_CLASSES,
            "reg_max": y.REG_MAX,
            "assigner": ASSIGNER_REGISTRY.build(y.ASSIGNER, cfg),
            "iou_loss": y.IOU_LOSS,
            "loss_weights": tuple(y.LOSS_WEIGHTS),
            "score_thresh": y.SCORE_THRESH_TEST,
            "topk_candidates": y.TOPK_CANDIDATES_TEST,
            "nms_thresh": y.NMS_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "size_weighting": build_size_weighting(cfg),
        }

    # ----------------------------------------------------------------- network
    def predict(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits B×A×K and box-bin logits B×A×4×R over all levels (finest first)."""
        logits, bins = [], []
        for x, box, cls in zip(features, self.box_branch, self.cls_branch, strict=True):
            b = x.shape[0]
            logits.append(cls(x).flatten(2))
            bins.append(box(x).flatten(2))
        logits_t = torch.cat(logits, 2).transpose(1, 2)
        bins_t = torch.cat(bins, 2).transpose(1, 2).reshape(b, -1, 4, self.reg_max)
        return logits_t, bins_t

    def distances(self, bins: torch.Tensor) -> torch.Tensor:
        """Box-side distances in strides (B×A×4) from the bin logits."""
        if self.reg_max == 1:
            return F.softplus(bins[..., 0])
        return bins.softmax(-1) @ self.bins

    @staticmethod
    def decode(dist: torch.Tensor, points: torch.Tensor, strides: torch.Tensor) -> torch.Tensor:
        """XYXY boxes (pixels) from distances (strides) at anchor points."""
        d = dist * strides[:, None]
        return torch.cat([points - d[..., :2], points + d[..., 2:]], -1)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """Losses when ``targets`` are given, else per-image detections in input pixels."""
        logits, bins = self.predict(features)
        shapes = [tuple(x.shape[-2:]) for x in features]
        points, strides = anchor_points(shapes, self.strides, logits.device)
        boxes = self.decode(self.distances(bins), points, strides)
        if targets is not None:
            return self.losses(logits, bins, boxes, points, strides, targets)
        return self.inference(logits, boxes, image_sizes)

    # ----------------------------------------------------------------- training
    @staticmethod
    def pad_targets(
        targets: list[Instances], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ground truth padded to the largest count: boxes B×G×4, classes B×G, areas B×G, valid."""
        b, g = len(targets), max([len(t) for t in targets] + [1])
        boxes = torch.zeros(b, g, 4, device=device)
        classes = torch.zeros(b, g, dtype=torch.int64, device=device)
        areas = torch.zeros(b, g, device=device)
        valid = torch.zeros(b, g, dtype=torch.bool, device=device)
        for i, t in enumerate(targets):
            n = len(t)
            if n:
                boxes[i, :n], classes[i, :n], valid[i, :n] = t.boxes, t.classes, True
                areas[i, :n] = t.areas if t.has("areas") else (
                    (t.boxes[:, 2:] - t.boxes[:, :2]).clamp(min=0).prod(1))  # fmt: skip
        return boxes, classes, areas, valid

    def losses(
        self,
        logits: torch.Tensor,
        bins: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        strides: torch.Tensor,
        targets: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """``loss_yolo_cls``, ``loss_yolo_box``, ``loss_yolo_dfl`` (see the module docstring)."""
        gt_boxes, gt_classes, gt_areas, gt_valid = self.pad_targets(targets, logits.device)
        bad = gt_classes[gt_valid]
        bad = bad[(bad < 0) | (bad >= self.num_classes)]
        if bad.numel():
            raise UserError(
                f"A training box has class {int(bad[0])} but "
                f"MODEL.YOLO.NUM_CLASSES is {self.num_classes}; set it to the dataset's classes."
            )
        res = self.assigner(
            logits.detach().sigmoid().float(),
            boxes.detach().float(),
            points,
            strides,
            gt_boxes,
            gt_classes,
            gt_valid,
        )
        fg, target_scores = res.fg, res.target_scores.to(logits.dtype)
        weight = torch.ones(fg.shape, device=logits.device, dtype=logits.dtype)
        sw = self.size_weighting
        if sw is not None and fg.any():
            areas = torch.gather(gt_areas, 1, res.gt_index)
            weight[fg] = sw(areas[fg]).to(weight.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, target_scores, reduction="none")
        cls_loss = (bce.sum(-1) * weight).sum()
        box_w = target_scores.sum(-1)[fg] * weight[fg]
        if sw is not None and sw.normalize == "weight_sum":
            norm = (target_scores.sum(-1) * weight).sum()
        else:
            norm = target_scores.sum()
        norm = all_reduce_mean(norm.detach().float()).clamp(min=1.0)
        tgt = torch.gather(gt_boxes, 1, res.gt_index[..., None].expand(-1, -1, 4))[fg]
        box_loss = (iou_loss(boxes[fg], tgt, self.iou_type) * box_w).sum()
        if self.reg_max > 1:
            p, s = points.expand(fg.shape[0], -1, -1)[fg], strides.expand(fg.shape)[fg]
            ltrb = torch.cat([p - tgt[:, :2], tgt[:, 2:] - p], 1) / s[:, None]
            dfl = (distribution_focal_loss(bins[fg], ltrb) * box_w).sum()
        else:
            dfl = logits.sum() * 0.0
        wb, wc, wd = self.loss_weights
        out = {"loss_yolo_cls": wc * cls_loss / norm, "loss_yolo_box": wb * box_loss / norm}
        if self.reg_max > 1:
            out["loss_yolo_dfl"] = wd * dfl / norm
        return out

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def inference(
        self, logits: torch.Tensor, boxes: torch.Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        """Per image: detections (boxes XYXY in the network input's pixels, scores, classes)."""
        k = self.num_classes
        scores_all = logits.sigmoid()
        results = []
        for i, size in enumerate(image_sizes):
            scores = scores_all[i].reshape(-1)
            keep = select_candidates(scores, self.score_thresh, self.topk_candidates)
            b, s, classes = boxes[i, keep // k], scores[keep], keep % k
            nms, top = self.nms_thresh, self.detections_per_image
            results.append(detections_after_nms(b, s, classes, size, nms, top))
        return results
