"""YOLO-style training pipeline around any :class:`DatasetMapper`: mosaic, mixup, random
affine, HSV jitter, letterbox.

:class:`MosaicMapper` wraps a mapper and the training set's dataset dicts. For each image it
uses the wrapped mapper's stages (``load`` → own geometry → ``apply_augmentations`` →
``finish``), so intensity handling (e.g. the SAR dB stretch) and the mapper's own
augmentations (flips, SAR set, albumentations) stay those of the wrapped mapper:

1. **Mosaic** (probability ``mosaic_prob``): the image and three others drawn from the
   dataset are each resized so their longest side is ``size`` and placed around a random
   centre of a 2·size canvas; otherwise the image alone is resized the same way and centred on
   a size × size canvas (letterbox). The canvas is filled with ``pad_value``.
2. **Random affine**: rotation, scale, shear and translation about the canvas centre, output
   size × size; boxes are the extent of their transformed corners, clipped; boxes left with a
   side under 2 px, under 10 % of their scaled area or an aspect ratio over 100 are dropped.
3. **Mixup** (probability ``mixup_prob``): blended with a second image made by steps 1–2,
   ratio ~ Beta(32, 32), boxes of both kept.
4. **HSV jitter** on 3-channel images (random gains on hue, saturation and value);
   single-channel images are left alone.

Every draw comes from the ``rng`` the loader passes, so the pipeline is reproducible and
resumes exactly. Closing the mosaic for the last iterations is the loader's job
(:func:`detlab.data.build.build_detection_train_loader` switches to a copy with
``mosaic_prob = mixup_prob = 0`` from a given batch on).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from detlab.data.mappers.dataset_mapper import DatasetMapper
from detlab.data.transforms import letterbox_resize
from detlab.utils.errors import UserError

__all__ = ["MosaicMapper", "affine_boxes", "hsv_jitter", "random_affine_matrix"]


def random_affine_matrix(
    rng: np.random.Generator,
    in_size: tuple[int, int],
    out_size: int,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: Sequence[float] = (0.5, 1.5),
    shear: float = 0.0,
) -> tuple[np.ndarray, float]:
    """A 2×3 affine matrix mapping an ``in_size`` (h, w) canvas onto ``out_size``² and its scale.

    Composition: move the canvas centre to the origin, rotate and scale, shear, then move to
    ``out_size/2`` plus a random shift of up to ``translate·out_size``.
    """
    h, w = in_size
    c = np.eye(3)
    c[0, 2], c[1, 2] = -w / 2, -h / 2
    r = np.eye(3)
    angle = rng.uniform(-degrees, degrees)
    s = rng.uniform(scale[0], scale[1])
    r[:2] = cv2.getRotationMatrix2D((0, 0), angle, s)
    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))
    t = np.eye(3)
    t[0, 2] = (0.5 + rng.uniform(-translate, translate)) * out_size
    t[1, 2] = (0.5 + rng.uniform(-translate, translate)) * out_size
    return (t @ sh @ r @ c)[:2], float(s)


def affine_boxes(
    boxes: np.ndarray, matrix: np.ndarray, out_size: int, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Transform N×4 XYXY boxes by a 2×3 ``matrix``: (new boxes, kept mask over the input).

    A box becomes the extent of its four transformed corners, clipped to the output; it is
    kept when both sides are > 2 px, its area is > 10 % of its area before (times the
    scale²) and its aspect ratio is < 100.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, bool)
    corners = boxes[:, [0, 1, 2, 1, 2, 3, 0, 3]].reshape(n * 4, 2)
    xy = corners @ matrix[:, :2].T + matrix[:, 2]
    xy = xy.reshape(n, 4, 2)
    new = np.concatenate([xy.min(1), xy.max(1)], 1)
    new = np.clip(new, 0, out_size)
    w0, h0 = (boxes[:, 2] - boxes[:, 0]) * scale, (boxes[:, 3] - boxes[:, 1]) * scale
    w1, h1 = new[:, 2] - new[:, 0], new[:, 3] - new[:, 1]
    aspect = np.maximum(w1 / (h1 + 1e-16), h1 / (w1 + 1e-16))
    keep = (w1 > 2) & (h1 > 2) & (w1 * h1 / (w0 * h0 + 1e-16) > 0.1) & (aspect < 100)
    return new.astype(np.float32), keep


def hsv_jitter(img: np.ndarray, gains: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Random hue/saturation/value gains on an H×W×3 BGR image (uint8 or float32 0..1);
    other channel counts are returned unchanged."""
    if img.ndim != 3 or img.shape[2] != 3 or not any(gains):
        return img
    r = rng.uniform(-1, 1, 3) * np.asarray(gains, np.float64) + 1
    if img.dtype == np.uint8:
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        x = np.arange(256, dtype=np.float64)
        lut_h = ((x * r[0]) % 180).astype(np.uint8)
        lut_s = np.clip(x * r[1], 0, 255).astype(np.uint8)
        lut_v = np.clip(x * r[2], 0, 255).astype(np.uint8)
        hsv = cv2.merge(
            (cv2.LUT(hsv[..., 0], lut_h), cv2.LUT(hsv[..., 1], lut_s), cv2.LUT(hsv[..., 2], lut_v))
        )
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    hsv = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_BGR2HSV)  # H in 0..360
    hsv[..., 0] = (hsv[..., 0] * r[0]) % 360
    hsv[..., 1:] = np.clip(hsv[..., 1:] * r[1:], 0, 1)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


