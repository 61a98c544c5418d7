"""The trainer's built-in hooks: timing, LR schedule, evaluation, checkpoints, early stop, writers.

Order matters and is fixed by :meth:`detlab.engine.Trainer.build_hooks`: evaluation runs before
best-checkpointing and early stopping (which read its results), periodic checkpoints after them
(so their state is saved), and writers last (so they see every scalar of the iteration).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from detlab.engine.hooks import HookBase
from detlab.utils import comm
from detlab.utils.events import get_event_storage

__all__ = [
    "BestCheckpointer",
    "EarlyStopping",
    "EvalHook",
    "IterationTimer",
    "LRSchedulerHook",
    "PeriodicCheckpointer",
    "PeriodicWriter",
    "flatten_results",
]

logger = logging.getLogger("detlab")


def flatten_results(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """``{"bbox": {"AP": 50.0}}`` → ``{"bbox/AP": 50.0}`` (finite numbers only)."""
    flat: dict[str, float] = {}
    for k, v in results.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_results(v, name + "/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            flat[name] = float(v)
    return flat


class IterationTimer(HookBase):
    """Records ``time`` (seconds per iteration, hooks included) every iteration."""

    def before_step(self) -> None:
        self._start = time.perf_counter()

    def after_step(self) -> None:
        get_event_storage().put_scalar("time", time.perf_counter() - self._start)


class LRSchedulerHook(HookBase):
    """Logs the LR used by this iteration (``lr``), then steps the per-iteration schedule."""

    def after_step(self) -> None:
        lr = self.trainer.optimizer.param_groups[0]["lr"]
        get_event_storage().put_scalar("lr", lr, smoothing_hint=False)
        self.trainer.scheduler.step()


class EvalHook(HookBase):
    """Runs ``eval_fn() -> results`` every ``period`` iterations and after the last one.

    Results (``{"bbox": {...}}``) are flattened into scalars (``bbox/AP``) for the writers and
    kept in ``trainer.last_eval`` for the best-checkpoint and early-stopping hooks.
    """

    def __init__(self, period: int, eval_fn: Callable[[], dict[str, Any]]) -> None:
        self.period = period
        self.eval_fn = eval_fn

    def _do_eval(self) -> None:
        results = self.eval_fn()
        it = self.trainer.iter
        self.trainer.last_eval = (it, results)
        flat = flatten_results(results)
        storage = get_event_storage()
        for k, v in flat.items():
            storage.put_scalar(k, v, smoothing_hint=False)
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        final = next_iter == self.trainer.max_iter
        if final or (self.period > 0 and next_iter % self.period == 0):
            self._do_eval()


class _MetricTracker:
    def __init__(self, metric: str, mode: str) -> None:
        if mode not in ("max", "min"):
            from detlab.utils.errors import ConfigError

            raise ConfigError(f"Metric mode must be 'max' or 'min', got '{mode}'.")
        self.metric = metric
        self.mode = mode
        self.best: float | None = None
        self.best_iter: int | None = None

    def improved(self, value: float, min_delta: float = 0.0) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + min_delta
        return value < self.best - min_delta

    def value_now(self, trainer: Any) -> float | None:
        last = getattr(trainer, "last_eval", None)
        if last is None or last[0] != trainer.iter:
            return None
        flat = flatten_results(last[1])
        if self.metric not in flat:
            logger.warning(f"Metric {self.metric} not in evaluation results {sorted(flat)[:8]}.")
            return None
        return flat[self.metric]


class BestCheckpointer(HookBase):
    """Writes ``model_best.pth`` through ``checkpointer`` (a
    :class:`~detlab.engine.checkpoint.Checkpointer`) whenever the tracked metric improves."""

    def __init__(self, checkpointer: Any, metric: str = "bbox/AP", mode: str = "max") -> None:
        self.checkpointer = checkpointer
        self.tracker = _MetricTracker(metric, mode)

    def after_step(self) -> None:
        value = self.tracker.value_now(self.trainer)
        if value is None or not self.tracker.improved(value):
            return
        self.tracker.best, self.tracker.best_iter = value, self.trainer.iter
        it = self.trainer.iter
        logger.info(f"New best {self.tracker.metric} = {value:.3f} at iteration {it}")
        self.checkpointer.save(
            "model_best", iteration=self.trainer.iter, metric=self.tracker.metric, value=value
        )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.tracker.best, "best_iter": self.tracker.best_iter}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best = state.get("best")
        self.tracker.best_iter = state.get("best_iter")


class EarlyStopping(HookBase):
    """Stops training when the metric has not improved for ``patience`` evaluations."""

    def __init__(self, metric: str, mode: str, patience: int, min_delta: float = 0.0) -> None:
        self.tracker = _MetricTracker(metric, mode)
        self.patience = patience
        self.min_delta = min_delta
        self.bad_evals = 0

    def after_step(self) -> None:
        value = self.tracker.value_now(self.trainer)
        if value is None:
            return
        if self.tracker.improved(value, self.min_delta):
            self.tracker.best, self.tracker.best_iter = value, self.trainer.iter
            self.bad_evals = 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.patience:
            self.trainer.request_stop(
                f"early stopping: {self.tracker.metric} has not improved for {self.bad_evals} "
                f"evaluations (best {self.tracker.best:.3f} at iteration {self.tracker.best_iter})"
            )

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.tracker.best,
            "best_iter": self.tracker.best_iter,
            "bad_evals": self.bad_evals,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best = state.get("best")
        self.tracker.best_iter = state.get("best_iter")
        self.bad_evals = int(state.get("bad_evals", 0))


class PeriodicCheckpointer(HookBase):
    """``model_<iter>.pth`` every ``period`` iterations (tagged in ``last_checkpoint``) and
    ``model_final.pth`` after the last iteration or an early stop, each with the trainer's
    ``training_state()`` so a resumed run continues exactly."""

    def __init__(self, checkpointer: Any, period: int) -> None:
        self.checkpointer = checkpointer
        self.period = period

    def _save(self, name: str, tag_last: bool = False) -> None:
        state = self.trainer.training_state()  # every rank: it gathers the RNG states
        self.checkpointer.save(name, tag_last=tag_last, **state)
        comm.synchronize()

    def after_step(self) -> None:
        it = self.trainer.iter
        final = it + 1 == self.trainer.max_iter or self.trainer.stop_reason is not None
        if self.period > 0 and (it + 1) % self.period == 0 or final:
            self._save(f"model_{it:07d}", tag_last=True)
        if final:
            self._save("model_final")


class PeriodicWriter(HookBase):
    """Calls the writers: metrics writers every ``metrics_period``, console every ``period``."""

    def __init__(self, writers: list[Any], console: Any, period: int, metrics_period: int) -> None:
        self.writers = writers
        self.console = console
        self.period = max(1, period)
        self.metrics_period = max(1, metrics_period)

    def after_step(self) -> None:
        it = self.trainer.iter + 1
        last = it == self.trainer.max_iter or self.trainer.stop_reason is not None
        if it % self.metrics_period == 0 or last:
            for w in self.writers:
                w.write()
        if self.console is not None and (it % self.period == 0 or last or it <= 1):
            self.console.write()

    def after_train(self) -> None:
        for w in self.writers:
            w.write()
            w.close()
