"""Box regression losses shared by the heads.

* :func:`smooth_l1`: element-wise smooth-L1 of box deltas (RPN, ROI box head, RetinaNet).
* :func:`iou_loss`: ``1 − IoU``-family of matched box pairs, from ``torchvision.ops``
  (``"giou"``: generalized, ``"ciou"``: complete, ``"diou"``: distance IoU).
* :func:`distribution_focal_loss`: DFL (Li et al. 2020, GFL): a box side's distance ``y``
  (in strides) is predicted as a distribution over the integer bins ``0..R-1``; the loss is
  the cross-entropy towards the two bins around ``y``, weighted by closeness:
  ``(⌈y⌉ − y)·CE(⌊y⌋) + (y − ⌊y⌋)·CE(⌈y⌉)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from detlab.utils.errors import UserError

__all__ = ["IOU_LOSSES", "distribution_focal_loss", "iou_loss", "smooth_l1"]

IOU_LOSSES = {
    "giou": generalized_box_iou_loss,
    "ciou": complete_box_iou_loss,
    "diou": distance_box_iou_loss,
}


def smooth_l1(x: torch.Tensor, y: torch.Tensor, beta: float) -> torch.Tensor:
    """Element-wise smooth-L1 loss with transition point ``beta`` (below 1e-5: plain L1),
    Detectron2's convention for ``SMOOTH_L1_BETA`` = 0."""
    if beta < 1e-5:
        return (x - y).abs()
    return F.smooth_l1_loss(x, y, beta=beta, reduction="none")


def iou_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "ciou") -> torch.Tensor:
    """Per-pair loss (N) of N×4 XYXY predicted and target boxes."""
    if kind not in IOU_LOSSES:
        raise UserError(f"MODEL.YOLO.IOU_LOSS is '{kind}'; use one of {sorted(IOU_LOSSES)}.")
    if pred.numel() == 0:
        return pred.new_zeros(0)
    return IOU_LOSSES[kind](pred.float(), target.float(), reduction="none", eps=1e-7)


def distribution_focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL per box (N): ``logits`` N×4×R over bins, ``target`` N×4 distances in bins.

    Targets are clamped to ``[0, R − 1 − 0.01]`` so both neighbouring bins exist.
    """
    r = logits.shape[-1]
    if logits.numel() == 0:
        return logits.new_zeros(0)
    y = target.float().clamp(0, r - 1 - 0.01)
    left = y.floor().long()
    w_right = y - left
    logp = F.log_softmax(logits.float(), dim=-1)
    ce_left = -logp.gather(-1, left[..., None])[..., 0]
    ce_right = -logp.gather(-1, (left + 1)[..., None])[..., 0]
    return ((1 - w_right) * ce_left + w_right * ce_right).mean(-1)