class MosaicMapper:
    """The pipeline of the module docstring around ``mapper`` (a :class:`DatasetMapper`).

    Args:
        mapper: the wrapped training mapper (its resize is replaced by steps 1–2).
        dataset_dicts: the training set; the extra mosaic and mixup images are drawn from it.
        size: side of the square output image, px.
        mosaic_prob, mixup_prob: probabilities of steps 1 and 3.
        degrees, translate, scale, shear: random affine ranges.
        hsv: (hue, saturation, value) gains of step 4.
        pad_value: canvas fill on the 0..255 scale.
    """

    def __init__(
        self,
        mapper: DatasetMapper,
        dataset_dicts: Sequence[dict],
        *,
        size: int = 640,
        mosaic_prob: float = 1.0,
        mixup_prob: float = 0.0,
        degrees: float = 0.0,
        translate: float = 0.1,
        scale: Sequence[float] = (0.5, 1.5),
        shear: float = 0.0,
        hsv: Sequence[float] = (0.0, 0.0, 0.0),
        pad_value: float = 114.0,
    ) -> None:
        if not isinstance(mapper, DatasetMapper):
            raise UserError(
                f"INPUT.MOSAIC needs a mapper derived from DatasetMapper, but "
                f"DATALOADER.MAPPER is {type(mapper).__name__}; disable INPUT.MOSAIC.ENABLED or "
                "derive the mapper from DatasetMapper."
            )
        if size < 32:
            raise UserError(f"INPUT.MOSAIC.SIZE is {size}; use a side of at least 32 px.")
        if len(scale) != 2 or not 0 < scale[0] <= scale[1]:
            raise UserError(f"INPUT.RANDOM_AFFINE.SCALE is {tuple(scale)}; give (min, max) > 0.")
        self.mapper, self.dicts = mapper, list(dataset_dicts)
        self.size = int(size)
        self.mosaic_prob, self.mixup_prob = float(mosaic_prob), float(mixup_prob)
        self.affine = {
            "degrees": float(degrees),
            "translate": float(translate),
            "scale": (float(scale[0]), float(scale[1])),
            "shear": float(shear),
        }
        self.hsv = tuple(float(g) for g in hsv)
        self.pad_value = float(pad_value)

    @classmethod
    def from_config(cls, cfg: Any, mapper: DatasetMapper, dataset_dicts: Sequence[dict]) -> dict:
        m, a = cfg.INPUT.MOSAIC, cfg.INPUT.RANDOM_AFFINE
        return {
            "mapper": mapper,
            "dataset_dicts": dataset_dicts,
            "size": m.SIZE,
            "mosaic_prob": m.PROB,
            "mixup_prob": m.MIXUP_PROB,
            "degrees": a.DEGREES,
            "translate": a.TRANSLATE,
            "scale": tuple(a.SCALE),
            "shear": a.SHEAR,
            "hsv": tuple(cfg.INPUT.HSV),
            "pad_value": m.PAD_VALUE,
        }

    def closed(self) -> MosaicMapper:
        """A copy without mosaic and mixup (for the last iterations of a schedule)."""
        out = copy.copy(self)
        out.mosaic_prob = out.mixup_prob = 0.0
        return out

    # -------------------------------------------------------------- steps
    def _load(self, d: dict, rng: np.random.Generator) -> dict | None:
        item = self.mapper.load(copy.copy(d), rng)
        if item is not None:
            item["image"], item["boxes"] = letterbox_resize(item["image"], item["boxes"], self.size)
        return item

    def _canvas(self, shape: tuple[int, int], like: np.ndarray) -> np.ndarray:
        fill = self.pad_value if like.dtype == np.uint8 else self.pad_value / 255.0
        return np.full((*shape, like.shape[2]), fill, like.dtype)

    def _mosaic(self, first: dict, rng: np.random.Generator):
        s = self.size
        items = [first]
        for _ in range(3):
            extra = None
            for _try in range(8):  # another image if one is unreadable
                extra = self._load(self.dicts[int(rng.integers(len(self.dicts)))], rng)
                if extra is not None:
                    break
            if extra is None:
                raise OSError("no readable image for the mosaic among 8 draws")
            items.append(extra)
        xc, yc = (int(rng.uniform(s / 2, 3 * s / 2)) for _ in range(2))
        canvas = self._canvas((2 * s, 2 * s), first["image"])
        boxes, labels = [], []
        for i, it in enumerate(items):
            img = it["image"]
            if img.shape[2] != canvas.shape[2] or img.dtype != canvas.dtype:
                img = _match(img, canvas)
            h, w = img.shape[:2]
            x0 = xc - w if i in (0, 2) else xc
            y0 = yc - h if i in (0, 1) else yc
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + w, 2 * s), min(y0 + h, 2 * s)
            canvas[cy0:cy1, cx0:cx1] = img[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            if len(it["boxes"]):
                b = it["boxes"] + np.array([x0, y0, x0, y0], np.float32)
                b = np.clip(b, [cx0, cy0, cx0, cy0], [cx1, cy1, cx1, cy1])  # the visible part
                boxes.append(b)
                labels.append(it["labels"])
        return canvas, _cat_boxes(boxes), _cat_labels(labels)

    def _single(self, item: dict):
        s = self.size
        img = item["image"]
        h, w = img.shape[:2]
        canvas = self._canvas((s, s), img)
        x0, y0 = (s - w) // 2, (s - h) // 2
        canvas[y0 : y0 + h, x0 : x0 + w] = img
        boxes = item["boxes"] + np.array([x0, y0, x0, y0], np.float32) if len(item["boxes"]) else (
            np.zeros((0, 4), np.float32))  # fmt: skip
        return canvas, boxes, item["labels"]

    def _one(self, item: dict, rng: np.random.Generator):
        if self.mosaic_prob > 0 and rng.random() < self.mosaic_prob:
            canvas, boxes, labels = self._mosaic(item, rng)
        else:
            canvas, boxes, labels = self._single(item)
        matrix, scale = random_affine_matrix(rng, canvas.shape[:2], self.size, **self.affine)
        fill = self.pad_value if canvas.dtype == np.uint8 else self.pad_value / 255.0
        img = cv2.warpAffine(
            canvas, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR,
            borderValue=(fill,) * 3,
        )  # fmt: skip
        if img.ndim == 2:
            img = img[:, :, None]
        boxes, keep = affine_boxes(boxes, matrix, self.size, scale)
        return img, boxes[keep], labels[keep]

    def __call__(self, dataset_dict: dict, rng: np.random.Generator) -> dict | None:
        """The MAPPER contract: ``dataset_dict`` → model input dict (or None when unreadable);
        every random draw comes from ``rng``."""
        item = self._load(dataset_dict, rng)
        if item is None:
            return None
        img, boxes, labels = self._one(item, rng)
        if self.mixup_prob > 0 and rng.random() < self.mixup_prob:
            other = None
            for _try in range(8):
                other = self._load(self.dicts[int(rng.integers(len(self.dicts)))], rng)
                if other is not None:
                    break
            if other is not None:
                img2, boxes2, labels2 = self._one(other, rng)
                img2 = _match(img2, img)
                r = rng.beta(32.0, 32.0)
                mixed = img.astype(np.float32) * r + img2.astype(np.float32) * (1 - r)
                img = mixed.astype(img.dtype) if img.dtype != np.uint8 else np.rint(mixed).astype(
                    np.uint8)  # fmt: skip
                boxes, labels = _cat_boxes([boxes, boxes2]), _cat_labels([labels, labels2])
        img = hsv_jitter(img, self.hsv, rng)
        img, boxes, labels = self.mapper.apply_augmentations(img, boxes, labels, rng)
        return self.mapper.finish(img, boxes, labels, dataset_dict, item["height"], item["width"])


def _match(img: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``img`` in ``like``'s channel count and dtype (mixed grey/colour or 8/16-bit sets)."""
    if img.shape[2] != like.shape[2]:
        img = np.repeat(img, 3, 2) if img.shape[2] == 1 else img.mean(2, keepdims=True).astype(
            img.dtype)  # fmt: skip
    if img.dtype != like.dtype:
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.rint(
            np.clip(img, 0, 1) * 255).astype(np.uint8)  # fmt: skip
    return img


def _cat_boxes(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p.reshape(-1, 4) for p in parts if len(p)]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 4), np.float32)


def _cat_labels(parts: list[np.ndarray]) -> np.ndarray:
    parts = [p.reshape(-1) for p in parts if len(p)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0,), np.int64)
