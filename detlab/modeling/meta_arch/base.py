"""Shared input/output handling of detlab detectors.

``Detector`` turns a list of mapper outputs into one padded, normalised batch tensor and maps
predicted boxes back from the network input's pixels to the original image's pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from detlab.structures import Instances
from detlab.utils.errors import UserError

__all__ = ["Detector", "detector_base_config", "nonempty", "select_features"]


def select_features(available: dict, names: Any, key: str) -> list[str]:
    """The neck levels a head reads: ``names`` if given, else all of them (finest first)."""
    names = list(names) or list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(
            f"{key} names {unknown}, which the neck does not output (it has "
            f"{list(available)}); pick from those."
        )
    return names


def detector_base_config(cfg: Any, max_stride: int) -> dict[str, Any]:
    """Normalisation and padding arguments shared by every meta-architecture."""
    div = int(cfg.MODEL.SIZE_DIVISIBILITY) or int(max_stride)
    return {
        "pixel_mean": tuple(cfg.MODEL.PIXEL_MEAN),
        "pixel_std": tuple(cfg.MODEL.PIXEL_STD),
        "size_divisibility": div,
        "channels_last": bool(cfg.MODEL.CHANNELS_LAST),
    }


class Detector(nn.Module):
    """Base of detlab meta-architectures: pixel normalisation, padding, box rescaling.

    Args:
        pixel_mean, pixel_std: per-channel statistics on the 0..255 scale; their length is
            the number of input channels.
        size_divisibility: the padded batch's height and width are multiples of this.
        channels_last: keep images and conv weights in NHWC memory format (the subclass
            calls :meth:`use_channels_last` once its modules exist); often faster on CPU.
    """

    def __init__(
        self,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.channels_last = bool(channels_last)
        if len(pixel_mean) != len(pixel_std):
            raise UserError(
                f"MODEL.PIXEL_MEAN has {len(pixel_mean)} values but MODEL.PIXEL_STD has "
                f"{len(pixel_std)}; give one value per input channel in both."
            )
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.register_buffer(
            "pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False
        )
        self.size_divisibility = max(1, int(size_divisibility))

    def finish_init(self, backbone: Any) -> None:
        """Call at the end of a subclass ``__init__``: check input channels, set memory format."""
        in_ch = getattr(backbone, "in_channels", None)
        if in_ch is not None:
            self.check_channels(in_ch)
        self.use_channels_last()

    def use_channels_last(self) -> None:
        """Convert 4-D parameters to NHWC when ``channels_last`` is set (no-op otherwise)."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def check_channels(self, backbone_channels: int) -> None:
        if self.pixel_mean.numel() != backbone_channels:
            raise UserError(
                f"MODEL.PIXEL_MEAN has {self.pixel_mean.numel()} values but the backbone "
                f"takes {backbone_channels}-channel images (MODEL.BACKBONE.IN_CHANNELS); give "
                "one mean and std per channel."
            )

    def preprocess(
        self, batched_inputs: list[dict[str, Any]]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise and zero-pad images → (B×C×Hp×Wp tensor, unpadded (h, w) per image)."""
        if not batched_inputs:
            raise ValueError("the model got an empty batch")
        images = [x["image"] for x in batched_inputs]
        c = self.pixel_mean.shape[0]
        for img in images:
            if img.dim() != 3 or img.shape[0] != c:
                raise UserError(
                    f"The model expects {c}-channel C×H×W images but got shape "
                    f"{tuple(img.shape)}; set MODEL.BACKBONE.IN_CHANNELS and MODEL.PIXEL_MEAN/"
                    "PIXEL_STD to the data's channel count."
                )
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        d = self.size_divisibility
        hp = int(math.ceil(max(h for h, _ in sizes) / d) * d)
        wp = int(math.ceil(max(w for _, w in sizes) / d) * d)
        batch = torch.zeros((len(images), c, hp, wp), dtype=torch.float32, device=self.device)
        for i, img in enumerate(images):
            img = img.to(self.device, torch.float32, non_blocking=True)
            batch[i, :, : sizes[i][0], : sizes[i][1]] = (img - self.pixel_mean) / self.pixel_std
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def prepare_targets(
        self, batched_inputs: list[dict[str, Any]], sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        """Ground truth on the model's device, with ``areas`` = box area in ORIGINAL pixels².

        Boxes are in the network input's pixels; the area is rescaled by
        ``(height / h_in) · (width / w_in)`` so size-aware weights see the object size the
        COCO size buckets see.
        """
        targets = []
        for x, (h, w) in zip(batched_inputs, sizes, strict=True):
            if "instances" not in x:
                raise UserError(
                    f"Training input (image_id={x.get('image_id')}) has no 'instances'; the "
                    "training mapper must provide ground truth."
                )
            inst = x["instances"]
            boxes = inst.boxes.to(self.device, torch.float32).reshape(-1, 4)
            classes = inst.classes.to(self.device, torch.int64).reshape(-1)
            scale = (x.get("height", h) / h) * (x.get("width", w) / w)
            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
            areas = wh[:, 0] * wh[:, 1] * scale
            targets.append(Instances((h, w), boxes=boxes, classes=classes, areas=areas))
        return targets

    @staticmethod
    def postprocess(
        results: list[Instances],
        batched_inputs: list[dict[str, Any]],
        sizes: list[tuple[int, int]],
    ) -> list[dict[str, Instances]]:
        """Rescale boxes from the network input (h, w) to the original (height, width), and
        drop boxes of zero width or height (clipped away entirely), as Detectron2 does."""
        out = []
        for res, x, (h, w) in zip(results, batched_inputs, sizes, strict=True):
            height, width = int(x.get("height", h)), int(x.get("width", w))
            boxes = res.boxes.clone()
            boxes[:, 0::2] *= width / w
            boxes[:, 1::2] *= height / h
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            keep = nonempty(boxes)
            inst = Instances(
                (height, width),
                boxes=boxes[keep],
                scores=res.scores[keep],
                classes=res.classes[keep],
            )
            out.append({"instances": inst})
        return out


def nonempty(boxes: torch.Tensor) -> torch.Tensor:
    """Mask of XYXY boxes with positive width and height."""
    return (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
