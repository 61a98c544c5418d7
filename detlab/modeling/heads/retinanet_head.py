"""RetinaNet head (Lin et al. 2017): anchor-based dense detection with the focal loss.

Per level: a classification subnet and a box subnet (``num_convs`` × 3×3 conv + ReLU, with
bias, as Detectron2 and torchvision build them), then ``cls_score`` (A·K sigmoid logits) and
``bbox_pred`` (A·4 box deltas) for the A anchors of each cell. The state-dict names are
Detectron2's (``cls_subnet``, ``bbox_subnet``, ``cls_score``, ``bbox_pred``).

Training: every anchor gets its best ground truth by IoU; ``iou_thresholds``/``iou_labels``
(Detectron2's 0.4/0.5 → background / ignored / foreground) label it, and each object's
best-matching anchors are foreground too. Sigmoid focal loss over all non-ignored anchors and
classes, box loss (smooth L1 on the R-CNN deltas, or GIoU on decoded boxes) on foreground
anchors; both are divided by the number of foreground anchors in the batch (averaged over
processes). With a size-aware weighting each foreground anchor's terms are multiplied by the
weight of its object's area.

Inference, per image and level: sigmoid scores, those above ``score_thresh``, the best
``topk_candidates`` of them, decoded and clipped; then class-wise NMS over all levels and the
best ``detections_per_image``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from detlab.modeling.box_coding import BoxCoder, Matcher
from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.modeling.heads.build import DENSE_HEAD_REGISTRY
from detlab.modeling.heads.dense_outputs import (
    detections_after_nms,
    level_channels,
    per_anchor,
    select_candidates,
)
from detlab.modeling.layers import conv_tower, init_prediction_convs
from detlab.modeling.losses.box_losses import smooth_l1
from detlab.modeling.losses.size_weights import SizeWeighting, build_size_weighting
from detlab.structures import Instances, ShapeSpec
from detlab.utils.comm import all_reduce_mean
from detlab.utils.errors import UserError

__all__ = ["RetinaNetHead", "retinanet_anchor_sizes"]

LOSS_TYPES = ("smooth_l1", "giou")


def retinanet_anchor_sizes(strides: Sequence[int]) -> list[tuple[float, ...]]:
    """Three octave scales per level: 4·s·2^(k/3), k = 0, 1, 2 (32, 40.3, 50.8 at stride 8)."""
    return [tuple(4.0 * s * 2 ** (k / 3) for k in range(3)) for s in strides]


@DENSE_HEAD_REGISTRY.register()
class RetinaNetHead(nn.Module):
    """The RetinaNet head over pyramid levels of equal channel count.

    Args:
        in_channels: channels of every input level.
        strides: stride of each input level, finest first.
        num_classes: K foreground classes.
        anchor_generator: anchors of every level (A per cell, the same A on every level).
        num_convs: conv layers per subnet.
        norm: subnet norm (``""`` default, ``"GN"``, ``"BN"``).
        prior_prob: initial foreground probability of every class logit.
        iou_thresholds, iou_labels: anchor labelling by best IoU (see :class:`Matcher`).
        focal_alpha, focal_gamma: focal loss parameters.
        bbox_reg_weights: (dx, dy, dw, dh) weights of the box coding.
        bbox_reg_loss_type: ``"smooth_l1"`` (with ``smooth_l1_beta``; 0 = L1) or ``"giou"``.
        score_thresh, topk_candidates, nms_thresh, detections_per_image: inference.
        size_weighting: optional :class:`SizeWeighting` applied to foreground anchors.
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        num_classes: int,
        anchor_generator: AnchorGenerator,
        num_convs: int = 4,
        norm: str = "",
        prior_prob: float = 0.01,
        iou_thresholds: Sequence[float] = (0.4, 0.5),
        iou_labels: Sequence[int] = (0, -1, 1),
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        bbox_reg_loss_type: str = "smooth_l1",
        smooth_l1_beta: float = 0.1,
        score_thresh: float = 0.05,
        topk_candidates: int = 1000,
        nms_thresh: float = 0.5,
        detections_per_image: int = 100,
        size_weighting: SizeWeighting | None = None,
    ) -> None:
        super().__init__()
        if bbox_reg_loss_type not in LOSS_TYPES:
            raise UserError(
                f"MODEL.RETINANET.BBOX_REG_LOSS_TYPE is '{bbox_reg_loss_type}'; use "
                f"{' or '.join(LOSS_TYPES)}."
            )
        if len(iou_labels) != len(iou_thresholds) + 1 or not set(iou_labels) <= {-1, 0, 1}:
            raise UserError(
                f"MODEL.RETINANET.IOU_LABELS {tuple(iou_labels)} must give one label (0, -1 or 1) "
                f"per interval of IOU_THRESHOLDS {tuple(iou_thresholds)}, "
                f"{len(iou_thresholds) + 1} in all."
            )
        self.strides = [int(s) for s in strides]
        self.num_classes = int(num_classes)
        self.anchor_generator = anchor_generator
        a = anchor_generator.num_anchors
        self.cls_subnet = conv_tower(in_channels, num_convs, norm, bias=True)
        self.bbox_subnet = conv_tower(in_channels, num_convs, norm, bias=True)
        self.cls_score = nn.Conv2d(in_channels, a * self.num_classes, 3, padding=1)
        self.bbox_pred = nn.Conv2d(in_channels, a * 4, 3, padding=1)
        init_prediction_convs((self.cls_score, self.bbox_pred), prior_prob)
        self.matcher = Matcher(iou_thresholds, iou_labels, allow_low_quality_matches=True)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.bbox_reg_loss_type, self.smooth_l1_beta = bbox_reg_loss_type, smooth_l1_beta
        self.score_thresh, self.topk_candidates = score_thresh, topk_candidates
        self.nms_thresh, self.detections_per_image = nms_thresh, detections_per_image
        self.size_weighting = size_weighting

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        c = cfg.MODEL.RETINANET
        shapes = list(input_shape.values())
        channels = level_channels(input_shape, "RetinaNet")
        strides = [s.stride for s in shapes]
        anchors = AnchorGenerator.from_config(cfg, strides)
        if not cfg.MODEL.ANCHOR_GENERATOR.SIZES:
            anchors["sizes"] = retinanet_anchor_sizes(strides)
        return {
            "in_channels": channels,
            "strides": strides,
            "num_classes": c.NUM_CLASSES,
            "anchor_generator": AnchorGenerator(**anchors),
            "num_convs": c.NUM_CONVS,
            "norm": c.NORM,
            "prior_prob": c.PRIOR_PROB,
            "iou_thresholds": tuple(c.IOU_THRESHOLDS),
            "iou_labels": tuple(c.IOU_LABELS),
            "focal_alpha": c.FOCAL_LOSS_ALPHA,
            "focal_gamma": c.FOCAL_LOSS_GAMMA,
            "bbox_reg_weights": tuple(c.BBOX_REG_WEIGHTS),
            "bbox_reg_loss_type": c.BBOX_REG_LOSS_TYPE,
            "smooth_l1_beta": c.SMOOTH_L1_LOSS_BETA,
            "score_thresh": c.SCORE_THRESH_TEST,
            "topk_candidates": c.TOPK_CANDIDATES_TEST,
            "nms_thresh": c.NMS_THRESH_TEST,
            "detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "size_weighting": build_size_weighting(cfg),
        }

    # ----------------------------------------------------------------- network
    def predict(self, features: Sequence[torch.Tensor]) -> tuple[list, list]:
        """Raw outputs per level: logits B×(H·W·A)×K and deltas B×(H·W·A)×4, ordered like the
        anchors (row, column, anchor)."""
        logits, deltas = [], []
        k = self.num_classes
        for x in features:
            logits.append(per_anchor(self.cls_score(self.cls_subnet(x)), k))
            deltas.append(per_anchor(self.bbox_pred(self.bbox_subnet(x)), 4))
        return logits, deltas

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[Instances] | None = None,
    ) -> dict[str, torch.Tensor] | list[Instances]:
        """Losses when ``targets`` are given, else per-image detections in input pixels."""
        logits, deltas = self.predict(features)
        anchors = self.anchor_generator([tuple(x.shape[-2:]) for x in features])
        if targets is not None:
            return self.losses(logits, deltas, anchors, targets)
        return self.inference(logits, deltas, anchors, image_sizes)

    # ----------------------------------------------------------------- training
    @torch.no_grad()
    def label_anchors(
        self, anchors: torch.Tensor, targets: list[Instances]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image and anchor: class (``num_classes`` = background, -1 = ignored), matched
        ground-truth box and its area (original pixels²). Returns B×N, B×N×4, B×N."""
        k = self.num_classes
        labels, boxes, areas = [], [], []
        for t in targets:
            n = anchors.shape[0]
            if len(t) == 0:
                labels.append(torch.full((n,), k, dtype=torch.int64, device=anchors.device))
                boxes.append(anchors.new_zeros((n, 4)))
                areas.append(anchors.new_zeros(n))
                continue
            idx, match = self.matcher(box_iou(t.boxes, anchors))
            cls = torch.where(match == 1, t.classes[idx], torch.full_like(idx, k))
            cls[match == -1] = -1
            labels.append(cls)
            boxes.append(t.boxes[idx])
            areas.append(t.areas[idx])
        return torch.stack(labels), torch.stack(boxes), torch.stack(areas)

    def losses(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        targets: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """``loss_cls`` (sigmoid focal) and ``loss_box_reg`` (smooth L1 or GIoU), Detectron2's
        names, each divided by the number of foreground anchors."""
        all_anchors = torch.cat(anchors)
        labels, gt_boxes, gt_areas = self.label_anchors(all_anchors, targets)
        k = self.num_classes
        cls = torch.cat(logits, 1)  # B×N×K
        reg = torch.cat(deltas, 1)  # B×N×4
        valid = labels >= 0
        pos = valid & (labels < k)
        target = torch.zeros_like(cls)
        img_idx, anchor_idx = pos.nonzero(as_tuple=True)
        target[img_idx, anchor_idx, labels[pos]] = 1.0
        # per anchor, summed over classes; ignored anchors count 0 (masked, not gathered)
        focal = (
            sigmoid_focal_loss(
                cls, target, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="none"
            ).sum(-1)
            * valid
        )

        anchors_pos = all_anchors[None].expand(labels.shape[0], -1, -1)[pos]
        if self.bbox_reg_loss_type == "smooth_l1":
            target = self.box_coder.encode(anchors_pos, gt_boxes[pos])
            box = smooth_l1(reg[pos], target, self.smooth_l1_beta).sum(1)
        else:
            pred_boxes = self.box_coder.decode(reg[pos], anchors_pos)
            box = generalized_box_iou_loss(pred_boxes, gt_boxes[pos], reduction="none")

        sw = self.size_weighting
        if sw is not None:
            w = sw(gt_areas[pos]).to(focal.dtype)
            anchor_w = torch.ones_like(labels, dtype=focal.dtype)
            anchor_w[pos] = w
            focal = focal * anchor_w
            box = box * w
        if sw is not None and sw.normalize == "weight_sum":
            norm = all_reduce_mean(w.sum().detach())
        else:
            norm = all_reduce_mean(pos.sum().to(focal.dtype))
        norm = norm.clamp(min=1.0)
        return {"loss_cls": focal.sum() / norm, "loss_box_reg": box.sum() / norm}

    # ----------------------------------------------------------------- inference
    @torch.no_grad()
    def inference(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        """Per image: detections (boxes XYXY in the network input's pixels, scores, classes)."""
        k = self.num_classes
        results = []
        for i, (h, w) in enumerate(image_sizes):
            all_boxes, all_scores, all_classes = [], [], []
            for cls_l, reg_l, anc_l in zip(logits, deltas, anchors, strict=True):
                scores = torch.sigmoid(cls_l[i]).reshape(-1)  # (N_l·K)
                keep = select_candidates(scores, self.score_thresh, self.topk_candidates)
                anchor_idx, classes = keep // k, keep % k
                all_boxes.append(self.box_coder.decode(reg_l[i][anchor_idx], anc_l[anchor_idx]))
                all_scores.append(scores[keep])
                all_classes.append(classes)
            results.append(
                detections_after_nms(
                    torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_classes),
                    (h, w), self.nms_thresh, self.detections_per_image,
                )
            )  # fmt: skip
        return results
