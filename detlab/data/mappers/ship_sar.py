"""``ShipSARMapper``: SAR intensity handling and the SAR augmentation set.

* Intensity: linear amplitude/intensity → dB (or log) → percentile stretch to 0..255
  (``INPUT.SAR.SCALING``, ``INPUT.SAR.CLIP_PERCENTILES``); 8/16-bit data go through a lookup
  table. Single-channel data are replicated when the backbone wants 3 channels.
* Training augmentations (``INPUT.SAR.*``): multi-scale ResizeShortestEdge
  (``INPUT.MIN_SIZE_TRAIN``), extra multiplicative gamma speckle on the linear data,
  horizontal/vertical flips, 90° rotations, arbitrary rotations (boxes re-fitted to the
  rotated ellipse inscribed in each box), brightness and contrast; then any
  ``INPUT.AUGMENTATIONS`` albumentations transforms by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.data.mappers.dataset_mapper import DatasetMapper
from detlab.data.transforms import sar_to_unit

__all__ = ["ShipSARMapper", "sar_augmentations"]


def sar_augmentations(
    hflip: float = 0.5,
    vflip: float = 0.5,
    rot90: float = 0.5,
    rotation_angle: float = 0.0,
    rotation_prob: float = 0.5,
    brightness: float = 0.1,
    contrast: float = 0.1,
    brightness_contrast_prob: float = 0.5,
) -> list[dict]:
    """The SAR augmentation set as albumentations specs (probabilities 0 leave a step out)."""
    specs: list[dict] = []
    if hflip > 0:
        specs.append({"name": "HorizontalFlip", "p": hflip})
    if vflip > 0:
        specs.append({"name": "VerticalFlip", "p": vflip})
    if rot90 > 0:
        specs.append({"name": "RandomRotate90", "p": rot90})
    if rotation_angle > 0 and rotation_prob > 0:
        specs.append(
            {
                "name": "Rotate",
                "limit": (-float(rotation_angle), float(rotation_angle)),
                "rotate_method": "ellipse",
                "border_mode": cv2.BORDER_CONSTANT,
                "fill": 0,
                "p": rotation_prob,
            }
        )
    if (brightness > 0 or contrast > 0) and brightness_contrast_prob > 0:
        specs.append(
            {
                "name": "RandomBrightnessContrast",
                "brightness_limit": (-float(brightness), float(brightness)),
                "contrast_limit": (-float(contrast), float(contrast)),
                "p": brightness_contrast_prob,
            }
        )
    return specs


@MAPPER_REGISTRY.register()
class ShipSARMapper(DatasetMapper):
    """Mapper for single-channel (often 16-bit) SAR chips; see the module docstring."""

    def __init__(
        self,
        is_train: bool = True,
        *,
        scaling: str = "db",
        clip_percentiles: Sequence[float] = (1.0, 99.8),
        speckle_prob: float = 0.0,
        speckle_looks: Sequence[float] = (4.0, 16.0),
        eight_bit: bool = True,
        sar_augs: Sequence[dict] | None = None,
        augmentations: Sequence[dict] = (),
        **kwargs: Any,
    ) -> None:
        """
        Args:
            scaling: "db", "log", "linear" or "none" (full-range scaling, no stretch).
            clip_percentiles: (low, high) percentiles of the stretch, per image.
            speckle_prob: chance of multiplying the linear image by gamma speckle of
                ``speckle_looks`` (uniform in the range) looks in training.
            eight_bit: round the stretched image to 256 levels and augment it as uint8
                (several times faster; 0.1 dB steps over a 25 dB stretch) instead of float32.
            sar_augs: SAR augmentation specs (default :func:`sar_augmentations`), run before
                ``augmentations``.
        """
        sar = sar_augmentations() if sar_augs is None else list(sar_augs)
        super().__init__(is_train, augmentations=[*sar, *augmentations], **kwargs)
        self.scaling = scaling
        self.clip_percentiles = tuple(float(p) for p in clip_percentiles)
        self.speckle_prob = float(speckle_prob) if is_train else 0.0
        self.speckle_looks = tuple(float(x) for x in speckle_looks)
        self.eight_bit = bool(eight_bit)
        sar_to_unit(np.ones((2, 2, 1), np.uint8), scaling, self.clip_percentiles)  # validate

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        args = super().from_config(cfg, is_train)
        s = cfg.INPUT.SAR
        args["augmentations"] = list(cfg.INPUT.AUGMENTATIONS)
        args.update(
            scaling=s.SCALING,
            clip_percentiles=tuple(s.CLIP_PERCENTILES),
            speckle_prob=s.SPECKLE_PROB,
            speckle_looks=tuple(s.SPECKLE_LOOKS),
            eight_bit=s.EIGHT_BIT,
            sar_augs=sar_augmentations(
                hflip=s.HFLIP_PROB,
                vflip=s.VFLIP_PROB,
                rot90=s.ROT90_PROB,
                rotation_angle=s.ROTATION_ANGLE,
                rotation_prob=s.ROTATION_PROB,
                brightness=s.BRIGHTNESS,
                contrast=s.CONTRAST,
                brightness_contrast_prob=s.BRIGHTNESS_CONTRAST_PROB,
            ),
        )
        return args

    def to_unit(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.speckle_prob > 0 and rng.random() < self.speckle_prob:
            looks = rng.uniform(*self.speckle_looks)
            gain = rng.gamma(looks, 1.0 / looks, size=img.shape[:2]).astype(np.float32)
            speckled = img.astype(np.float32) * gain[:, :, None]
            if img.dtype in (np.uint8, np.uint16):  # stay integer: keeps the lookup-table path
                speckled = np.clip(np.rint(speckled), 0, np.iinfo(img.dtype).max)
            img = speckled.astype(img.dtype)
        if self.scaling == "none":
            return sar_to_unit(img, "none")
        return sar_to_unit(img, self.scaling, self.clip_percentiles, self.eight_bit)
