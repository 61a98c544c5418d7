"""Pictures of event windows for people: ON events red, OFF events blue, on black."""

from __future__ import annotations

import numpy as np

from detlab.data.events.index import read_window

__all__ = ["event_window_image"]


def event_window_image(d: dict, cache_dir: str | None = None, saturate: int = 4) -> np.ndarray:
    """H×W×3 uint8 BGR picture of the events of window dict ``d`` (sensor pixels); a pixel is
    fully lit at ``saturate`` events of one polarity."""
    events, _ = read_window(d["file_name"], int(d["t_start_us"]), int(d["t_end_us"]), cache_dir)
    h, w = int(d["height"]), int(d["width"])
    x, y = np.asarray(events.x, np.int64), np.asarray(events.y, np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    pix = (y * w + x)[inside]
    on = np.asarray(events.p)[inside] > 0
    img = np.zeros((h, w, 3), np.uint8)
    for channel, mask in ((2, on), (0, ~on)):  # BGR: red = ON, blue = OFF
        counts = np.bincount(pix[mask], minlength=h * w).reshape(h, w)
        img[:, :, channel] = np.minimum(counts * (255 // max(saturate, 1)), 255).astype(np.uint8)
    return img
