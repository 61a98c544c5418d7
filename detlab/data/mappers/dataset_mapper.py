"""``DatasetMapper``: read an image, augment it with its boxes, return the model input.

Output (one image): ``image`` float32 C×H×W on a 0..255 scale, ``instances``
(:class:`~detlab.structures.Instances` of the augmented size with ``boxes`` N×4 XYXY float32
and ``classes`` N int64), and ``height``, ``width``, ``image_id``, ``file_name`` of the
original image. Returns None when the image cannot be read (warned once per path, counted as
``skipped_images``). Boxes that become empty are dropped (``dropped_boxes``); boxes reaching
outside the image are clipped (``clipped_boxes``).

Randomness: ``mapper(d, rng)`` draws everything from the numpy Generator ``rng`` (the loader
passes one seeded by the sample's position, which makes resumed runs exact); the global
generators are never used.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detlab.data import counters
from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.data.transforms import (
    apply_albumentations,
    build_albumentations,
    choose_short_edge,
    intensity_to_unit,
    letterbox_resize,
    read_image,
    resize_shortest_edge,
    to_tensor,
)
from detlab.structures import Instances
from detlab.utils.errors import UserError

__all__ = ["DatasetMapper", "flip_augmentations"]

logger = logging.getLogger(__name__)


def flip_augmentations(random_flip: str) -> list[dict]:
    """``INPUT.RANDOM_FLIP`` ("none", "horizontal", "vertical", "both") as augmentation specs."""
    flips = {
        "none": [],
        "horizontal": [{"name": "HorizontalFlip", "p": 0.5}],
        "vertical": [{"name": "VerticalFlip", "p": 0.5}],
        "both": [{"name": "HorizontalFlip", "p": 0.5}, {"name": "VerticalFlip", "p": 0.5}],
    }
    if random_flip not in flips:
        raise UserError(f"INPUT.RANDOM_FLIP must be one of {sorted(flips)}, got '{random_flip}'.")
    return flips[random_flip]


@MAPPER_REGISTRY.register()
class DatasetMapper:
    """Generic mapper: full-range intensity scaling, shortest-edge resize, albumentations."""

    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: Sequence[dict] = (),
        min_size: Sequence[int] | int = (0,),
        min_size_sampling: str = "choice",
        max_size: int = 0,
        out_channels: int = 3,
        image_format: str = "BGR",
        keep_crowd: bool = False,
        resize_mode: str = "shortest_edge",
    ) -> None:
        """
        Args:
            is_train: augment (True) or only resize (False).
            augmentations: albumentations specs ``[{name, **params}]`` applied after resizing.
            min_size: shortest-edge size(s); one is drawn per image (0 keeps the size).
            max_size: cap on the longest edge after resizing (0 = none).
            out_channels: 1 (grey) or 3 channels in the output tensor.
            image_format: channel order of 3-channel output, "BGR" or "RGB".
            keep_crowd: keep ``iscrowd=1`` boxes in training (dropped by default).
            resize_mode: "shortest_edge" (``min_size``/``max_size`` as Detectron2) or
                "letterbox" (longest edge = ``max_size``, aspect kept; the model pads the
                bottom/right to its size divisibility).
        """
        if out_channels not in (1, 3):
            raise UserError(
                f"MODEL.BACKBONE.IN_CHANNELS must be 1 or 3 for the mappers, got {out_channels}."
            )
        if image_format not in ("BGR", "RGB", "L"):
            raise UserError(f"INPUT.FORMAT must be BGR, RGB or L, got '{image_format}'.")
        self.is_train = is_train
        self.min_size = (min_size,) if isinstance(min_size, int) else tuple(min_size)
        self.min_size_sampling = min_size_sampling
        self.max_size = int(max_size)
        self.out_channels = out_channels
        self.image_format = image_format
        self.keep_crowd = keep_crowd
        self.aug_specs = [dict(a) for a in augmentations] if is_train else []
        self.augment = build_albumentations(self.aug_specs)
        if resize_mode not in ("shortest_edge", "letterbox"):
            raise UserError(
                f"INPUT.RESIZE_MODE must be shortest_edge or letterbox, got '{resize_mode}'."
            )
        self.resize_mode = resize_mode

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        augs = flip_augmentations(cfg.INPUT.RANDOM_FLIP) + list(cfg.INPUT.AUGMENTATIONS)
        return {
            "is_train": is_train,
            "augmentations": augs,
            "min_size": tuple(cfg.INPUT.MIN_SIZE_TRAIN) if is_train else cfg.INPUT.MIN_SIZE_TEST,
            "min_size_sampling": cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            "max_size": cfg.INPUT.MAX_SIZE_TRAIN if is_train else cfg.INPUT.MAX_SIZE_TEST,
            "out_channels": int(cfg.MODEL.BACKBONE.IN_CHANNELS),
            "image_format": cfg.INPUT.FORMAT,
            "resize_mode": cfg.INPUT.RESIZE_MODE,
        }

    # -------------------------------------------------------------- overridable steps
    def to_unit(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """H×W×C raw image → uint8 0..255 or float32 0..1 (full-range scaling by dtype)."""
        return intensity_to_unit(img)

    def extra_augment(self, img, boxes, labels, rng):
        """Hook for subclasses: more augmentation after the configured ones."""
        return img, boxes, labels

    # -------------------------------------------------------------- stages
    def load(self, dataset_dict: dict, rng: np.random.Generator) -> dict[str, Any] | None:
        """Read and scale one image: ``{"image": H×W×C uint8/float32, "boxes": N×4 XYXY,
        "labels": N, "height", "width"}`` (original size), or None when unreadable."""
        path = dataset_dict["file_name"]
        raw = read_image(path)
        if raw is None:
            counters.warn_once(logger, path, "Skipping unreadable image %s.", path)
            counters.count("skipped_images")
            return None
        h0, w0 = raw.shape[:2]
        height = int(dataset_dict.get("height") or h0)
        width = int(dataset_dict.get("width") or w0)
        if (height, width) != (h0, w0):
            counters.warn_once(
                logger,
                f"size:{path}",
                "Image %s is %dx%d but its annotation says %dx%d; boxes are clipped to it.",
                path,
                w0,
                h0,
                width,
                height,
            )
        img = self.to_unit(raw, rng)
        boxes, labels = self._annotations(dataset_dict, w0, h0)
        return {"image": img, "boxes": boxes, "labels": labels, "height": height, "width": width}

    def apply_augmentations(self, img, boxes, labels, rng: np.random.Generator):
        """The configured augmentations, then :meth:`extra_augment` (training only)."""
        if self.is_train:
            img, boxes, labels = apply_albumentations(self.augment, img, boxes, labels, rng)
            img, boxes, labels = self.extra_augment(img, boxes, labels, rng)
        return img, boxes, labels

    def finish(self, img, boxes, labels, dataset_dict: dict, height: int, width: int) -> dict:
        """Drop empty boxes and build the model input dict."""
        h, w = img.shape[:2]
        if len(boxes):
            boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
            good = (boxes[:, 2] - boxes[:, 0] > 1e-3) & (boxes[:, 3] - boxes[:, 1] > 1e-3)
            if not good.all():
                counters.count("dropped_boxes", int((~good).sum()))
                boxes, labels = boxes[good], labels[good]
        tensor = to_tensor(img, self.out_channels, self.image_format)
        return {
            "image": tensor,
            "instances": Instances(
                (h, w),
                boxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                classes=torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            ),
            "height": height,
            "width": width,
            "image_id": dataset_dict.get("image_id"),
            "file_name": dataset_dict["file_name"],
        }

    def resize(self, img, boxes, rng: np.random.Generator):
        """Shortest-edge resize (``resize_mode`` "shortest_edge") or longest-edge letterbox."""
        if self.resize_mode == "letterbox":
            return letterbox_resize(img, boxes, self.max_size)
        short = choose_short_edge(self.min_size, self.min_size_sampling, rng)
        return resize_shortest_edge(img, boxes, short, self.max_size)

    # -------------------------------------------------------------- main
    def __call__(self, dataset_dict: dict, rng: np.random.Generator) -> dict[str, Any] | None:
        d = copy.copy(dataset_dict)
        item = self.load(d, rng)
        if item is None:
            return None
        img, boxes = self.resize(item["image"], item["boxes"], rng)
        img, boxes, labels = self.apply_augmentations(img, boxes, item["labels"], rng)
        return self.finish(img, boxes, labels, d, item["height"], item["width"])

    def _annotations(self, d: dict, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
        anns = [a for a in d.get("annotations") or [] if self.keep_crowd or not a.get("iscrowd", 0)]
        if not anns:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        xywh = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        labels = np.array([int(a["category_id"]) for a in anns], np.int64)
        clipped = np.clip(boxes, 0, [w, h, w, h])
        moved = np.any(np.abs(clipped - boxes) > 1e-4, axis=1)
        good = (clipped[:, 2] - clipped[:, 0] > 1e-3) & (clipped[:, 3] - clipped[:, 1] > 1e-3)
        good &= np.isfinite(boxes).all(axis=1)  # any reader: NaN/inf boxes are dropped
        if (moved & good).any():
            counters.count("clipped_boxes", int((moved & good).sum()))
        if not good.all():
            counters.count("dropped_boxes", int((~good).sum()))
        return clipped[good], labels[good]
