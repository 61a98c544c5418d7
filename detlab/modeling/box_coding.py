"""Box regression coding, IoU matching and balanced sampling for anchor/RoI-based heads.

``BoxCoder`` encodes a target box relative to a reference box as (dx, dy, dw, dh) scaled by
per-coordinate weights (R-CNN parameterisation). ``Matcher`` labels each reference box by its
best ground-truth IoU; ``subsample_labels`` draws a fixed-size, fixed-positive-fraction sample.
IoUs come from ``torchvision.ops.box_iou``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["BoxCoder", "Matcher", "subsample_labels"]

_DEFAULT_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """R-CNN box deltas: dx = wx·(x − xa)/wa, dw = ww·log(w / wa), ... (XYXY in and out)."""

    def __init__(
        self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0), scale_clamp: float = _DEFAULT_CLAMP
    ) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Deltas N×4 that turn reference boxes ``src`` (N×4) into ``dst`` (N×4)."""
        wx, wy, ww, wh = self.weights
        sw, sh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
        sx, sy = src[:, 0] + 0.5 * sw, src[:, 1] + 0.5 * sh
        dw, dh = dst[:, 2] - dst[:, 0], dst[:, 3] - dst[:, 1]
        dx, dy = dst[:, 0] + 0.5 * dw, dst[:, 1] + 0.5 * dh
        return torch.stack(
            [
                wx * (dx - sx) / sw,
                wy * (dy - sy) / sh,
                ww * torch.log(dw / sw),
                wh * torch.log(dh / sh),
            ],
            dim=1,
        )

    def decode(self, deltas: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Apply deltas N×(4k) to reference boxes N×4 → boxes N×(4k)."""
        boxes = boxes.to(deltas.dtype)
        wx, wy, ww, wh = self.weights
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
        # Strided slices, not a reshape: works for 0 rows, also in an exported ONNX graph.
        dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
        dw = (deltas[:, 2::4] / ww).clamp(max=self.scale_clamp)
        dh = (deltas[:, 3::4] / wh).clamp(max=self.scale_clamp)
        pcx, pcy = dx * w[:, None] + cx[:, None], dy * h[:, None] + cy[:, None]
        pw, ph = torch.exp(dw) * w[:, None], torch.exp(dh) * h[:, None]
        out = torch.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], -1)
        return out.flatten(1)


class Matcher:
    """Assign each reference box its best ground truth by IoU and a label.

    Args:
        thresholds: ascending IoU cut points, e.g. ``(0.3, 0.7)``.
        labels: one label per interval (len(thresholds) + 1), e.g. ``(0, -1, 1)`` for
            background / ignore / foreground.
        allow_low_quality_matches: also mark foreground, for each ground truth, the reference
            boxes with its highest IoU (so every object gets at least one positive).
    """

    def __init__(
        self,
        thresholds: Sequence[float],
        labels: Sequence[int],
        allow_low_quality_matches: bool = False,
    ) -> None:
        if len(labels) != len(thresholds) + 1:
            raise ValueError("Matcher needs one more label than thresholds")
        self.thresholds = [-float("inf"), *[float(t) for t in thresholds], float("inf")]
        self.labels = list(labels)
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``iou``: G×N → (matched gt index N, label N)."""
        n = iou.shape[1]
        if iou.shape[0] == 0:
            idx = iou.new_zeros(n, dtype=torch.int64)
            return idx, iou.new_full((n,), self.labels[0], dtype=torch.int8)
        best, idx = iou.max(dim=0)
        labels = torch.empty(n, dtype=torch.int8, device=iou.device)
        for lo, hi, lab in zip(self.thresholds[:-1], self.thresholds[1:], self.labels, strict=True):
            labels[(best >= lo) & (best < hi)] = lab
        if self.allow_low_quality_matches:
            per_gt = iou.max(dim=1, keepdim=True).values
            hit = ((iou == per_gt) & (per_gt > 0)).any(dim=0)
            labels[hit] = self.labels[-1]
        return idx, labels


def subsample_labels(
    labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positive (``0 <= label != bg_label``) and negative (``== bg_label``) indices.

    At most ``num_samples · positive_fraction`` positives; negatives fill the rest.
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label)).squeeze(1)
    negative = torch.nonzero(labels == bg_label).squeeze(1)
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm1 = torch.randperm(positive.numel(), device=labels.device)[:num_pos]
    perm2 = torch.randperm(negative.numel(), device=labels.device)[:num_neg]
    return positive[perm1], negative[perm2]
