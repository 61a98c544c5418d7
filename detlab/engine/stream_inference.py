"""Predictions on chosen event windows by a recurrent model, with its memory warmed up.

A model with a :class:`~detlab.modeling.temporal.RecurrentMemory` predicts a window from the
windows before it; predicting a window alone would show the model without its memory. For
each chosen window, the preceding ``warmup`` windows of its recording are streamed through
the model first (from a fresh state), as evaluation does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["predict_stream_windows"]


@torch.no_grad()
def predict_stream_windows(
    model: Any,
    mapper: Callable,
    dataset: Sequence[dict],
    chosen: Sequence[dict],
    warmup: int = 20,
) -> dict[Any, Any]:
    """``image_id → Instances`` (original pixels) for the windows ``chosen`` from ``dataset``."""
    index = {(d["file_name"], int(d["window_index"])): i for i, d in enumerate(dataset)}
    rng = np.random.default_rng(0)
    out: dict[Any, Any] = {}
    for d in chosen:
        k = int(d["window_index"])
        keys = [(d["file_name"], j) for j in range(max(0, k - warmup), k + 1)]
        run = [dataset[index[key]] for key in keys if key in index]
        for step, w in enumerate(run):
            x = mapper(w, rng)
            x.update(slot=0, step=0, is_first=step == 0)
            result = model([x])[0]
        out[d["image_id"]] = result["instances"]
    return out
