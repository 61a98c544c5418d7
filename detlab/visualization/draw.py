"""Drawing boxes on images: one colour per class, SAR display scaling, labels with scores.

Used by ``tools/visualize.py`` (PNG files) and by the trainer's TensorBoard sample images, so
both show the same picture. Conventions: ground truth is drawn with solid lines, predictions
with dashed lines and their score in the label; each class has its own colour
(:func:`class_colors`), unless a fixed colour is given. Images are H×W×3 uint8 **RGB** arrays;
boxes are N×4 XYXY in the image's pixels. No torch needed except in :func:`draw_on_tensor`.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "class_colors",
    "draw_boxes",
    "draw_instances",
    "draw_on_tensor",
    "to_display_image",
]

Color = tuple[int, int, int]
_SCALINGS = ("auto", "db", "log", "linear", "none", "minmax")


def class_colors(num_classes: int) -> list[Color]:
    """``num_classes`` well-separated saturated RGB colours (golden-ratio hue steps)."""
    out = []
    for k in range(max(int(num_classes), 0)):
        hue = (0.0 + k * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.9, 1.0 if k % 2 == 0 else 0.85)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def to_display_image(
    image: np.ndarray,
    scaling: str = "auto",
    clip_percentiles: Sequence[float] = (1.0, 99.8),
    bgr: bool = True,
) -> np.ndarray:
    """Any H×W[×C] image (uint8, uint16, float) → H×W×3 uint8 RGB for display.

    ``scaling``: ``auto`` shows uint8 as is, single-channel 16-bit/float data as SAR
    (``db``) and other 16-bit/float data with a ``linear`` percentile stretch; ``db`` / ``log``
    / ``linear`` transfer the values and stretch between the given percentiles (like
    ``INPUT.SAR.SCALING``); ``none`` is full-range scaling by dtype; ``minmax`` stretches the
    image's own min..max. ``bgr``: 3-channel input is in OpenCV's BGR order.
    """
    from detlab.data.transforms import intensity_to_unit, sar_to_unit

    if scaling not in _SCALINGS:
        raise ValueError(f"scaling must be one of {_SCALINGS}, got '{scaling}'")
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] > 3:
        img = img[:, :, :3]
    channels = img.shape[2]
    if scaling == "auto":
        if img.dtype == np.uint8:
            scaling = "none"
        else:
            scaling = "db" if channels == 1 else "linear"
    if scaling == "minmax":
        f = img.astype(np.float32)
        lo, hi = float(f.min()), float(f.max())
        unit = (f - lo) / max(hi - lo, 1e-6)
    elif scaling == "none":
        unit = intensity_to_unit(img)
    else:
        unit = np.stack(
            [sar_to_unit(img[:, :, c], scaling, clip_percentiles) for c in range(channels)], -1
        )
    out = np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8).reshape(img.shape)
    if channels == 1:
        out = np.repeat(out, 3, axis=2)
    elif channels == 2:
        out = np.concatenate([out, out[:, :, :1]], axis=2)
    elif bgr:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def _dashed_line(img: np.ndarray, p0, p1, color: Color, thickness: int, dash: int, gap: int):
    x0, y0 = p0
    x1, y1 = p1
    length = max(abs(x1 - x0), abs(y1 - y0))
    if length == 0:
        cv2.line(img, p0, p1, color, thickness)
        return
    step = dash + gap
    for s in range(0, length + 1, step):
        e = min(s + dash - 1, length)
        a = (round(x0 + (x1 - x0) * s / length), round(y0 + (y1 - y0) * s / length))
        b = (round(x0 + (x1 - x0) * e / length), round(y0 + (y1 - y0) * e / length))
        cv2.line(img, a, b, color, thickness)


def _text_color(color: Color) -> Color:
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def draw_boxes(
    image: np.ndarray,
    boxes: Any,
    classes: Any = None,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    color: Color | None = None,
    colors: Sequence[Color] | None = None,
    thickness: int = 1,
    dashed: bool = False,
    labels: bool = True,
) -> np.ndarray:
    """Draw boxes on a copy of an H×W×3 uint8 RGB ``image`` and return it.

    Args:
        boxes: N×4 XYXY (pixels of ``image``); numpy arrays, lists or tensors.
        classes: N contiguous class ids (colour and label); None = all class 0.
        scores: N scores, shown in the label when given.
        class_names: names for the labels (else the id).
        color: one fixed colour for every box (overrides the per-class colours).
        colors: per-class colour table (default :func:`class_colors`).
        dashed: dashed outlines (predictions) instead of solid ones (ground truth).
        labels: write "name [score]" above each box.
    """
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    b = np.asarray(_numpy(boxes), dtype=np.float64).reshape(-1, 4)
    n = len(b)
    cls = np.zeros(n, np.int64) if classes is None else np.asarray(_numpy(classes)).reshape(-1)
    sc = None if scores is None else np.asarray(_numpy(scores), dtype=np.float64).reshape(-1)
    num = max(len(class_names or ()), int(cls.max()) + 1 if n else 0, 1)
    table = list(colors) if colors else class_colors(num)
    h, w = canvas.shape[:2]
    for i in range(n):
        if not np.isfinite(b[i]).all():
            continue
        c = int(cls[i])
        col = tuple(int(v) for v in (color or table[c % len(table)]))
        x0, y0 = int(np.floor(b[i, 0])), int(np.floor(b[i, 1]))
        x1, y1 = int(np.ceil(b[i, 2])) - 1, int(np.ceil(b[i, 3])) - 1
        x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
        x1, y1 = min(max(x1, x0), w - 1), min(max(y1, y0), h - 1)
        if dashed:
            corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
            for k in range(4):
                _dashed_line(canvas, corners[k], corners[(k + 1) % 4], col, thickness, 3, 2)
        else:
            cv2.rectangle(canvas, (x0, y0), (x1, y1), col, thickness)
        if labels:
            name = class_names[c] if class_names and 0 <= c < len(class_names) else str(c)
            text = name if sc is None else f"{name} {sc[i]:.2f}"
            _label(canvas, text, x0, y0, y1, col)
    return canvas


def _label(canvas: np.ndarray, text: str, x: int, y0: int, y1: int, color: Color) -> None:
    """Label above the box; below it when there is no room above; else inside."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    (tw, th), base = cv2.getTextSize(text, font, scale, 1)
    top = y0 - th - base - 1
    if top < 0:
        top = y1 + 2 if y1 + 2 + th + base < canvas.shape[0] else y0 + 2
    cv2.rectangle(canvas, (x, top), (x + tw + 1, top + th + base), color, -1)
    cv2.putText(canvas, text, (x + 1, top + th), font, scale, _text_color(color), 1, cv2.LINE_AA)


