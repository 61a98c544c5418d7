"""Region proposal network (Ren et al. 2015) over pyramid levels.

A shared 3×3 conv + ReLU, then per-anchor objectness logits and box deltas. Training labels
anchors by IoU (``MODEL.RPN.IOU_THRESHOLDS``, low-quality matches kept), samples
``BATCH_SIZE_PER_IMAGE`` anchors with ``POSITIVE_FRACTION`` positives, and sums BCE objectness
and smooth-L1 box losses over the sample divided by its size. Proposals: per-level top-k,
decode, clip, drop tiny boxes, NMS per level, keep the best ``POST_NMS_TOPK`` per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou, remove_small_boxes

from detlab.modeling.box_coding import BoxCoder, Matcher, subsample_labels
from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.modeling.heads.build import PROPOSAL_GENERATOR_REGISTRY
from detlab.modeling.heads.dense_outputs import per_anchor
from detlab.modeling.losses.box_losses import smooth_l1
from detlab.modeling.losses.size_weights import SizeWeighting, build_size_weighting
from detlab.structures import Instances, ShapeSpec
from detlab.utils.registry import instantiate

__all__ = ["RPN"]


@PROPOSAL_GENERATOR_REGISTRY.register()
class RPN(nn.Module):
    """Region proposal network. ``forward`` → (proposals per image, losses dict).

    Proposals are ``Instances`` with ``proposal_boxes`` (XYXY, input pixels) and
    ``objectness_logits``. See the module docstring for the training rule.
    """

    def __init__(
        self,
        in_channels: int,
        anchor_generator: AnchorGenerator,
        iou_thresholds: Sequence[float] = (0.3, 0.7),
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        bbox_reg_weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        smooth_l1_beta: float = 0.0,
        loss_weight: float = 1.0,
        pre_nms_topk: tuple[int, int] = (2000, 1000),
        post_nms_topk: tuple[int, int] = (1000, 1000),
        nms_thresh: float = 0.7,
        min_size: float = 0.0,
        size_weighting: SizeWeighting | None = None,
    ) -> None:
        super().__init__()
        a = anchor_generator.num_anchors
        self.anchor_generator = anchor_generator
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(in_channels, a, 1)
        self.anchor_deltas = nn.Conv2d(in_channels, 4 * a, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)
        self.matcher = Matcher(iou_thresholds, (0, -1, 1), allow_low_quality_matches=True)
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.smooth_l1_beta = smooth_l1_beta
        self.loss_weight = loss_weight
        self.pre_nms_topk, self.post_nms_topk = pre_nms_topk, post_nms_topk
        self.nms_thresh, self.min_size = nms_thresh, min_size
        self.size_weighting = size_weighting

    @classmethod
    def from_config(cls, cfg: Any, input_shape: dict[str, ShapeSpec]) -> dict[str, Any]:
        c = cfg.MODEL.RPN
        strides = [s.stride for s in input_shape.values()]
        anchors = instantiate(AnchorGenerator, cfg, strides)
        return {
            "in_channels": next(iter(input_shape.values())).channels,
            "anchor_generator": anchors,
            "iou_thresholds": tuple(c.IOU_THRESHOLDS),
            "batch_size_per_image": c.BATCH_SIZE_PER_IMAGE,
            "positive_fraction": c.POSITIVE_FRACTION,
            "bbox_reg_weights": tuple(c.BBOX_REG_WEIGHTS),
            "smooth_l1_beta": c.SMOOTH_L1_BETA,
            "loss_weight": c.LOSS_WEIGHT,
            "pre_nms_topk": (c.PRE_NMS_TOPK_TRAIN, c.PRE_NMS_TOPK_TEST),
            "post_nms_topk": (c.POST_NMS_TOPK_TRAIN, c.POST_NMS_TOPK_TEST),
            "nms_thresh": c.NMS_THRESH,
            "min_size": c.MIN_SIZE,
            "size_weighting": build_size_weighting(cfg) if c.SIZE_AWARE_LOSS else None,
        }

    def predict(self, features: Sequence[torch.Tensor]) -> tuple[list, list]:
        """Raw outputs per level: logits B×(H·W·A), deltas B×(H·W·A)×4."""
        logits, deltas = [], []
        for x in features:
            t = F.relu(self.conv(x))
            b = x.shape[0]
            logits.append(self.objectness_logits(t).permute(0, 2, 3, 1).reshape(b, -1))
            deltas.append(per_anchor(self.anchor_deltas(t), 4))
        return logits, deltas

    def forward(
        self,
        features: Sequence[torch.Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[Instances] | None = None,
    ) -> tuple[list[Instances], dict[str, torch.Tensor]]:
        logits, deltas = self.predict(features)
        anchors = self.anchor_generator([tuple(x.shape[-2:]) for x in features])
        losses = {}
        if self.training and targets is not None:
            losses = self.losses(torch.cat(logits, 1), torch.cat(deltas, 1), anchors, targets)
        proposals = self.find_top_proposals(logits, deltas, anchors, image_sizes)
        return proposals, losses

    def losses(
        self,
        logits: torch.Tensor,
        deltas: torch.Tensor,
        anchors: list[torch.Tensor],
        targets: list[Instances],
    ) -> dict[str, torch.Tensor]:
        """``loss_rpn_cls`` (BCE) and ``loss_rpn_loc`` (smooth L1) over the sampled anchors."""
        logits, deltas = logits.float(), deltas.float()  # fp32 losses under autocast
        all_anchors = torch.cat(anchors)
        cls_terms, loc_terms, norms = [], [], []
        for i, t in enumerate(targets):
            idx, labels = self.matcher(box_iou(t.boxes, all_anchors))
            pos, neg = subsample_labels(
                labels, self.batch_size_per_image, self.positive_fraction, bg_label=0
            )
            sampled = torch.cat([pos, neg])
            target = torch.zeros(sampled.numel(), device=logits.device)
            target[: pos.numel()] = 1.0
            w = torch.ones_like(target)
            if self.size_weighting is not None and pos.numel():
                w[: pos.numel()] = self.size_weighting(t.areas[idx[pos]])
            bce = F.binary_cross_entropy_with_logits(logits[i, sampled], target, reduction="none")
            cls_terms.append((bce * w).sum())
            if pos.numel():
                gt = self.box_coder.encode(all_anchors[pos], t.boxes[idx[pos]])
                loc = smooth_l1(deltas[i, pos], gt, self.smooth_l1_beta).sum(1)
                loc_terms.append((loc * w[: pos.numel()]).sum())
            norms.append(w.sum() if self._by_weight else float(sampled.numel()))
        norm = torch.as_tensor(sum(norms), dtype=logits.dtype).clamp(min=1.0)
        loc_sum = torch.stack(loc_terms).sum() if loc_terms else deltas.sum() * 0.0
        return {
            "loss_rpn_cls": self.loss_weight * torch.stack(cls_terms).sum() / norm,
            "loss_rpn_loc": self.loss_weight * loc_sum / norm,
        }

    @property
    def _by_weight(self) -> bool:
        return self.size_weighting is not None and self.size_weighting.normalize == "weight_sum"

    @torch.no_grad()
    def find_top_proposals(
        self,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        anchors: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[Instances]:
        """Per-level top-k → decode → clip → NMS per level → best ``post_nms_topk``."""
        mode = 0 if self.training else 1
        pre, post = self.pre_nms_topk[mode], self.post_nms_topk[mode]
        b = logits[0].shape[0]
        boxes_l, scores_l, levels_l = [], [], []
        for lvl, (lg, dl, an) in enumerate(zip(logits, deltas, anchors, strict=True)):
            k = min(pre, lg.shape[1])
            scores, idx = lg.topk(k, dim=1)  # B×k
            d = torch.gather(dl, 1, idx[..., None].expand(b, k, 4)).reshape(-1, 4)
            boxes = self.box_coder.decode(d, an[idx.reshape(-1)]).reshape(b, k, 4)
            boxes_l.append(boxes)
            scores_l.append(scores)
            levels_l.append(torch.full((k,), lvl, device=lg.device, dtype=torch.int64))
        all_boxes, all_scores = torch.cat(boxes_l, 1), torch.cat(scores_l, 1)
        levels = torch.cat(levels_l)
        out = []
        for i, (h, w) in enumerate(image_sizes):
            boxes, scores, lv = all_boxes[i], all_scores[i], levels
            finite = torch.isfinite(boxes).all(1) & torch.isfinite(scores)
            boxes, scores, lv = boxes[finite], scores[finite], lv[finite]
            boxes = torch.stack(
                [
                    boxes[:, 0].clamp(0, w),
                    boxes[:, 1].clamp(0, h),
                    boxes[:, 2].clamp(0, w),
                    boxes[:, 3].clamp(0, h),
                ],
                1,
            )
            keep = remove_small_boxes(boxes, max(self.min_size, 1e-3))
            boxes, scores, lv = boxes[keep], scores[keep], lv[keep]
            keep = batched_nms(boxes, scores, lv, self.nms_thresh)[:post]
            out.append(
                Instances((h, w), proposal_boxes=boxes[keep], objectness_logits=scores[keep])
            )
        return out
