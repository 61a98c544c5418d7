"""Dynamic label assignment for anchor-free dense heads: task-aligned (TOOD) and SimOTA (YOLOX).

Both take, for a batch padded to G ground-truth boxes per image:

* ``scores`` B×A×K predicted class probabilities (detached), ``boxes`` B×A×4 predicted boxes
  (XYXY input pixels, detached), ``points`` A×2 anchor centres and ``strides`` A (pixels);
* ``gt_boxes`` B×G×4, ``gt_classes`` B×G (int64), ``gt_valid`` B×G (bool, False = padding),

and return an :class:`Assignment`: ``fg`` B×A (bool), ``gt_index`` B×A (assigned box index,
0 where not foreground) and ``target_scores`` B×A×K (soft classification targets: zero for
background, the quality of the match at the assigned class for foreground).

Ties (equal metrics or costs) are broken towards the lower anchor index, so the result is a
deterministic function of the inputs and can be compared with a per-image loop.

Assigners are registered in :data:`ASSIGNER_REGISTRY` (``MODEL.YOLO.ASSIGNER`` names one) and
built from the config like every other component.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from detlab.utils.errors import ContractError
from detlab.utils.registry import Registry

__all__ = [
    "ASSIGNER_REGISTRY",
    "Assignment",
    "SimOTAAssigner",
    "TaskAlignedAssigner",
    "build_assigner",
    "pairwise_iou",
]

EPS = 1e-9


@dataclass
class Assignment:
    """Result of an assigner; see the module docstring for shapes."""

    fg: torch.Tensor
    gt_index: torch.Tensor
    target_scores: torch.Tensor


def _check_assigner(component: Any, label: str, *_: Any) -> None:
    """The ASSIGNER contract's call shape (seven tensors in, an :class:`Assignment` out)."""
    try:
        inspect.signature(component).bind(*range(7))
    except TypeError:
        raise ContractError(
            f"{label} breaks its contract: it cannot be called as assigner(scores, boxes, "
            "points, strides, gt_boxes, gt_classes, gt_valid)."
        ) from None
    except ValueError:  # no introspectable signature: trust it
        pass


ASSIGNER_REGISTRY = Registry(
    "ASSIGNER",
    doc="""Label assigners of anchor-free dense heads, selected by ``MODEL.YOLO.ASSIGNER``.

Contract (the call shape is checked when built):

* registered: a class whose ``from_config(cfg) -> dict`` returns its constructor's keyword
  arguments;
* ``assigner(scores, boxes, points, strides, gt_boxes, gt_classes, gt_valid) -> Assignment``
  with the shapes of :mod:`detlab.modeling.heads.assigners` (inputs detached; no gradient);
  ties broken towards the lower anchor index, so the result is a function of the inputs.
""",
    check=_check_assigner,
)


