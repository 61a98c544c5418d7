"""``EventWindowMapper``: one event window → a representation tensor with its boxes.

Reads the window's events (``[t_start_us, t_end_us)`` of the dict, plus the representation's
history), downsamples them, builds the ``INPUT.EVENTS.REPRESENTATION`` tensor (or reads it
from the HDF5 cache), and in training applies RVT's spatial augmentations: horizontal flip,
zoom-in (crop and enlarge) and zoom-out (shrink onto an empty canvas), resampled with
``nearest-exact`` so counts stay counts. Every random draw comes from the ``rng`` the loader
passes, in a fixed number and order, so all windows of a clip or stream pass that share one
seed get the same augmentation.

Output: ``image`` float32 C×h×w, ``instances`` (boxes XYXY in the tensor's pixels, classes),
``height``/``width`` (the sensor size rounded to whole downsampled pixels, so predictions map
back by exactly the downsampling factor), ``image_id``, ``file_name``, ``labelled``,
``sequence``, ``window_index``, ``t_end_us``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from detlab.data import counters
from detlab.data.events.cache import RepresentationCache, event_cache_root
from detlab.data.events.index import read_window
from detlab.data.events.readers import Events
from detlab.data.events.representations import (
    EventRepresentation,
    build_representation,
    downsample_events,
)
from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.structures import Instances
from detlab.utils.errors import UserError

__all__ = ["EventWindowMapper"]

logger = logging.getLogger(__name__)


@MAPPER_REGISTRY.register()
class EventWindowMapper:
    """Event window dict → model input (see the module docstring)."""

    def __init__(
        self,
        is_train: bool = True,
        *,
        representation: EventRepresentation,
        downsample: int = 1,
        downsample_mode: str = "sum",
        hflip_prob: float = 0.5,
        zoom_in_prob: float = 0.0,
        zoom_in_max: float = 1.5,
        zoom_out_prob: float = 0.0,
        zoom_out_max: float = 1.2,
        cache: RepresentationCache | None = None,
        index_dir: str | None = None,
    ) -> None:
        for name, v in (("ZOOM_IN_MAX", zoom_in_max), ("ZOOM_OUT_MAX", zoom_out_max)):
            if v < 1:
                raise UserError(f"INPUT.EVENTS.{name} must be >= 1, got {v}.")
        self.is_train, self.rep = is_train, representation
        self.downsample, self.downsample_mode = int(downsample), downsample_mode
        downsample_events(Events.empty(), self.downsample, downsample_mode, 1, 1)  # checks args
        self.hflip_prob, self.zoom_in_prob, self.zoom_out_prob = (
            hflip_prob,
            zoom_in_prob,
            zoom_out_prob,
        )
        self.zoom_in_max, self.zoom_out_max = float(zoom_in_max), float(zoom_out_max)
        self.cache, self.index_dir = cache, index_dir

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        e = cfg.INPUT.EVENTS
        rep = build_representation(cfg)
        if rep.num_channels != int(cfg.MODEL.BACKBONE.IN_CHANNELS):
            raise UserError(
                f"INPUT.EVENTS.REPRESENTATION {e.REPRESENTATION} gives {rep.num_channels} "
                f"channels but MODEL.BACKBONE.IN_CHANNELS is {cfg.MODEL.BACKBONE.IN_CHANNELS}; "
                "make them equal (and give PIXEL_MEAN/PIXEL_STD one value per channel)."
            )
        root = event_cache_root(cfg)
        cache = RepresentationCache(root, rep, e.DOWNSAMPLE, e.DOWNSAMPLE_MODE) if e.CACHE else None
        return {
            "is_train": is_train,
            "representation": rep,
            "downsample": e.DOWNSAMPLE,
            "downsample_mode": e.DOWNSAMPLE_MODE,
            "hflip_prob": e.HFLIP_PROB,
            "zoom_in_prob": e.ZOOM_IN_PROB,
            "zoom_in_max": e.ZOOM_IN_MAX,
            "zoom_out_prob": e.ZOOM_OUT_PROB,
            "zoom_out_max": e.ZOOM_OUT_MAX,
            "cache": cache,
            "index_dir": root,
        }

    def represent(self, d: dict) -> torch.Tensor:
        """The representation tensor (C×h×w, its own dtype) of window dict ``d``."""
        if self.cache is not None:
            hit = self.cache.read(d)
            if hit is not None:
                return hit
        t_start, t_end = int(d["t_start_us"]), int(d["t_end_us"])
        since = min(t_start, t_end - self.rep.history_us)
        events, _ = read_window(d["file_name"], since, t_end, self.index_dir)
        events, h, w = downsample_events(
            events, self.downsample, self.downsample_mode, int(d["height"]), int(d["width"])
        )
        return self.rep(events, t_start, t_end, h, w)

    def __call__(
        self, dataset_dict: dict, rng: np.random.Generator | None = None
    ) -> dict[str, Any]:
        d = dataset_dict
        rng = np.random.default_rng() if rng is None else rng
        image = self.represent(d).to(torch.float32)
        _, h, w = image.shape
        f = float(self.downsample)
        boxes, classes = _boxes(d, f)
        if self.is_train:
            image, boxes = self._augment(image, boxes, rng)
        if len(boxes):
            boxes = boxes.clamp(min=0)
            boxes[:, 0::2] = boxes[:, 0::2].clamp(max=w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(max=h)
            good = (boxes[:, 2] - boxes[:, 0] > 1e-3) & (boxes[:, 3] - boxes[:, 1] > 1e-3)
            if not bool(good.all()):
                counters.count("dropped_boxes", int((~good).sum()))
                boxes, classes = boxes[good], classes[good]
        return {
            "image": image,
            "instances": Instances((h, w), boxes=boxes, classes=classes),
            "height": int(round(h * f)),
            "width": int(round(w * f)),
            "image_id": d["image_id"],
            "file_name": d["file_name"],
            "labelled": bool(d.get("labelled", True)),
            "sequence": d.get("sequence"),
            "window_index": d.get("window_index"),
            "t_end_us": d.get("t_end_us"),
        }

    def _augment(self, image: torch.Tensor, boxes: torch.Tensor, rng: np.random.Generator):
        u = rng.random(6)  # always six draws: flip, zoom kind, factor, x offset, y offset, spare
        _, h, w = image.shape
        if u[0] < self.hflip_prob:
            image = image.flip(-1)
            if len(boxes):
                boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        zoom_total = self.zoom_in_prob + self.zoom_out_prob
        if zoom_total <= 0 or u[1] >= min(zoom_total, 1.0):
            return image, boxes
        if u[1] < self.zoom_in_prob and self.zoom_in_max > 1:
            s = 1 + (self.zoom_in_max - 1) * u[2]
            ch, cw = max(1, int(round(h / s))), max(1, int(round(w / s)))
            y0, x0 = int(u[4] * (h - ch + 1)), int(u[3] * (w - cw + 1))
            crop = image[:, y0 : y0 + ch, x0 : x0 + cw]
            image = F.interpolate(crop[None], size=(h, w), mode="nearest-exact")[0]
            if len(boxes):
                scale = torch.tensor([w / cw, h / ch, w / cw, h / ch])
                boxes = (boxes - torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)) * scale
        elif u[1] >= self.zoom_in_prob and self.zoom_out_max > 1:
            s = 1 + (self.zoom_out_max - 1) * u[2]
            sh, sw = max(1, int(round(h / s))), max(1, int(round(w / s)))
            y0, x0 = int(u[4] * (h - sh + 1)), int(u[3] * (w - sw + 1))
            small = F.interpolate(image[None], size=(sh, sw), mode="nearest-exact")[0]
            image = torch.zeros_like(image)
            image[:, y0 : y0 + sh, x0 : x0 + sw] = small
            if len(boxes):
                scale = torch.tensor([sw / w, sh / h, sw / w, sh / h])
                boxes = boxes * scale + torch.tensor([x0, y0, x0, y0], dtype=boxes.dtype)
        return image, boxes


def _boxes(d: dict, f: float) -> tuple[torch.Tensor, torch.Tensor]:
    anns = [a for a in d.get("annotations") or [] if not a.get("iscrowd", 0)]
    if not anns:
        return torch.zeros((0, 4), dtype=torch.float32), torch.zeros((0,), dtype=torch.int64)
    xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4) / f
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    return boxes, torch.tensor([int(a["category_id"]) for a in anns], dtype=torch.int64)
