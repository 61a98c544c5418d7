"""NaN guard: skip non-finite steps, count them, and decide when to roll back.

The trainer asks :meth:`NaNGuard.record` once per iteration whether the step was bad (a
non-finite loss term or gradient norm). The guard answers ``"ok"``, ``"skip"`` or
``"rollback"``: roll back after ``max_consecutive`` consecutive skips or when more than
``max_skip_rate`` of the last ``window`` iterations were skipped. The trainer then restores the
newest *healthy* checkpoint and multiplies the LR by ``lr_backoff``; after ``max_rollbacks``
rollbacks it stops with :class:`TrainingDivergedError`. Because every process passes the same
(all-reduced) flag, the decision is identical on all DDP ranks.

Healthy, not only finite. The trainer also feeds every iteration's total loss to
:meth:`NaNGuard.observe_loss`; :meth:`NaNGuard.health` judges the moment of a save. A
checkpoint is **healthy** when

1. its weights are finite (non-finite weights are never written at all),
2. none of the last ``health_window`` iterations before it was skipped, and
3. the median of their losses, and the last of them, are at most ``max_loss_ratio`` times the
   *reference*: the lowest such median seen so far in the run (the pre-storm level; it needs
   half a window of losses, and while there is none yet only rules 1 and 2 apply).

So a checkpoint written while the loss climbs towards overflow, or amid skipped steps, is
finite but not healthy: it is never a rollback target, and the newest healthy checkpoint is
kept on disk until a newer healthy one exists (see :class:`~detlab.engine.Checkpointer`).
"""

from __future__ import annotations

import collections
import logging
import math
import statistics
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
        health_window: int = 20,
        max_loss_ratio: float = 10.0,
        amp_off_after_rollback: bool = False,
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
        self.health_window = max(1, int(health_window))
        self.max_loss_ratio = float(max_loss_ratio)
        self.amp_off_after_rollback = bool(amp_off_after_rollback)
        self.amp_off = False  # set once AMP was switched off after a rollback
        # total loss of each of the last health_window iterations; None = skipped step
        self.losses: collections.deque[float | None] = collections.deque(maxlen=self.health_window)
        self.loss_reference: float | None = None

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
            "health_window": g.HEALTHY.WINDOW,
            "max_loss_ratio": g.HEALTHY.MAX_LOSS_RATIO,
            "amp_off_after_rollback": g.AMP_OFF_AFTER_ROLLBACK,
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

    # ------------------------------------------------------------------ health
    def observe_loss(self, loss: float | None) -> None:
        """Record one iteration's total loss (None or non-finite = a skipped step)."""
        value = float(loss) if loss is not None and math.isfinite(loss) else None
        self.losses.append(value)
        finite = [v for v in self.losses if v is not None]
        if len(finite) * 2 >= self.health_window and len(finite) == len(self.losses):
            median = statistics.median(finite)
            if self.loss_reference is None or median < self.loss_reference:
                self.loss_reference = median

    def health(self) -> dict[str, Any]:
        """Whether training is healthy now (rules 2 and 3 of the module docstring).

        ``{"healthy": bool, "reason": str, "loss_median": float | None, "loss_reference":
        float | None, "skipped_in_window": int, "window": int}``; checkpoints carry it.
        """
        finite = [v for v in self.losses if v is not None]
        skipped = len(self.losses) - len(finite)
        median = statistics.median(finite) if finite else None
        ref = self.loss_reference
        reasons = []
        if skipped:
            reasons.append(f"{skipped} of the last {len(self.losses)} steps were skipped")
        last = self.losses[-1] if self.losses else None
        if ref is not None and ref > 0:
            limit = self.max_loss_ratio * ref
            for what, value in (("loss median", median), ("last loss", last)):
                if value is not None and value > limit:
                    reasons.append(
                        f"the {what} {value:.4g} is {value / ref:.3g}x the lowest median "
                        f"{ref:.4g} (limit {self.max_loss_ratio:g}x)"
                    )
        return {
            "healthy": not reasons,
            "reason": "; ".join(reasons) or "no skipped steps, loss at its usual level",
            "loss_median": median,
            "loss_reference": ref,
            "skipped_in_window": skipped,
            "window": len(self.losses),
        }

    # ------------------------------------------------------------------ rollback
    def start_rollback(self, last_good: str | None) -> None:
        """Count a rollback; raise :class:`TrainingDivergedError` if none are left.

        ``last_good`` is the newest healthy checkpoint (the rollback target), or None.
        """
        if self.rollbacks >= self.max_rollbacks or last_good is None:
            where = (
                f"the last healthy checkpoint is {last_good}"
                if last_good
                else "no healthy checkpoint exists"
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

    def restore_health(self, state: dict[str, Any]) -> None:
        """After a rollback: the loss window and reference as they were at the target."""
        self.losses = collections.deque(
            (None if v is None else float(v) for v in state.get("losses", [])),
            maxlen=self.health_window,
        )
        ref = state.get("loss_reference")
        self.loss_reference = None if ref is None else float(ref)

    def state_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.skipped,
            "consecutive": self.consecutive,
            "rollbacks": self.rollbacks,
            "recent": [bool(x) for x in self.recent],
            "losses": list(self.losses),
            "loss_reference": self.loss_reference,
            "amp_off": self.amp_off,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = int(state.get("skipped", 0))
        self.consecutive = int(state.get("consecutive", 0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.recent = collections.deque(
            (bool(x) for x in state.get("recent", [])), maxlen=self.window
        )
        self.amp_off = bool(state.get("amp_off", False))
        self.restore_health(state)
