"""One training iteration as an object: forward → check → backward → clip → step.

:class:`TrainStep` owns what one optimizer step touches: the model, the optimizer, AMP
(autocast dtype and fp16 gradient scaler), the gradient clipper, the NaN guard and the EMA.
The trainer calls it once per iteration with its batch iterator and gets back the NaN guard's
verdict (``"ok"``, ``"skip"`` or ``"rollback"``; rolling back is the trainer's job, it owns
the checkpoints and the schedule).

Phases of :meth:`TrainStep.__call__`:

1. **forward** each of the ``accum_steps`` loader batches under autocast;
2. **check** every loss term for non-finite values (agreed over DDP processes); a bad batch
   skips the step, but the remaining batches are still drawn so the data position stays exact;
3. **backward** the loss divided by ``accum_steps`` (gradients synchronise on the last batch);
4. **clip**: unscale (fp16), global gradient norm (non-finite → skip, or on fp16 an overflow
   the scaler absorbs), then the clipper;
5. **step** the optimizer (through the scaler on fp16) and update the EMA.

Logged each iteration: the loss terms and ``total_loss``, ``grad_norm``, ``data_time``,
``nan/skipped``, ``nan/consecutive``, ``nan/rollbacks``, ``clip/count`` (and
``clip/params_clipped``, ``amp/overflow`` when they happen).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from detlab.engine.checkpoint import unwrap_model
from detlab.engine.nan_guard import NaNGuard
from detlab.solver import GradientClipper, build_gradient_clipper, global_grad_norm
from detlab.utils import comm
from detlab.utils.errors import ConfigError
from detlab.utils.events import get_event_storage

__all__ = ["TrainStep", "amp_settings"]

logger = logging.getLogger("detlab")


def amp_settings(cfg: Any, device: torch.device) -> tuple[torch.dtype | None, Any]:
    """``SOLVER.AMP`` → (autocast dtype or None, ``GradScaler`` or None).

    CUDA: bf16 or fp16 (fp16 with a gradient scaler). CPU: bf16 (fp16 falls back, warned).
    """
    amp = cfg.SOLVER.AMP
    if not amp.ENABLED:
        return None, None
    if amp.DTYPE not in ("bfloat16", "float16"):
        raise ConfigError(f"SOLVER.AMP.DTYPE must be bfloat16 or float16, got '{amp.DTYPE}'.")
    if device.type == "cuda":
        dtype = getattr(torch, amp.DTYPE)
        return dtype, torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    if amp.DTYPE == "float16":
        logger.warning("SOLVER.AMP.DTYPE float16 is CUDA-only; using bfloat16 on CPU.")
    return torch.bfloat16, None


class TrainStep:
    """One optimizer step over ``accum_steps`` loader batches (see the module docstring).

    Args:
        model: the detector (training mode returns a dict of scalar losses); may be replaced by
            its DDP wrapper later (assign ``train_step.model``).
        optimizer: its optimizer.
        nan_guard: decides skip / rollback on non-finite steps; disabled, a non-finite loss
            raises ``FloatingPointError`` (Detectron2's behaviour).
        clipper: gradient clipper, or None for no clipping.
        grad_norm_type: p of the logged global gradient norm.
        accum_steps: loader batches per optimizer step.
        amp_dtype, scaler: from :func:`amp_settings`.
        ema: optional :class:`~detlab.engine.ema.ModelEMA`, updated after each step.
        device: where losses are all-reduced (the model's device).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        nan_guard: NaNGuard,
        *,
        clipper: GradientClipper | None = None,
        grad_norm_type: float = 2.0,
        accum_steps: int = 1,
        amp_dtype: torch.dtype | None = None,
        scaler: Any = None,
        ema: Any = None,
        device: torch.device | None = None,
    ) -> None:
        self.model, self.optimizer, self.nan_guard = model, optimizer, nan_guard
        self.clipper, self.grad_norm_type = clipper, float(grad_norm_type)
        self.accum_steps = max(1, int(accum_steps))
        self.amp_dtype, self.scaler, self.ema = amp_dtype, scaler, ema
        self.device = device or next(iter(model.parameters())).device
        self.clip_count = 0  # iterations in which the clipper changed a gradient

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        nan_guard: NaNGuard,
        ema: Any = None,
    ) -> dict[str, Any]:
        device = next(iter(model.parameters())).device
        amp_dtype, scaler = amp_settings(cfg, device)
        return {
            "model": model,
            "optimizer": optimizer,
            "nan_guard": nan_guard,
            "clipper": build_gradient_clipper(cfg),
            "grad_norm_type": cfg.SOLVER.CLIP_GRADIENTS.NORM_TYPE,
            "accum_steps": cfg.SOLVER.GRAD_ACCUM_STEPS,
            "amp_dtype": amp_dtype,
            "scaler": scaler,
            "ema": ema,
            "device": device,
        }

    # ------------------------------------------------------------------ phases
    def forward(self, data: list[dict], iteration: int, first: bool) -> dict[str, torch.Tensor]:
        """Losses of one loader batch (float32), with the NaN guard's debug injections."""
        guard = self.nan_guard
        if first and guard.injects(iteration, "input"):
            data = _inject_input(data, guard.inject_value)
        autocast = (
            torch.autocast(self.device.type, dtype=self.amp_dtype)
            if self.amp_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            loss_dict = self.model(data)
        loss_dict = {k: v.float() for k, v in loss_dict.items()}
        if first and guard.injects(iteration, "loss"):
            k = sorted(loss_dict)[0]
            loss_dict[k] = loss_dict[k] + guard.inject_value
        return loss_dict

    def check(self, loss_dict: dict[str, torch.Tensor], iteration: int, logged: dict) -> str:
        """ "" when every term is finite on every process, else what was not finite."""
        bad = [k for k, v in loss_dict.items() if not bool(torch.isfinite(v).all())]
        if not comm.all_reduce_any(bool(bad), self.device):
            return ""
        if not self.nan_guard.enabled:
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={iteration}! loss_dict = {logged}"
            )
        return f"loss ({', '.join(bad) or 'on another process'})"

    def backward(self, loss_dict: dict[str, torch.Tensor], last: bool) -> None:
        """Backward of the summed losses / ``accum_steps``; DDP syncs on the last batch only."""
        losses = sum(loss_dict.values()) / self.accum_steps
        defer = not last and hasattr(self.model, "no_sync")
        with self.model.no_sync() if defer else contextlib.nullcontext():
            (self.scaler.scale(losses) if self.scaler is not None else losses).backward()

    def grad_norm(self, params: list[nn.Parameter], iteration: int) -> tuple[float, bool]:
        """Unscale (fp16); return this process's global gradient norm and whether the norms
        are finite on every process."""
        if self.nan_guard.injects(iteration, "grad"):
            _inject_grad(params, self.nan_guard.inject_value)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = float(global_grad_norm(params, self.grad_norm_type))
        return norm, not comm.all_reduce_any(not _finite(norm), self.device)

    def clip(self, params: list[nn.Parameter], grad_norm: float) -> None:
        if self.clipper is None:
            return
        n = self.clipper(params, torch.tensor(grad_norm))
        self.clip_count += int(n > 0)
        get_event_storage().put_scalar("clip/params_clipped", n, smoothing_hint=False)

    def step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.ema is not None:
            self.ema.update(unwrap_model(self.model))

    # ------------------------------------------------------------------ one iteration
    def __call__(
        self,
        data_iter: Iterator[list[dict]],
        iteration: int,
        after_backward: Callable[[], None] | None = None,
    ) -> str:
        """Run one iteration; return the NaN guard's verdict ``"ok" | "skip" | "rollback"``."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        bad, data_time, logged = "", 0.0, {}
        for micro in range(self.accum_steps):
            t0 = time.perf_counter()
            data = next(data_iter)
            data_time += time.perf_counter() - t0
            if bad:
                continue  # keep drawing batches so the data position stays exact
            loss_dict = self.forward(data, iteration, first=micro == 0)
            for k, v in loss_dict.items():
                logged[k] = logged.get(k, 0.0) + float(v.detach()) / self.accum_steps
            bad = self.check(loss_dict, iteration, logged)
            if not bad:
                self.backward(loss_dict, last=micro == self.accum_steps - 1)
        if after_backward is not None:
            after_backward()

        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = float("nan")
        if not bad:
            grad_norm, finite = self.grad_norm(params, iteration)
            if not finite:
                bad = "gradient norm"
        verdict = "ok"
        if self.scaler is not None and bad == "gradient norm":
            self.scaler.update()  # fp16 overflow: the scaler lowers its scale, nothing is wrong
            get_event_storage().put_scalar("amp/overflow", 1.0)
        elif self.nan_guard.enabled:
            verdict = self.nan_guard.record(iteration, bool(bad), bad)
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
        else:
            self.clip(params, grad_norm)
            self.step()
        self._log(logged, grad_norm, data_time)
        return verdict

    def _log(self, logged: dict[str, float], grad_norm: float, data_time: float) -> None:
        storage, guard = get_event_storage(), self.nan_guard
        storage.put_scalar("data_time", data_time)
        logged = _mean_over_processes(logged, self.device)
        for k, v in logged.items():
            storage.put_scalar(k, v)
        if logged:
            storage.put_scalar("total_loss", sum(logged.values()))
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
