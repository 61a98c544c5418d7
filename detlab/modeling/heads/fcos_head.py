"""FCOS head (Tian et al. 2019): anchor-free per-location classification, box and centerness.

Per level: two towers of ``num_convs`` 3×3 conv + norm + ReLU, a class predictor (K sigmoid
logits), a box predictor (distances l, t, r, b, as ReLU(scale_l · x) · stride) and a centerness
predictor on the box tower. Training: locations are assigned to the smallest ground-truth box
that contains them (or their centre region, ``center_sampling_radius`` strides) and whose
largest distance lies in the level's size range; focal loss for classes, GIoU for boxes
(weighted by the centerness target), BCE for centerness. Target assignment is vectorised over
all locations, boxes and images. Inference: sqrt(class · centerness) scores, threshold,
per-level top-k, class-wise NMS, ``detections_per_image`` best.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from detlab.modeling.heads.build import DENSE_HEAD_REGISTRY
from detlab.modeling.heads.dense_outputs import (
    detections_after_nms,
    level_channels,
    select_candidates,
)
from detlab.modeling.layers import Scale, conv_tower, init_prediction_convs
from detlab.modeling.losses.size_weights import SizeWeighting, build_size_weighting
from detlab.structures import Instances, ShapeSpec
from detlab.utils.comm import all_reduce_mean
from detlab.utils.errors import UserError

__all__ = ["FCOSHead", "fcos_locations", "default_size_ranges"]

INF = 1e8


def default_size_ranges(strides: Sequence[int]) -> list[tuple[float, float]]:
    """FCOS size ranges per level: (4·s, 8·s], open-ended at the finest and coarsest level.

    For strides 8..128 this is the paper's (0, 64], (64, 128], ..., (512, inf).
    """
    ranges = [(4.0 * s, 8.0 * s) for s in strides]
    ranges[0] = (-1.0, ranges[0][1])
    ranges[-1] = (ranges[-1][0], INF)
    return ranges


def fcos_locations(
    shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: torch.device
) -> list[torch.Tensor]:
    """Per level, the (x, y) input-pixel centres of feature cells: Tensor[H·W, 2]."""
    out = []
    for (h, w), s in zip(shapes, strides, strict=True):
        xs = torch.arange(w, device=device, dtype=torch.float32) * s + s // 2
        ys = torch.arange(h, device=device, dtype=torch.float32) * s + s // 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        out.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
    return out


@DENSE_HEAD_REGISTRY.register()
class FCOSHead(nn.Module):
    """The FCOS head over pyramid levels of equal channel count.

    Args:
        in_channels: channels of every input level.
        strides: stride of each input level, finest first.
        num_classes: K foreground classes.
        num_convs: conv layers per tower (0 = predictors directly on the features).
        norm: tower norm (``"GN"`` default, ``"BN"``, ``""``).
        size_ranges: per-level (low, high] range of a location's largest regression distance;
            None = :func:`default_size_ranges`.
        center_sampling_radius: positives must lie within this many strides of a box centre
            (0 disables centre sampling: anywhere in the box).
        size_weighting: optional :class:`SizeWeighting` applied to positive locations.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        num_classes: int,
        num_convs: int = 4,
        norm: str = "GN",
        prior_prob: float = 0.01,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        size_ranges: Sequence[tuple[float, float]] | None = None,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.6,
        detections_per_image: int = 100,
        size_weighting: SizeWeighting | None = None,
    ) -> None:
        super().__init__()
        self.strides = [int(s) for s in strides]
        self.num_classes = int(num_classes)
        self.cls_tower = conv_tower(in_channels, num_convs, norm)
        self.box_tower = conv_tower(in_channels, num_convs, norm)
        self.cls_logits = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.centerness = nn.Conv2d(in_channels, 1, 3, padding=1)
        init_prediction_convs((self.cls_logits, self.bbox_pred, self.centerness), prior_prob)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        ranges = list(size_ranges) if size_ranges else default_size_ranges(self.strides)
        if len(ranges) != len(self.strides):
            raise UserError(
                f"MODEL.FCOS.SIZES_OF_INTEREST gives {len(ranges)} ranges for "
                f"{len(self.strides)} pyramid levels; give one (low, high) pair per level."
            )
        self.size_ranges = [(float(lo), float(hi)) for lo, hi in ranges]
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.center_sampling_radius = center_sampling_radius
        self.score_thresh, self.topk_candidates = score_thresh, topk_candidates
        self.nms_thresh, self.detections_per_image = nms_thresh, detections_per_image
        self.size_weighting = size_weighting

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        c = cfg.MODEL.FCOS
        shapes = list(input_shape.values())
        channels = level_channels(input_shape, "FCOS")
        sizes = [tuple(r) for r in c.SIZES_OF_INTEREST] or None
        return {
            "in_channels": channels,
            "strides": [s.stride for s in shapes],
            "num_classes": c.NUM_CLASSES,
            "num_convs": c.NUM_CONVS,
            "norm": c.NORM,
            "prior_prob": c.PRIOR_PROB,
            "focal_alpha": c.FOCAL_LOSS_ALPHA,
            "focal_gamma": c.FOCAL_LOSS_GAMMA,
            "size_ranges": sizes,
            "center_sampling_radius": c.CENTER_SAMPLING_RADIUS,
            "score_thresh": c.SCORE_THRESH_TEST,
            "topk_candidates": c.TOPK_CANDIDATES_TEST,
            "nms_thresh": c.NMS_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "size_weighting": build_size_weighting(cfg),
        }

    # ----------------------------------------------------------------- network
    def predict(
        self, features: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Raw per-level outputs: logits B×K×H×W, distances B×4×H×W (px), centerness B×1×H×W."""
        logits, deltas, ctrness = [], [], []
        for x, scale, s in zip(features, self.scales, self.strides, strict=True):
            cls_feat, box_feat = self.cls_tower(x), self.box_tower(x)
            logits.append(self.cls_logits(cls_feat))
            deltas.append(F.relu(scale(self.bbox_pred(box_feat))) * s)
            ctrness.append(self.centerness(box_feat))
        return logits, deltas, ctrness

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """Losses when ``targets`` are given, else per-image detections in input pixels."""
        logits, deltas, ctrness = self.predict(features)
        shapes = [tuple(x.shape[-2:]) for x in features]
        locations = fcos_locations(shapes, self.strides, features[0].device)
        if targets is not None:
            return self.losses(logits, deltas, ctrness, locations, targets)
        return self.inference(logits, deltas, ctrness, locations, image_sizes)

    # ----------------------------------------------------------------- training
    @torch.no_grad()
    def assign(
        self, locations: list[torch.Tensor], targets: list[Instances]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vectorised FCOS assignment for the whole batch.

        Returns ``labels`` B×P (class id, ``num_classes`` = background), ``boxes`` B×P×4 (the
        assigned ground-truth box) and ``areas`` B×P (its area in original pixels²).
        """
        device = locations[0].device
        points = torch.cat(locations)  # P×2
        num_p = points.shape[0]
        level_stride = torch.cat(
            [
                torch.full((len(loc),), float(s), device=device)
                for loc, s in zip(locations, self.strides, strict=True)
            ]
        )
        level_lo = torch.cat(
            [
                torch.full((len(loc),), r[0], device=device)
                for loc, r in zip(locations, self.size_ranges, strict=True)
            ]
        )
        level_hi = torch.cat(
            [
                torch.full((len(loc),), r[1], device=device)
                for loc, r in zip(locations, self.size_ranges, strict=True)
            ]
        )
        b = len(targets)
        g = max(1, max(len(t) for t in targets))
        gt_boxes = points.new_zeros((b, g, 4))
        gt_classes = torch.full((b, g), self.num_classes, dtype=torch.int64, device=device)
        gt_areas = points.new_zeros((b, g))
        valid = torch.zeros((b, g), dtype=torch.bool, device=device)
        for i, t in enumerate(targets):
            n = len(t)
            gt_boxes[i, :n] = t.boxes
            gt_classes[i, :n] = t.classes
            gt_areas[i, :n] = t.areas
            valid[i, :n] = True

        x = points[None, :, None, 0]  # 1×P×1
        y = points[None, :, None, 1]
        x0, y0, x1, y1 = (gt_boxes[:, None, :, k] for k in range(4))  # B×1×G
        ltrb = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=-1)  # B×P×G×4
        if self.center_sampling_radius > 0:
            rad = (level_stride * self.center_sampling_radius)[None, :, None]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            cb = torch.stack(
                [
                    x - torch.maximum(cx - rad, x0),
                    y - torch.maximum(cy - rad, y0),
                    torch.minimum(cx + rad, x1) - x,
                    torch.minimum(cy + rad, y1) - y,
                ],
                dim=-1,
            )
            inside = cb.min(dim=-1).values > 0
        else:
            inside = ltrb.min(dim=-1).values > 0
        max_dist = ltrb.max(dim=-1).values
        in_range = (max_dist > level_lo[None, :, None]) & (max_dist <= level_hi[None, :, None])
        ok = inside & in_range & valid[:, None, :]
        box_area = ((x1 - x0) * (y1 - y0)).expand(b, num_p, g)
        cost = torch.where(ok, box_area, torch.full_like(box_area, INF))
        min_cost, idx = cost.min(dim=2)  # B×P
        pos = min_cost < INF
        labels = torch.gather(gt_classes, 1, idx)
        labels[~pos] = self.num_classes
        boxes = torch.gather(gt_boxes, 1, idx[..., None].expand(b, num_p, 4))
        areas = torch.gather(gt_areas, 1, idx)
        return labels, boxes, areas

    def losses(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        ctrness: list[torch.Tensor],
        locations: list[torch.Tensor],
        targets: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """``loss_fcos_cls`` (focal), ``loss_fcos_loc`` (GIoU), ``loss_fcos_ctr`` (BCE)."""
        labels, gt_boxes, gt_areas = self.assign(locations, targets)
        k = self.num_classes
        cls = torch.cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, k) for x in logits], 1)
        reg = torch.cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4) for x in deltas], 1)
        ctr = torch.cat([x.reshape(x.shape[0], -1) for x in ctrness], 1)
        cls, reg, ctr = cls.float(), reg.float(), ctr.float()  # fp32 losses under autocast
        pos = labels < k
        num_pos = pos.sum()

        onehot = F.one_hot(labels, k + 1)[..., :k].to(cls.dtype)
        focal = sigmoid_focal_loss(
            cls, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
        ).sum(-1)  # B×P

        points = torch.cat(locations)[None].expand(labels.shape[0], -1, -1)[pos]  # N×2
        pred_ltrb, gt_b = reg[pos], gt_boxes[pos]
        pred_boxes = torch.cat([points - pred_ltrb[:, :2], points + pred_ltrb[:, 2:]], dim=1)
        tgt = torch.cat([points - gt_b[:, :2], gt_b[:, 2:] - points], dim=1)  # l, t, r, b
        lr, tb = tgt[:, 0::2], tgt[:, 1::2]
        ctr_target = torch.sqrt(
            (lr.min(1).values / lr.max(1).values).clamp(min=0)
            * (tb.min(1).values / tb.max(1).values).clamp(min=0)
        )
        giou = generalized_box_iou_loss(pred_boxes, gt_b, reduction="none")
        ctr_bce = F.binary_cross_entropy_with_logits(ctr[pos], ctr_target, reduction="none")

        sw = self.size_weighting
        if sw is not None:
            # Size-aware weights of positives (area in original pixels²); negatives keep 1.
            w = sw(gt_areas[pos]).to(focal.dtype)
            per_loc = torch.ones_like(focal)
            per_loc[pos] = w
            focal = focal * per_loc
        else:
            w = torch.ones_like(ctr_target)
        reg_w = w * ctr_target
        if sw is not None and sw.normalize == "weight_sum":
            cls_norm = all_reduce_mean(w.sum().detach())
            reg_norm = all_reduce_mean(reg_w.sum().detach())
        else:
            cls_norm = all_reduce_mean(num_pos.to(focal.dtype))
            reg_norm = all_reduce_mean(ctr_target.sum().detach())
        cls_norm = ctr_norm = cls_norm.clamp(min=1.0)
        reg_norm = reg_norm.clamp(min=1e-6)
        return {
            "loss_fcos_cls": focal.sum() / cls_norm,
            "loss_fcos_loc": (giou * reg_w).sum() / reg_norm,
            "loss_fcos_ctr": (ctr_bce * w).sum() / ctr_norm,
        }

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def inference(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        ctrness: list[torch.Tensor],
        locations: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        """Per image: detections (boxes XYXY in the network input's pixels, scores, classes)."""
        results = []
        k = self.num_classes
        for i, (h, w) in enumerate(image_sizes):
            all_boxes, all_scores, all_classes = [], [], []
            for cls_l, reg_l, ctr_l, loc in zip(logits, deltas, ctrness, locations, strict=True):
                scores = torch.sqrt(
                    torch.sigmoid(cls_l[i]).reshape(k, -1).t()
                    * torch.sigmoid(ctr_l[i]).reshape(-1, 1)
                ).reshape(-1)  # (P_l·K)
                keep = select_candidates(scores, self.score_thresh, self.topk_candidates)
                scores = scores[keep]
                loc_idx, cls_idx = keep // k, keep % k
                ltrb = reg_l[i].reshape(4, -1).t()[loc_idx]
                pts = loc[loc_idx]
                boxes = torch.cat([pts - ltrb[:, :2], pts + ltrb[:, 2:]], dim=1)
                all_boxes.append(boxes)
                all_scores.append(scores)
                all_classes.append(cls_idx)
            results.append(
                detections_after_nms(
                    torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes),
                    (h, w), self.nms_thresh, self.detections_per_image,
                )
            )  # fmt: skip
        return results
