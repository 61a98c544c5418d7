"""One training iteration: AMP, gradient accumulation, NaN guard, clipping, EMA, rollback.

:class:`TrainStepMixin` is part of :class:`detlab.engine.Trainer`; it expects the trainer's
attributes (``model``, ``optimizer``, ``scheduler``, ``scaler``, ``ema``, ``nan_guard``,
``checkpointer``, ``hooks``, ``cfg``, ``iter``, ``accum``, ``device``, ``clip_count``,
``_data_iter``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import torch
from torch import nn

from detlab.engine.checkpoint import unwrap_model
from detlab.solver import clip_gradients, global_grad_norm
from detlab.utils import comm
from detlab.utils.errors import ConfigError
from detlab.utils.events import get_event_storage

__all__ = ["TrainStepMixin"]

logger = logging.getLogger("detlab")
DATA_COUNTERS = ("skipped_images", "dropped_boxes", "clipped_boxes", "worker_failures")


class TrainStepMixin:
    """``run_step`` and ``rollback`` of the trainer."""

    def _setup_amp(self, cfg: Any) -> None:
        amp = cfg.SOLVER.AMP
        self.amp_dtype: torch.dtype | None = None
        self.scaler = None
        if not amp.ENABLED:
            return
        if amp.DTYPE not in ("bfloat16", "float16"):
            raise ConfigError(f"SOLVER.AMP.DTYPE must be bfloat16 or float16, got '{amp.DTYPE}'.")
        if self.device.type == "cuda":
            self.amp_dtype = getattr(torch, amp.DTYPE)
            if self.amp_dtype is torch.float16:
                self.scaler = torch.amp.GradScaler("cuda")
        else:
            if amp.DTYPE == "float16":
                logger.warning("SOLVER.AMP.DTYPE float16 is CUDA-only; using bfloat16 on CPU.")
            self.amp_dtype = torch.bfloat16

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def run_step(self) -> None:
        it, guard, storage = self.iter, self.nan_guard, get_event_storage()
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        bad_what, data_time, loss_sums = "", 0.0, {}
        for micro in range(self.accum):
            t0 = time.perf_counter()
            data = next(self._data_iter)
            data_time += time.perf_counter() - t0
            if bad_what:
                continue  # keep consuming so the data position stays exact
            if guard.injects(it, "input") and micro == 0:
                data = _inject_input(data, guard.inject_value)
            with self._autocast():
                loss_dict = self.model(data)
            loss_dict = {k: v.float() for k, v in loss_dict.items()}
            if guard.injects(it, "loss") and micro == 0:
                k = sorted(loss_dict)[0]
                loss_dict[k] = loss_dict[k] + guard.inject_value
            for k, v in loss_dict.items():
                loss_sums[k] = loss_sums.get(k, 0.0) + float(v.detach()) / self.accum
            bad_terms = [k for k, v in loss_dict.items() if not bool(torch.isfinite(v).all())]
            if comm.all_reduce_any(bool(bad_terms), self.device):
                if not guard.enabled:
                    raise FloatingPointError(
                        f"Loss became infinite or NaN at iteration={it}! loss_dict = {loss_sums}"
                    )
                bad_what = f"loss ({', '.join(bad_terms) or 'on another process'})"
                continue
            losses = sum(loss_dict.values()) / self.accum
            sync = self.accum > 1 and micro < self.accum - 1 and hasattr(self.model, "no_sync")
            with self.model.no_sync() if sync else contextlib.nullcontext():
                if self.scaler is not None:
                    self.scaler.scale(losses).backward()
                else:
                    losses.backward()
        for h in self.hooks:
            h.after_backward()

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.cfg.SOLVER.CLIP_GRADIENTS
        grad_norm = float("nan")
        if not bad_what:
            if guard.injects(it, "grad"):
                _inject_grad(params, guard.inject_value)
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = float(global_grad_norm(params, clip.NORM_TYPE))
            if comm.all_reduce_any(not _finite(grad_norm), self.device):
                bad_what = "gradient norm"
        if self.scaler is not None and bad_what == "gradient norm":
            self.scaler.update()  # fp16 overflow: the scaler lowers its scale
            storage.put_scalar("amp/overflow", 1.0)
            bad_what = ""
            self.optimizer.zero_grad(set_to_none=True)
            outcome = "ok"
        else:
            outcome = guard.record(it, bool(bad_what), bad_what) if guard.enabled else "ok"
            if bad_what:
                self.optimizer.zero_grad(set_to_none=True)
            else:
                if clip.ENABLED:
                    norm = torch.tensor(grad_norm)
                    n = clip_gradients(
                        params, clip.CLIP_TYPE, clip.CLIP_VALUE, clip.NORM_TYPE, norm
                    )
                    self.clip_count += int(n > 0)
                    storage.put_scalar("clip/params_clipped", n, smoothing_hint=False)
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(unwrap_model(self.model))

        storage.put_scalar("data_time", data_time)
        loss_sums = _mean_over_processes(loss_sums, self.device)
        for k, v in loss_sums.items():
            storage.put_scalar(k, v)
        if loss_sums:
            storage.put_scalar("total_loss", sum(loss_sums.values()))
        storage.put_scalar("grad_norm", grad_norm)
        storage.put_scalars(
            smoothing_hint=False,
            **{
                "nan/skipped": guard.skipped,
                "nan/consecutive": guard.consecutive,
                "nan/rollbacks": guard.rollbacks,
                "clip/count": self.clip_count,
            },
        )
        storage.put_scalars(smoothing_hint=False, **self._data_counters())
        if outcome == "rollback":
            self.rollback()
            storage.put_scalar("nan/rollbacks", guard.rollbacks, smoothing_hint=False)

    def _data_counters(self) -> dict[str, float]:
        """``data/<key>`` running totals of the train loader (images skipped as unreadable,
        boxes dropped or clipped by the dataset reader and the mapper, dead-worker fallbacks),
        summed over DDP processes; empty for loaders without ``stats()``."""
        loader = getattr(self, "_train_loader", None)
        if not callable(getattr(loader, "stats", None)):
            return {}
        stats, base = loader.stats(), getattr(loader, "base_stats", {})
        counts = [float(stats.get(k, 0)) for k in DATA_COUNTERS]
        if comm.get_world_size() > 1:  # reader counts are the same on every rank: add them once
            own = [c - base.get(k, 0) for c, k in zip(counts, DATA_COUNTERS, strict=True)]
            t = torch.tensor(own, dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            counts = [v + base.get(k, 0) for v, k in zip(t.tolist(), DATA_COUNTERS, strict=True)]
        return {f"data/{k}": v for k, v in zip(DATA_COUNTERS, counts, strict=True)}

    def rollback(self) -> None:
        """Restore the newest healthy checkpoint and back off the LR (see ``nan_guard``)."""
        target = self.checkpointer.rollback_target()
        self.nan_guard.start_rollback(target)
        assert target is not None
        data = self.checkpointer.load(target, exclude=("scheduler",))
        self.nan_guard.restore_health(data.get("nan_guard", {}))
        self.scheduler.backoff(self.nan_guard.lr_backoff)
        self.optimizer.zero_grad(set_to_none=True)
        logger.warning(
            f"Rolled back to {os.path.basename(target)} (iteration {data.get('iteration')}), "
            f"the newest healthy checkpoint, after repeated non-finite steps; LR multiplied by "
            f"{self.nan_guard.lr_backoff} (now x{self.scheduler.lr_multiplier:g}); rollback "
            f"{self.nan_guard.rollbacks}/{self.nan_guard.max_rollbacks}."
        )
        if self.nan_guard.amp_off_after_rollback:
            self.disable_amp("SOLVER.NAN_GUARD.AMP_OFF_AFTER_ROLLBACK after a rollback")


def _mean_over_processes(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average logged loss values over DDP processes (every process logs the same numbers)."""
    world = comm.get_world_size()
    if world == 1 or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return {k: float(v) / world for k, v in zip(keys, t.tolist(), strict=True)}


def _finite(x: float) -> bool:
    return x == x and x not in (float("inf"), float("-inf"))


def _inject_input(data: list[dict], value: float) -> list[dict]:
    data = list(data)
    first = dict(data[0])
    first["image"] = torch.full_like(first["image"], value)
    data[0] = first
    return data


@torch.no_grad()
def _inject_grad(params: list[nn.Parameter], value: float) -> None:
    for p in params:
        if p.grad is not None:
            p.grad.view(-1)[0] = value
            return
