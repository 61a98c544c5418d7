"""Trainers for the fault-injection tier: the toy detector (tests/engine/_toy.py) with the real
loader and its worker processes, and a linear regressor that really diverges at a high LR.

Selected by ``DETLAB_FAULT_TRAINER`` in ``_train.py``: ``toy`` (default), ``workers``,
``linear``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "engine"))

import _toy  # noqa: E402

from detlab.modeling import META_ARCH_REGISTRY  # noqa: E402

ToyTrainer = _toy.ToyTrainer


def _toy_mapper(d: dict, rng: Any) -> dict:
    """Dataset dict ``{"image_id": i}`` → the toy sample ``i`` (pure function of ``i``)."""
    return _toy.make_sample(int(d["image_id"]))


class WorkerToyTrainer(_toy.ToyTrainer):
    """The toy detector fed by detlab's real train loader (``DATALOADER.NUM_WORKERS``
    processes, positional resume) over 64 toy samples."""

    @classmethod
    def build_train_loader(cls, cfg: Any, start_iter: int = 0) -> Any:
        from detlab.data import build_detection_train_loader

        dataset = [{"image_id": i, "height": _toy.SIZE, "width": _toy.SIZE} for i in range(64)]
        return build_detection_train_loader(
            cfg, start_iter=start_iter, mapper=_toy_mapper, dataset=dataset
        )


@META_ARCH_REGISTRY.register()
class LinearToyRegressor(nn.Module):
    """Box regression by a linear map of 4×4-pooled pixels, squared error, no saturation:
    gradient descent diverges geometrically once the LR passes 2 / curvature, so a high LR
    gives a real storm — finite losses growing by orders of magnitude, then overflow."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 4)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {}

    def forward(self, batch: list[dict]) -> Any:
        x = torch.stack([F.adaptive_avg_pool2d(d["image"], 4).flatten() / 255.0 for d in batch])
        pred = self.linear(x)
        if self.training:
            target = torch.stack([d["instances"].boxes[0] / _toy.SIZE for d in batch])
            return {"loss_box": ((pred - target) ** 2).sum(1).mean()}
        return [{"instances": _toy.Instances((d["height"], d["width"]))} for d in batch]


TRAINERS = {"toy": ToyTrainer, "workers": WorkerToyTrainer, "linear": ToyTrainer}