def draw_instances(
    image: np.ndarray,
    gt_boxes: Any = None,
    gt_classes: Any = None,
    pred_boxes: Any = None,
    pred_classes: Any = None,
    pred_scores: Any = None,
    class_names: Sequence[str] | None = None,
    score_thresh: float = 0.0,
    gt_color: Color | None = None,
    pred_color: Color | None = None,
    thickness: int = 1,
    labels: bool = True,
) -> np.ndarray:
    """Ground truth (solid) and predictions (dashed, score ≥ ``score_thresh``) on ``image``.

    ``image`` is an H×W×3 uint8 RGB array (see :func:`to_display_image`); returns a new one.
    """
    num = len(class_names) if class_names else None
    out = np.asarray(image)
    if gt_boxes is not None:
        out = draw_boxes(
            out, gt_boxes, gt_classes, None, class_names, gt_color,
            class_colors(num) if num else None, thickness, False, labels,
        )  # fmt: skip
    if pred_boxes is not None:
        keep = slice(None)
        if pred_scores is not None:
            keep = np.asarray(_numpy(pred_scores)).reshape(-1) >= score_thresh
        pb = np.asarray(_numpy(pred_boxes)).reshape(-1, 4)[keep]
        pc = None if pred_classes is None else np.asarray(_numpy(pred_classes)).reshape(-1)[keep]
        ps = None if pred_scores is None else np.asarray(_numpy(pred_scores)).reshape(-1)[keep]
        out = draw_boxes(
            out, pb, pc, ps, class_names, pred_color,
            class_colors(num) if num else None, thickness, True, labels,
        )  # fmt: skip
    return out


def draw_on_tensor(image: Any, **kwargs: Any) -> Any:
    """TensorBoard helper: a C×H×W float tensor (mapper output, 0..255 scale, BGR or grey)
    → 3×H×W uint8 tensor with :func:`draw_instances` applied (min-max display stretch)."""
    import torch

    arr = image.detach().float().cpu().permute(1, 2, 0).numpy()
    rgb = to_display_image(arr, scaling="minmax", bgr=True)
    drawn = draw_instances(rgb, **kwargs)
    return torch.from_numpy(np.ascontiguousarray(drawn)).permute(2, 0, 1).contiguous()


def _numpy(x: Any) -> Any:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return x
