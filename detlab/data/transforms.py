"""Image reading, intensity scaling, resizing and albumentations pipelines for the mappers.

Images travel through the mappers as H×W×C arrays in one of albumentations' two conventions:
uint8 on 0..255 (fast: OpenCV's 8-bit paths) or float32 on 0..1 (full precision);
:func:`to_tensor` turns either into the float32 C×H×W tensor on a 0..255 scale.
"""

from __future__ import annotations

import logging
import os
import random
import warnings
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch

from detlab.utils.errors import UserError

__all__ = [
    "apply_albumentations",
    "build_albumentations",
    "build_transform",
    "choose_short_edge",
    "intensity_to_unit",
    "letterbox_resize",
    "read_image",
    "resize_shortest_edge",
    "sar_to_unit",
    "to_tensor",
]

logger = logging.getLogger(__name__)


def read_image(path: str) -> np.ndarray | None:
    """H×W×C array (uint8, uint16 or float32, C = 1 or 3, BGR order), or None if unreadable.

    8/16-bit PNG, TIFF, JPEG and anything else OpenCV decodes; 4-channel images lose alpha.
    """
    if not os.path.isfile(path):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        except cv2.error:
            img = None
    if img is None or img.size == 0:
        return None
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 2:
        img = img[:, :, :1]
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    return img


def intensity_to_unit(img: np.ndarray) -> np.ndarray:
    """Full-range scaling: uint8 stays uint8; uint16 → float32 / 65535; float → float32 0..1."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return img.astype(np.float32) * (1.0 / 65535.0)
    out = img.astype(np.float32)
    peak = float(out.max()) if out.size else 1.0
    if peak > 1.0:  # float data on a 0..255 (or other) scale
        out = out / (255.0 if peak <= 255.0 else peak)
    return np.clip(out, 0.0, 1.0)


_SCALINGS = ("db", "log", "linear", "none")


def _transfer(values: np.ndarray, scaling: str) -> np.ndarray:
    values = values.astype(np.float32)
    if scaling == "db":
        return 10.0 * np.log10(np.maximum(values, 1e-3))
    if scaling == "log":
        return np.log1p(np.maximum(values, 0.0))
    return values


def sar_to_unit(
    img: np.ndarray,
    scaling: str = "db",
    clip_percentiles: Sequence[float] = (1.0, 99.8),
    eight_bit: bool = False,
) -> np.ndarray:
    """SAR amplitude/intensity → float32 0..1 (or uint8 0..255 levels if ``eight_bit``).

    ``db`` maps x to 10·log10(x) (the factor 10 or 20 cancels in the stretch, so amplitude and
    intensity give the same picture); ``log`` to log(1 + x). Values between the low and high
    percentile of the image map linearly to 0..1, the rest is clipped. ``none`` is plain
    full-range scaling (:func:`intensity_to_unit`). Integer images go through a lookup table,
    which is what makes this fast on 16-bit data; ``eight_bit`` rounds the stretched values to
    256 levels (the rest of the pipeline then runs on uint8).
    """
    if scaling not in _SCALINGS:
        raise UserError(f"INPUT.SAR.SCALING must be one of {_SCALINGS}, got '{scaling}'.")
    if scaling == "none":
        return intensity_to_unit(img)
    lo_p, hi_p = float(clip_percentiles[0]), float(clip_percentiles[1])
    if img.dtype in (np.uint8, np.uint16):
        hist = np.bincount(img.ravel())  # length max(img) + 1: the lookup table's size
        cdf = np.cumsum(hist, dtype=np.float64)
        total = cdf[-1]
        lo_v = int(np.searchsorted(cdf, total * lo_p / 100.0, side="left"))
        hi_v = int(np.searchsorted(cdf, total * hi_p / 100.0, side="left"))
        lut = _transfer(np.arange(len(hist)), scaling)
        lo, hi = lut[lo_v], lut[max(hi_v, lo_v)]
        lut = np.clip((lut - lo) / max(hi - lo, 1e-6), 0.0, 1.0)
        lut = np.rint(lut * 255.0).astype(np.uint8) if eight_bit else lut.astype(np.float32)
        return np.take(lut, img)
    vals = _transfer(img, scaling)
    sample = vals[::2, ::2] if vals.size > 65536 else vals
    lo, hi = np.percentile(sample, [lo_p, hi_p])
    out = np.clip((vals - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0).astype(np.float32)
    return np.rint(out * 255.0).astype(np.uint8) if eight_bit else out


def to_tensor(img: np.ndarray, out_channels: int, image_format: str = "BGR") -> torch.Tensor:
    """H×W×C uint8 (0..255) or float32 (0..1) → float32 C×H×W tensor on a 0..255 scale.

    1 → 3 channels replicates; 3 → 1 averages; ``image_format="RGB"`` reverses BGR input.
    """
    if img.dtype not in (np.uint8, np.float32):
        img = img.astype(np.float32)
    c = img.shape[2]
    if out_channels == 1 and c == 3:
        scale = 1.0 if img.dtype == np.uint8 else 255.0
        img = img.mean(axis=2, keepdims=True, dtype=np.float32) * scale
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    if c == 3 and image_format == "RGB":
        img = img[:, :, ::-1]
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    t = t.to(torch.float32) if img.dtype == np.uint8 else t * 255.0
    if out_channels == 3 and c == 1:
        t = t.expand(3, -1, -1).contiguous()
    return t


def choose_short_edge(
    sizes: Sequence[int], sampling: str, rng: np.random.Generator | None = None
) -> int:
    """One shortest-edge size: ``choice`` among ``sizes`` or uniform in ``range`` [min, max]."""
    sizes = [int(s) for s in sizes]
    if rng is None:
        rng = np.random.default_rng()
    if sampling == "range" and len(sizes) >= 2:
        return int(rng.integers(min(sizes), max(sizes) + 1))
    if sampling not in ("choice", "range"):
        raise UserError(
            f"INPUT.MIN_SIZE_TRAIN_SAMPLING must be 'choice' or 'range', got '{sampling}'."
        )
    return sizes[int(rng.integers(len(sizes)))]


def resize_shortest_edge(
    img: np.ndarray, boxes: np.ndarray, short: int, max_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the short side is ``short`` and the long side at most ``max_size``.

    ``short <= 0`` keeps the size. Boxes (N×4 XYXY) are scaled by the same factors.
    """
    h, w = img.shape[:2]
    if short <= 0:
        return img, boxes
    scale = short / min(h, w)
    if max_size > 0 and max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return _rescale(img, boxes, scale)


