"""Export-friendly views of detlab detectors: one image tensor in, detections out.

``FCOSExport``, ``RetinaNetExport``, ``YOLOExport`` and ``FasterRCNNExport`` reuse the
detector's own modules
(backbone, neck, heads, weights) and re-state only the inference glue in a form that traces
into a graph with dynamic image size: padding, per-level top-k with a size-dependent ``k``,
score threshold, box decoding, clipping and class-wise NMS (``torchvision.ops.batched_nms``,
exported as ONNX ``NonMaxSuppression``). The result is what the eager detector returns for
the same image.

Input: ``image`` 1×C×H×W float32 on the mapper's 0..255 scale (after the inference mapper's
resize; any H, W). Outputs: ``boxes`` N×4 XYXY in the input's pixels, ``scores`` N,
``classes`` N int64, best first, N ≤ detections per image.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, remove_small_boxes

from detlab.modeling.meta_arch.base import nonempty
from detlab.utils.errors import UserError

__all__ = [
    "FCOSExport",
    "FasterRCNNExport",
    "RetinaNetExport",
    "YOLOExport",
    "build_export_wrapper",
]


def _count(x: torch.Tensor) -> Any:
    """Length of dim 0: a traced 0-dim tensor while tracing (stays dynamic), else an int."""
    if torch.jit.is_tracing():
        return torch._shape_as_tensor(x)[0]
    return x.shape[0]


def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``min(k, len(scores))`` of a 1-D tensor, with a dynamic count while tracing."""
    n = _count(scores)
    kk = torch.clamp(n, max=k) if isinstance(n, torch.Tensor) else min(n, k)
    return scores.topk(kk)


