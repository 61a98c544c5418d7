"""NaN guard: skip non-finite steps, count them, and decide when to roll back.

The trainer asks :meth:`NaNGuard.record` once per iteration whether the step was bad (a
non-finite loss term or gradient norm). The guard answers ``"ok"``, ``"skip"`` or
``"rollback"``: roll back after ``max_consecutive`` consecutive skips or when more than
``max_skip_rate`` of the last ``window`` iterations were skipped. The trainer then restores the
newest checkpoint whose weights are finite and multiplies the LR by ``lr_backoff``; after
``max_rollbacks`` rollbacks it stops with :class:`TrainingDivergedError`. Because every process
passes the same (all-reduced) flag, the decision is identical on all DDP ranks.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["NaNGuard", "TrainingDivergedError", "INJECT_KINDS"]

logger = logging.getLogger("detlab")

INJECT_KINDS = ("loss", "grad", "input")


class TrainingDivergedError(RuntimeError):
    """Training kept producing non-finite values after the allowed number of rollbacks."""


class NaNGuard:
    """Counts skipped steps and decides rollbacks. State is saved in checkpoints."""

    def __init__(
        self,
        enabled: bool = True,
        max_consecutive: int = 5,
        window: int = 100,
        max_skip_rate: float = 0.2,
        lr_backoff: float = 0.5,
        max_rollbacks: int = 3,
        inject_iters: Sequence[int] = (),
        inject_kind: str = "loss",
        inject_value: str = "nan",
    ) -> None:
        if inject_kind not in INJECT_KINDS:
            from detlab.utils.errors import ConfigError

            raise ConfigError(
                f"SOLVER.NAN_GUARD.INJECT.KIND must be one of {', '.join(INJECT_KINDS)}, "
                f"got '{inject_kind}'."
            )
        if inject_value not in ("nan", "inf"):
            from detlab.utils.errors import ConfigError

            raise ConfigError(
                f"SOLVER.NAN_GUARD.INJECT.VALUE must be 'nan' or 'inf', got '{inject_value}'."
            )
        self.enabled = enabled
        self.max_consecutive = max(1, int(max_consecutive))
        self.window = max(1, int(window))
        self.max_skip_rate = float(max_skip_rate)
        self.lr_backoff = float(lr_backoff)
        self.max_rollbacks = int(max_rollbacks)
        self.inject_iters = {int(i) for i in inject_iters}
        self.inject_kind = inject_kind
        self.inject_value = math.nan if inject_value == "nan" else math.inf
        self.skipped = 0
        self.consecutive = 0
        self.rollbacks = 0
        self.recent: collections.deque[bool] = collections.deque(maxlen=self.window)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        g = cfg.SOLVER.NAN_GUARD
        return {
            "enabled": g.ENABLED,
            "max_consecutive": g.MAX_CONSECUTIVE,
            "window": g.WINDOW,
            "max_skip_rate": g.MAX_SKIP_RATE,
            "lr_backoff": g.LR_BACKOFF,
            "max_rollbacks": g.MAX_ROLLBACKS,
            "inject_iters": g.INJECT.ITERS,
            "inject_kind": g.INJECT.KIND,
            "inject_value": g.INJECT.VALUE,
        }

    def injects(self, iteration: int, kind: str) -> bool:
        """Whether to inject a non-finite value of ``kind`` at ``iteration`` (debug option)."""
        return iteration in self.inject_iters and self.inject_kind == kind

    def record(self, iteration: int, bad: bool, what: str = "") -> str:
        """Register one iteration's outcome; return "ok", "skip" or "rollback"."""
        self.recent.append(bool(bad))
        if not bad:
            self.consecutive = 0
            return "ok"
        self.skipped += 1
        self.consecutive += 1
        logger.warning(
            f"Non-finite {what or 'value'} at iteration {iteration}: step skipped "
            f"({self.consecutive} in a row, {self.skipped} in total)."
        )
        rate = sum(self.recent) / self.window
        if self.consecutive >= self.max_consecutive or rate > self.max_skip_rate:
            return "rollback"
        return "skip"

    def start_rollback(self, last_good: str | None) -> None:
        """Count a rollback; raise :class:`TrainingDivergedError` if none are left."""
        if self.rollbacks >= self.max_rollbacks or last_good is None:
            where = (
                f"the last good checkpoint is {last_good}"
                if last_good
                else "no checkpoint with finite weights exists"
            )
            raise TrainingDivergedError(
                f"Training diverged: non-finite losses or gradients persisted after "
                f"{self.rollbacks} rollback(s) (SOLVER.NAN_GUARD.MAX_ROLLBACKS="
                f"{self.max_rollbacks}); {where}; lower SOLVER.BASE_LR or enable "
                "SOLVER.CLIP_GRADIENTS and resume from it."
            )
        self.rollbacks += 1
        self.consecutive = 0
        self.recent.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "consecutive": self.consecutive,
            "rollbacks": self.rollbacks,
            "recent": [bool(x) for x in self.recent],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.recent = collections.deque(
            (bool(x) for x in state.get("recent", [])), maxlen=self.window
        )