def _rescale(img: np.ndarray, boxes: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize image and N×4 boxes by ``scale`` (area interpolation only for big shrinks)."""
    h, w = img.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return img, boxes
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR
    out = cv2.resize(img, (nw, nh), interpolation=interp)
    if out.ndim == 2:
        out = out[:, :, None]
    if len(boxes):
        boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    return out, boxes


def build_albumentations(specs: Sequence[Any], where: str = "INPUT.AUGMENTATIONS"):
    """An ``albumentations.Compose`` (bbox-aware, XYXY pixels) from ``[{name, **params}]``.

    ``name`` is any albumentations transform class (``HorizontalFlip``, ``Affine``, ...) or
    composition (``OneOf``, ``SomeOf``, ``Sequential``, whose ``transforms`` are specs too);
    the other keys are its constructor arguments. Returns None for an empty list.
    """
    import albumentations as A

    transforms = [build_transform(spec, i, where) for i, spec in enumerate(specs or [])]
    if not transforms:
        return None
    with warnings.catch_warnings():  # "no transform to process bboxes" for photometric lists
        warnings.simplefilter("ignore", UserWarning)
        return _compose(A, transforms)


def _compose(A, transforms):  # noqa: N803 - the albumentations module
    return A.Compose(
        transforms,
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            clip=True,
            min_width=1e-3,
            min_height=1e-3,
        ),
        strict=False,
    )


def build_transform(spec: Any, index: int = 0, where: str = "INPUT.AUGMENTATIONS"):
    """One albumentations transform from ``{name: ..., **params}``."""
    import albumentations as A

    if not isinstance(spec, dict) or "name" not in spec:
        raise UserError(f"{where}[{index}] must be a mapping with a 'name' key, got {spec!r}.")
    params = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "name"}
    name = str(spec["name"])
    if isinstance(spec.get("transforms"), (list, tuple)):  # OneOf, SomeOf, Sequential, ...
        params["transforms"] = [
            build_transform(t, j, f"{where}[{index}].transforms")
            for j, t in enumerate(spec["transforms"])
        ]
    cls = getattr(A, name, None)
    if not (isinstance(cls, type) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        from detlab.utils.registry import closest_matches

        names = [n for n in dir(A) if isinstance(getattr(A, n), type)]
        hint = closest_matches(name, names, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else "."
        raise UserError(f"{where}[{index}]: albumentations has no transform '{name}'{suggestion}")
    try:
        return cls(**params)
    except Exception as err:  # pydantic validation errors, TypeErrors on bad keywords
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"{where}[{index}] ({name}): invalid parameters ({first}).") from None


def apply_albumentations(
    compose, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``compose`` with randomness drawn from ``rng``; boxes N×4 XYXY, labels N."""
    if compose is None:
        return img, boxes, labels
    seed = int(rng.integers(2**63 - 1))
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
    h, w = img.shape[:2]
    boxes = np.clip(boxes, 0, [w, h, w, h]) if len(boxes) else np.zeros((0, 4), np.float32)
    out = compose(image=img, bboxes=boxes, labels=np.arange(len(labels)))
    new_img = out["image"]
    if new_img.ndim == 2:
        new_img = new_img[:, :, None]
    keep = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
    new_boxes = np.asarray(out["bboxes"], dtype=np.float64).reshape(-1, 4)[:, :4]
    # albumentations works in normalised coordinates: snap float noise (1e-4 px) away
    new_boxes = (np.round(new_boxes * 1024.0) / 1024.0).astype(np.float32)
    return new_img, new_boxes, labels[keep]


def letterbox_resize(
    img: np.ndarray, boxes: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resize so the longest side is ``size`` (aspect kept; ``size <= 0`` keeps the image).

    The letterbox's padding is added by whoever makes the canvas: the model pads the bottom and
    right to its size divisibility, the mosaic pipeline centres the image on a square.
    """
    h, w = img.shape[:2]
    if size <= 0 or max(h, w) == size:
        return img, boxes
    return _rescale(img, boxes, size / max(h, w))