class _ExportBase(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.size_divisibility = int(model.size_divisibility)

    def preprocess(self, image: torch.Tensor) -> tuple[torch.Tensor, Any, Any]:
        """Normalise and zero-pad to the size divisibility → (1×C×Hp×Wp, h, w)."""
        m = self.model
        x = (image - m.pixel_mean) / m.pixel_std
        h, w = image.shape[-2], image.shape[-1]
        d = self.size_divisibility
        x = F.pad(x, [0, (d - w % d) % d, 0, (d - h % d) % d])
        return x, h, w


class FCOSExport(_ExportBase):
    """Traceable FCOS inference; see the module docstring for inputs and outputs."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from detlab.modeling.heads.fcos_head import fcos_locations

        model, head = self.model, self.model.head
        x, h, w = self.preprocess(image)
        features = model.features(x)
        logits, deltas, ctrness = head.predict(features)
        shapes = [f.shape[-2:] for f in features]
        locations = fcos_locations(shapes, head.strides, x.device)
        k = head.num_classes
        boxes_l, scores_l, classes_l = [], [], []
        for cls_l, reg_l, ctr_l, loc in zip(logits, deltas, ctrness, locations, strict=True):
            scores = torch.sqrt(
                torch.sigmoid(cls_l[0]).reshape(k, -1).t() * torch.sigmoid(ctr_l[0]).reshape(-1, 1)
            ).reshape(-1)
            # Eager: candidates above the threshold, then the top-k of them. Same set: top-k
            # of all, then the threshold.
            top, idx = _topk(scores, head.topk_candidates)
            keep = top > head.score_thresh
            top, idx = top[keep], idx[keep]
            loc_idx, cls_idx = idx // k, idx % k
            ltrb = reg_l[0].reshape(4, -1).t()[loc_idx]
            pts = loc[loc_idx]
            boxes_l.append(torch.cat([pts - ltrb[:, :2], pts + ltrb[:, 2:]], dim=1))
            scores_l.append(top)
            classes_l.append(cls_idx)
        return _nms_clipped(
            torch.cat(boxes_l), torch.cat(scores_l), torch.cat(classes_l), head, h, w
        )


class RetinaNetExport(_ExportBase):
    """Traceable RetinaNet inference; see the module docstring for inputs and outputs."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model, head = self.model, self.model.head
        x, h, w = self.preprocess(image)
        features = model.features(x)
        logits, deltas = head.predict(features)
        anchors = head.anchor_generator([f.shape[-2:] for f in features])
        k = head.num_classes
        boxes_l, scores_l, classes_l = [], [], []
        for cls_l, reg_l, anc_l in zip(logits, deltas, anchors, strict=True):
            scores = torch.sigmoid(cls_l[0]).reshape(-1)
            # top-k of all, then the threshold: the same set as eager's threshold-then-top-k
            top, idx = _topk(scores, head.topk_candidates)
            keep = top > head.score_thresh
            top, idx = top[keep], idx[keep]
            anchor_idx, cls_idx = idx // k, idx % k
            boxes_l.append(head.box_coder.decode(reg_l[0][anchor_idx], anc_l[anchor_idx]))
            scores_l.append(top)
            classes_l.append(cls_idx)
        return _nms_clipped(
            torch.cat(boxes_l), torch.cat(scores_l), torch.cat(classes_l), head, h, w
        )


def _nms_clipped(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, head: Any, h: Any, w: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clip to the image, class-wise NMS, the head's best ``detections_per_image``."""
    boxes = torch.stack(
        [_clamp(boxes[:, 0], w), _clamp(boxes[:, 1], h), _clamp(boxes[:, 2], w),
         _clamp(boxes[:, 3], h)],
        dim=1,
    )  # fmt: skip
    keep = batched_nms(boxes, scores, classes, head.nms_thresh)[: head.detections_per_image]
    keep = keep[nonempty(boxes[keep])]  # as the eager postprocess
    return boxes[keep], scores[keep], classes[keep]


def _clamp(v: torch.Tensor, hi: Any) -> torch.Tensor:
    """Clamp to [0, hi] where ``hi`` may be a traced size."""
    if isinstance(hi, torch.Tensor):
        return torch.min(v.clamp(min=0), hi.to(v.dtype))
    return v.clamp(0, hi)


class FasterRCNNExport(_ExportBase):
    """Traceable Faster R-CNN inference (RPN proposals → RoIAlign → box head → NMS)."""

    def proposals(self, features: dict, h: Any, w: Any) -> torch.Tensor:
        """RPN on one image: per-level top-k, decode, clip, drop tiny boxes, NMS per level."""
        model = self.model
        rpn = model.proposal_generator
        feats = [features[n] for n in model.rpn_in_features]
        logits, deltas = rpn.predict(feats)
        anchors = rpn.anchor_generator([f.shape[-2:] for f in feats])
        pre, post = rpn.pre_nms_topk[1], rpn.post_nms_topk[1]
        boxes_l, scores_l, levels_l = [], [], []
        for lvl, (lg, dl, an) in enumerate(zip(logits, deltas, anchors, strict=True)):
            scores, idx = _topk(lg[0], pre)
            boxes = rpn.box_coder.decode(dl[0][idx], an[idx])
            boxes_l.append(boxes)
            scores_l.append(scores)
            levels_l.append(torch.full_like(idx, lvl))
        boxes, scores, levels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(levels_l)
        finite = torch.isfinite(boxes).all(1) & torch.isfinite(scores)
        boxes, scores, levels = boxes[finite], scores[finite], levels[finite]
        boxes = torch.stack(
            [_clamp(boxes[:, 0], w), _clamp(boxes[:, 1], h), _clamp(boxes[:, 2], w),
             _clamp(boxes[:, 3], h)],
            dim=1,
        )  # fmt: skip
        keep = remove_small_boxes(boxes, max(rpn.min_size, 1e-3))
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, rpn.nms_thresh)[:post]
        return boxes[keep]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model = self.model
        roi = model.roi_heads
        x, h, w = self.preprocess(image)
        features = model.neck(model.backbone(x))
        proposals = self.proposals(features, h, w)
        feats = {n: features[n] for n in roi.in_features}
        fh, fw = next(iter(feats.values())).shape[-2:]
        padded = (fh * roi.in_strides[0], fw * roi.in_strides[0])
        logits, deltas = roi.predict(feats, [proposals], padded)
        k = roi.num_classes
        probs = F.softmax(logits, dim=-1)[:, :k]
        boxes = roi.box_coder.decode(deltas, proposals)
        boxes = boxes.reshape(-1, 1 if roi.cls_agnostic else k, 4).expand(-1, k, 4)
        boxes = torch.stack(
            [_clamp(boxes[..., 0], w), _clamp(boxes[..., 1], h), _clamp(boxes[..., 2], w),
             _clamp(boxes[..., 3], h)],
            dim=-1,
        )  # fmt: skip
        mask = (probs > roi.score_thresh) & torch.isfinite(boxes).all(-1)
        idx = torch.nonzero(mask)
        b, s, c = boxes[idx[:, 0], idx[:, 1]], probs[idx[:, 0], idx[:, 1]], idx[:, 1]
        keep = batched_nms(b, s, c, roi.nms_thresh)[: roi.detections_per_image]
        keep = keep[nonempty(b[keep])]  # as the eager postprocess
        return b[keep], s[keep], c[keep]


class YOLOExport(_ExportBase):
    """Traceable YOLO-family inference: one top-k over all (anchor, class) scores, threshold,
    DFL decoding of the kept anchors, clipping, class-wise NMS."""

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from detlab.modeling.heads.yolo_head import anchor_points

        model, head = self.model, self.model.head
        x, h, w = self.preprocess(image)
        features = model.features(x)
        logits, bins = head.predict(features)
        points, strides = anchor_points([f.shape[-2:] for f in features], head.strides, x.device)
        k = head.num_classes
        scores = logits[0].sigmoid().reshape(-1)
        top, idx = _topk(scores, head.topk_candidates)
        keep = top > head.score_thresh
        top, idx = top[keep], idx[keep]
        anchor, classes = idx // k, idx % k
        dist = head.distances(bins[0][anchor])
        boxes = head.decode(dist, points[anchor], strides[anchor])
        return _nms_clipped(boxes, top, classes, head, h, w)


_WRAPPERS = {
    "YOLO": YOLOExport,
    "RetinaNet": RetinaNetExport,
    "FCOS": FCOSExport,
    "FasterRCNN": FasterRCNNExport,
}


def build_export_wrapper(model: nn.Module) -> nn.Module:
    """The export view of a detlab detector (FCOS, RetinaNet, YOLO or FasterRCNN), in eval
    mode: that of the nearest class in the model's class hierarchy."""
    for t in type(model).__mro__:
        if t.__name__ in _WRAPPERS:
            return _WRAPPERS[t.__name__](model).eval()
    raise UserError(
        f"ONNX export supports the meta-architectures {sorted(_WRAPPERS)}, not "
        f"{type(model).__name__}; add an export wrapper in detlab/export/wrappers.py."
    )