def pairwise_iou(gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """IoU of every ground truth with every prediction, per image: B×G×4, B×A×4 → B×G×A."""
    g, p = gt[:, :, None, :], pred[:, None, :, :]
    wh = (torch.min(g[..., 2:], p[..., 2:]) - torch.max(g[..., :2], p[..., :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_g = (g[..., 2] - g[..., 0]).clamp(min=0) * (g[..., 3] - g[..., 1]).clamp(min=0)
    area_p = (p[..., 2] - p[..., 0]).clamp(min=0) * (p[..., 3] - p[..., 1]).clamp(min=0)
    return inter / (area_g + area_p - inter + EPS)


def points_in_boxes(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Whether each point lies strictly inside each box: A×2, B×G×4 → B×G×A (bool)."""
    x, y = points[:, 0], points[:, 1]
    b = boxes[..., None, :]
    d = torch.stack([x - b[..., 0], y - b[..., 1], b[..., 2] - x, b[..., 3] - y], -1)
    return d.amin(-1) > EPS


def _first_k(values: torch.Tensor, k: torch.Tensor | int, descending: bool) -> torch.Tensor:
    """Mask of the first ``k`` (per row; ``k`` broadcasts over the last dim) entries of
    ``values`` ordered along the last dim, ties in index order (stable sort)."""
    order = torch.sort(values, dim=-1, descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    ar = torch.arange(values.shape[-1], device=values.device).expand_as(order)
    rank.scatter_(-1, order, ar)
    k = torch.as_tensor(k, device=values.device)
    return rank < (k[..., None] if k.dim() else k)


@ASSIGNER_REGISTRY.register()
class TaskAlignedAssigner:
    """Task-aligned assignment (Feng et al. 2021, TOOD; as in YOLOv8).

    Candidates of a box are the anchors whose centre lies inside it. Their alignment metric
    is ``t = s^alpha · u^beta`` (s: predicted probability of the box's class, u: IoU of the
    predicted box with it); the ``topk`` candidates with the largest ``t`` become positives. An
    anchor positive for several boxes keeps the one it overlaps most. The classification
    target at the assigned class is ``t`` rescaled per box so that its best positive gets that
    box's largest IoU among its positives.
    """

    def __init__(self, topk: int = 10, alpha: float = 0.5, beta: float = 6.0) -> None:
        self.topk, self.alpha, self.beta = int(topk), float(alpha), float(beta)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.YOLO.TAL
        return {"topk": c.TOPK, "alpha": c.ALPHA, "beta": c.BETA}

    @torch.no_grad()
    def __call__(
        self,
        scores: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        strides: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_classes: torch.Tensor,
        gt_valid: torch.Tensor,
    ) -> Assignment:
        b, a, k = scores.shape
        if gt_boxes.shape[1] == 0:
            return _empty(b, a, k, scores)
        inside = points_in_boxes(points, gt_boxes) & gt_valid[..., None]  # B×G×A
        iou = pairwise_iou(gt_boxes, boxes) * inside
        cls = gt_classes.clamp(0, k - 1)
        s = torch.gather(scores.transpose(1, 2), 1, cls[..., None].expand(-1, -1, a))  # B×G×A
        metric = s.pow(self.alpha) * iou.pow(self.beta) * inside
        # top-k by metric among each box's candidates (non-candidates sort last)
        ranked = torch.where(inside, metric, torch.full_like(metric, -1.0))
        pos = _first_k(ranked, self.topk, descending=True) & inside  # B×G×A
        pos = _one_box_per_anchor(pos, iou)  # the box it overlaps most
        metric = metric * pos
        norm = metric.amax(-1, keepdim=True)  # B×G×1
        best_iou = (iou * pos).amax(-1, keepdim=True)
        return _assignment(pos, cls, metric * best_iou / (norm + EPS), k)


@ASSIGNER_REGISTRY.register()
class SimOTAAssigner:
    """SimOTA (Ge et al. 2021, YOLOX) without an objectness branch.

    Candidates: anchors whose centre lies inside any box or within ``center_radius`` strides
    of its centre. For each box the cost of a candidate is
    ``BCE(p, onehot) + iou_weight · (−log IoU) + 1e5 · [not inside both box and centre
    region]`` (p: predicted class probabilities), and the box takes its ``k`` cheapest
    candidates, ``k = max(1, floor(sum of its topk_iou largest IoUs))``. An anchor taken by
    several boxes keeps the cheapest. The classification target is the IoU of the predicted
    box with the assigned box.
    """

    def __init__(
        self, center_radius: float = 2.5, topk_iou: int = 10, iou_weight: float = 3.0
    ) -> None:
        self.center_radius = float(center_radius)
        self.topk_iou, self.iou_weight = int(topk_iou), float(iou_weight)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.YOLO.SIMOTA
        return {"center_radius": c.CENTER_RADIUS, "topk_iou": c.TOPK_IOU,
                "iou_weight": c.IOU_WEIGHT}  # fmt: skip

    @torch.no_grad()
    def __call__(
        self,
        scores: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        strides: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_classes: torch.Tensor,
        gt_valid: torch.Tensor,
    ) -> Assignment:
        b, a, k = scores.shape
        if gt_boxes.shape[1] == 0:
            return _empty(b, a, k, scores)
        in_box = points_in_boxes(points, gt_boxes)
        ctr = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
        r = self.center_radius * strides
        ctr_boxes = torch.cat([ctr[..., None, :] - r[:, None], ctr[..., None, :] + r[:, None]], -1)
        px, py = points[:, 0], points[:, 1]
        in_ctr = (
            (px > ctr_boxes[..., 0])
            & (py > ctr_boxes[..., 1])
            & (px < ctr_boxes[..., 2])
            & (py < ctr_boxes[..., 3])
        )
        in_box, in_ctr = in_box & gt_valid[..., None], in_ctr & gt_valid[..., None]
        cand = (in_box | in_ctr).any(1)  # B×A: candidates of any box
        iou = pairwise_iou(gt_boxes, boxes) * cand[:, None, :]
        cls = gt_classes.clamp(0, k - 1)
        p = scores.clamp(1e-6, 1 - 1e-6)
        neg = -torch.log1p(-p).sum(-1)  # B×A: BCE of every class against 0
        pick = torch.gather(p.transpose(1, 2), 1, cls[..., None].expand(-1, -1, a))  # B×G×A
        cls_cost = neg[:, None, :] + torch.log1p(-pick) - torch.log(pick)
        cost = cls_cost + self.iou_weight * -torch.log(iou + 1e-8)
        cost = cost + 1e5 * (~(in_box & in_ctr))
        valid = cand[:, None, :] & gt_valid[..., None]
        cost = torch.where(valid, cost, torch.full_like(cost, float("inf")))
        n = min(self.topk_iou, a)
        dyn_k = iou.topk(n, dim=-1).values.sum(-1).int().clamp(min=1)  # B×G
        take = _first_k(cost, dyn_k, descending=False) & valid
        take = _one_box_per_anchor(take, -cost)  # the cheapest box
        return _assignment(take, cls, iou, k)


def _one_box_per_anchor(pos: torch.Tensor, preference: torch.Tensor) -> torch.Tensor:
    """``pos`` (B×G×A) with each anchor kept only for its most preferred box (largest
    ``preference``, ties to the lower box index) where several boxes took it."""
    many = pos.sum(1) > 1  # B×A
    if not many.any():
        return pos
    best = torch.where(pos, preference, torch.full_like(preference, -float("inf"))).argmax(1)
    one = F.one_hot(best, pos.shape[1]).transpose(1, 2).bool()
    return torch.where(many[:, None, :], one & pos, pos)


def _assignment(pos: torch.Tensor, cls: torch.Tensor, quality: torch.Tensor, k: int) -> Assignment:
    """The :class:`Assignment` of a one-box-per-anchor ``pos`` (B×G×A): each foreground
    anchor's target is its pair's ``quality`` (B×G×A, >= 0) at the box's class ``cls`` (B×G)."""
    fg = pos.any(1)
    gt_index = pos.float().argmax(1)
    labels = torch.gather(cls, 1, gt_index)
    q = (quality * pos).amax(1)  # B×A: the assigned pair's value (one per anchor)
    target = F.one_hot(labels, k).to(quality.dtype) * (q * fg)[..., None]
    return Assignment(fg, gt_index * fg, target)


def _empty(b: int, a: int, k: int, like: torch.Tensor) -> Assignment:
    fg = torch.zeros(b, a, dtype=torch.bool, device=like.device)
    return Assignment(fg, torch.zeros(b, a, dtype=torch.int64, device=like.device),
                      like.new_zeros(b, a, k))  # fmt: skip


# The config's short names: MODEL.YOLO.ASSIGNER "TAL" | "SimOTA" (class names work too).
ASSIGNER_REGISTRY._do_register("TAL", TaskAlignedAssigner)
ASSIGNER_REGISTRY._do_register("SimOTA", SimOTAAssigner)


def build_assigner(name: str, **kwargs: Any) -> Callable[..., Assignment]:
    """The assigner registered as ``name`` (``"TAL"``, ``"SimOTA"``) from keyword arguments
    (no config); an unknown name is one sentence listing the registered ones."""
    return ASSIGNER_REGISTRY.get(name)(**kwargs)
