"""Learning-rate schedules: warmup (linear or constant) then multistep or cosine decay.

The LR at iteration ``t`` is ``BASE_LR * warmup(t) * decay(t) * lr_multiplier``, where
``lr_multiplier`` starts at 1 and is lowered by the NaN guard's LR back-off. The scheduler is
stepped once per iteration; its state (position and multiplier) is saved in checkpoints.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

import torch

from detlab.utils.errors import ConfigError

__all__ = ["WarmupLRScheduler", "build_lr_scheduler", "lr_factor"]


def lr_factor(
    it: int,
    *,
    max_iter: int,
    schedule: str = "multistep",
    steps: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.001,
    warmup_method: str = "linear",
    end_factor: float = 0.0,
) -> float:
    """Multiplier of the base LR at iteration ``it`` (0-based)."""
    if schedule == "multistep":
        decay = gamma ** bisect.bisect_right(sorted(steps), it)
    elif schedule == "cosine":
        t = min(max(it, 0), max_iter) / max(max_iter, 1)
        decay = end_factor + (1.0 - end_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    if it < warmup_iters:
        if warmup_method == "constant":
            warm = warmup_factor
        elif warmup_method == "linear":
            alpha = it / warmup_iters
            warm = warmup_factor * (1 - alpha) + alpha
        else:
            raise ValueError(f"unknown warmup method {warmup_method!r}")
        decay *= warm
    return decay


class WarmupLRScheduler(torch.optim.lr_scheduler.LRScheduler):
    """Per-iteration schedule: ``lr = base_lr * lr_factor(iteration) * lr_multiplier``."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        max_iter: int,
        schedule: str = "multistep",
        steps: Sequence[int] = (),
        gamma: float = 0.1,
        warmup_iters: int = 0,
        warmup_factor: float = 0.001,
        warmup_method: str = "linear",
        end_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.params = {
            "max_iter": int(max_iter),
            "schedule": schedule,
            "steps": [int(s) for s in steps],
            "gamma": float(gamma),
            "warmup_iters": int(warmup_iters),
            "warmup_factor": float(warmup_factor),
            "warmup_method": warmup_method,
            "end_factor": float(end_factor),
        }
        lr_factor(0, **self.params)  # validate names early
        self.lr_multiplier = 1.0
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        f = lr_factor(self.last_epoch, **self.params) * self.lr_multiplier
        return [base * f for base in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def backoff(self, factor: float) -> None:
        """Multiply every group's LR by ``factor`` from now on (NaN-guard LR back-off)."""
        self.lr_multiplier *= float(factor)
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer) -> WarmupLRScheduler:
    """``SOLVER.LR_SCHEDULER_NAME``: "WarmupMultiStepLR" or "WarmupCosineLR"."""
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    schedules = {"WarmupMultiStepLR": "multistep", "WarmupCosineLR": "cosine"}
    if name not in schedules:
        raise ConfigError(
            f"SOLVER.LR_SCHEDULER_NAME must be one of {', '.join(schedules)}, got '{name}'."
        )
    if s.WARMUP_METHOD not in ("linear", "constant"):
        raise ConfigError(
            f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', got '{s.WARMUP_METHOD}'."
        )
    steps = [x for x in s.STEPS if x <= s.MAX_ITER]
    return WarmupLRScheduler(
        optimizer,
        max_iter=s.MAX_ITER,
        schedule=schedules[name],
        steps=steps,
        gamma=s.GAMMA,
        warmup_iters=min(s.WARMUP_ITERS, s.MAX_ITER),
        warmup_factor=s.WARMUP_FACTOR,
        warmup_method=s.WARMUP_METHOD,
        end_factor=s.COSINE_END_FACTOR,
    )
