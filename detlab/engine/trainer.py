"""``Trainer``: the training loop with hooks, NaN guard, AMP, accumulation, EMA and checkpoints.

Typical use (what ``tools/train_net.py`` does)::

    cfg = default_setup(load_config("my.yaml"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    final_metrics = trainer.train()

Override the ``build_*`` classmethods to swap a component, or add hooks by name through
``TRAINER.EXTRA_HOOKS`` (``HOOK_REGISTRY``). One iteration (:meth:`run_step`) runs
``SOLVER.GRAD_ACCUM_STEPS`` loader batches forward and backward, checks every loss term and the
global gradient norm for non-finite values (the NaN guard), clips, steps the optimizer and
updates the EMA.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
from typing import Any

import torch
from torch import nn

from detlab.engine import default_hooks as H
from detlab.engine.checkpoint import (
    Checkpointer,
    all_finite,
    get_rng_state,
    load_checkpoint_file,
    set_rng_state,
    unwrap_model,
)
from detlab.engine.ema import ModelEMA
from detlab.engine.hooks import HOOK_REGISTRY, HookBase
from detlab.engine.nan_guard import NaNGuard
from detlab.engine.preflight import preflight_check
from detlab.solver import build_lr_scheduler, build_optimizer, clip_gradients, global_grad_norm
from detlab.utils import comm
from detlab.utils.errors import ConfigError
from detlab.utils.events import EventStorage, get_event_storage
from detlab.utils.file_io import atomic_write_text

__all__ = ["Trainer"]

logger = logging.getLogger("detlab")


class Trainer:
    """Builds model, optimizer, schedule, loaders and hooks from ``cfg`` and trains."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.max_iter = int(cfg.SOLVER.MAX_ITER)
        self.start_iter = 0
        self.iter = 0
        self.accum = max(1, int(cfg.SOLVER.GRAD_ACCUM_STEPS))
        self.stop_reason: str | None = None
        self.last_eval: tuple[int, dict] | None = None
        self.clip_count = 0
        self._resume_rng: Any = None
        _register_datasets(cfg)

        model = self.build_model(cfg)
        self.device = next(iter(model.parameters())).device
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self._setup_amp(cfg)
        self.ema = ModelEMA(model, cfg.SOLVER.EMA.DECAY) if cfg.SOLVER.EMA.ENABLED else None
        if comm.get_world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=ids, broadcast_buffers=False
            )
        self.model = model
        self.nan_guard = NaNGuard.from_config(cfg)
        clip = cfg.SOLVER.CLIP_GRADIENTS
        if clip.ENABLED and clip.CLIP_TYPE not in ("value", "norm", "full_model"):
            raise ConfigError(
                "SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be 'value', 'norm' or 'full_model', "
                f"got '{clip.CLIP_TYPE}'."
            )
        self.checkpointer = Checkpointer(
            model,
            cfg.OUTPUT_DIR,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            ema=self.ema,
            max_keep=cfg.SOLVER.CHECKPOINT_MAX_KEEP,
            enabled=comm.is_main_process(),
        )
        self.hooks: list[HookBase] = []
        self.register_hooks(self.build_hooks())

    # ------------------------------------------------------------------ builders
    @classmethod
    def build_model(cls, cfg: Any) -> nn.Module:
        from detlab.modeling import build_model

        model = build_model(cfg)
        n = sum(p.numel() for p in model.parameters())
        logger.info(f"Model {type(model).__name__}: {n / 1e6:.2f} M parameters")
        return model

    @classmethod
    def build_optimizer(cls, cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: Any, optimizer: torch.optim.Optimizer) -> Any:
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: Any, start_iter: int = 0) -> Any:
        """Infinite iterable of batches; ``start_iter`` = loader batches already consumed."""
        from detlab.data import build_detection_train_loader

        return build_detection_train_loader(cfg, start_iter=start_iter)

    @classmethod
    def build_test_loader(cls, cfg: Any, dataset_name: str) -> Any:
        from detlab.data import build_detection_test_loader

        return build_detection_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: Any, dataset_name: str, output_dir: str | None = None) -> Any:
        from detlab.evaluation import build_evaluator

        return build_evaluator(cfg, dataset_name, output_dir=output_dir)

    @classmethod
    def inference(cls, model: nn.Module, data_loader: Any, evaluator: Any) -> dict:
        from detlab.evaluation import inference_on_dataset

        return inference_on_dataset(model, data_loader, evaluator)

    @classmethod
    def test(cls, cfg: Any, model: nn.Module) -> dict:
        """Evaluate ``model`` on ``DATASETS.TEST`` (main process; result shared with all).

        One dataset: its results dict (``{"bbox": {...}}``); several: ``{name: results}``.
        """
        results: dict[str, Any] = {}
        if comm.is_main_process():
            for name in cfg.DATASETS.TEST:
                out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
                evaluator = cls.build_evaluator(cfg, name, output_dir=out_dir)
                if hasattr(evaluator, "distributed"):
                    evaluator.distributed = False  # evaluation runs on this process only
                loader = cls.build_test_loader(cfg, name)
                results[name] = cls.inference(unwrap_model(model), loader, evaluator)
                logger.info(f"Evaluation on {name}: {json.dumps(H.flatten_results(results[name]))}")
        results = comm.broadcast_object(results)  # type: ignore[assignment]
        if len(results) == 1:
            return next(iter(results.values()))
        return results

    def build_writers(self) -> list[Any]:
        """Writers of the main process: metrics.jsonl, TensorBoard, wandb (when enabled)."""
        from detlab.utils.writers import JSONWriter, TensorboardWriter, WandbWriter

        cfg, out = self.cfg, self.cfg.OUTPUT_DIR
        writers: list[Any] = [JSONWriter(os.path.join(out, "metrics.jsonl"))]
        if cfg.LOGGING.TENSORBOARD:
            writers.append(TensorboardWriter(out, self.start_iter, config_text=cfg.dump()))
        if cfg.LOGGING.WANDB.ENABLED:
            w = cfg.LOGGING.WANDB
            writers.append(WandbWriter(out, cfg.to_dict(), w.PROJECT, w.MODE, w.NAME))
        return writers

    def build_hooks(self) -> list[HookBase]:
        cfg = self.cfg
        hooks: list[HookBase] = [H.IterationTimer(), H.LRSchedulerHook()]
        if len(cfg.DATASETS.TEST):
            hooks.append(H.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate))
            b = cfg.SOLVER.BEST_CHECKPOINT
            hooks.append(H.BestCheckpointer(self, b.METRIC, b.MODE))
            e = cfg.SOLVER.EARLY_STOPPING
            if e.ENABLED:
                hooks.append(H.EarlyStopping(e.METRIC, e.MODE, e.PATIENCE, e.MIN_DELTA))
        hooks.append(H.PeriodicCheckpointer(self, cfg.SOLVER.CHECKPOINT_PERIOD))
        for name in cfg.TRAINER.EXTRA_HOOKS:
            hook_cls = HOOK_REGISTRY.get(name)
            hooks.append(hook_cls(**hook_cls.from_config(cfg)))
        hooks.append(_WriterHook(cfg.LOGGING.PERIOD, cfg.LOGGING.METRICS_PERIOD))
        return hooks

    def register_hooks(self, hooks: list[HookBase | None]) -> None:
        for h in hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    # ------------------------------------------------------------------ checkpoints
    def save(self, name: str, **extra: Any) -> str | None:
        """Used by :class:`BestCheckpointer`: save the model state under ``name``."""
        return self.checkpointer.save(name, **extra)

    def save_checkpoint(self, name: str, tag_last: bool = False) -> str | None:
        """Everything needed to continue exactly after the current iteration (all ranks call)."""
        rng = comm.all_gather_object(get_rng_state())
        hook_state = {
            f"{i}:{type(h).__name__}": h.state_dict()
            for i, h in enumerate(self.hooks)
            if hasattr(h, "state_dict")
        }
        path = self.checkpointer.save(
            name,
            tag_last=tag_last,
            iteration=self.iter,
            data_position=(self.iter + 1) * self.accum,
            rng=rng,
            nan_guard=self.nan_guard.state_dict(),
            hooks=hook_state,
            clip_count=self.clip_count,
            world_size=comm.get_world_size(),
        )
        comm.synchronize()
        return path

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in OUTPUT_DIR, continue that run exactly
        (``MODEL.WEIGHTS`` is then ignored); otherwise load ``MODEL.WEIGHTS`` if set."""
        path = self.checkpointer.last_checkpoint() if resume else None
        if path is None:
            if resume:
                logger.info(f"No checkpoint in {self.cfg.OUTPUT_DIR}; starting from scratch.")
            if self.cfg.MODEL.WEIGHTS:
                self.load_weights(self.cfg.MODEL.WEIGHTS)
            return
        data = self.checkpointer.load(path)
        self.start_iter = int(data["iteration"]) + 1
        self.nan_guard.load_state_dict(data.get("nan_guard", {}))
        self.clip_count = int(data.get("clip_count", 0))
        hook_state = data.get("hooks", {})
        for i, h in enumerate(self.hooks):
            key = f"{i}:{type(h).__name__}"
            if key in hook_state and hasattr(h, "load_state_dict"):
                h.load_state_dict(hook_state[key])
        rng = data.get("rng")
        if rng and len(rng) == comm.get_world_size():
            self._resume_rng = rng[comm.get_rank()]
        logger.info(f"Resumed from {path}: continuing at iteration {self.start_iter}")
        if comm.is_main_process():
            _trim_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.jsonl"), self.start_iter)
        comm.synchronize()

    def load_weights(self, path: str) -> None:
        """Initialise the model from ``path`` (a detlab checkpoint or a bare state dict)."""
        self.checkpointer.load(path, model_only=True)
        if self.ema is not None:
            self.ema.module.load_state_dict(unwrap_model(self.model).state_dict())
        logger.info(f"Loaded weights from {path}")

    # ------------------------------------------------------------------ loop
    def request_stop(self, reason: str) -> None:
        """Finish after the current iteration (used by early stopping)."""
        self.stop_reason = reason
        logger.info(f"Stopping: {reason}")

    def train(self) -> dict[str, Any]:
        """Run iterations ``start_iter .. MAX_ITER-1``; return (and write) the final metrics."""
        cfg = self.cfg
        logger.info(f"Starting training from iteration {self.start_iter} to {self.max_iter}")
        loader = self.build_train_loader(cfg, start_iter=self.start_iter * self.accum)
        self._data_iter = iter(loader)
        if cfg.TRAINER.PREFLIGHT and self.start_iter < self.max_iter:
            first = next(self._data_iter)
            losses = preflight_check(unwrap_model(self.model), first, len(cfg.MODEL.PIXEL_MEAN))
            logger.info(f"Pre-flight check passed: {losses}")
            self._data_iter = itertools.chain([first], self._data_iter)
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        if self.nan_guard.enabled and not self.checkpointer.periodic_checkpoints():
            self.iter = self.start_iter - 1
            self.save_checkpoint("model_init")  # the rollback target before the first save
        with EventStorage(self.start_iter) as self.storage:
            try:
                for h in self.hooks:
                    h.before_train()
                for it in range(self.start_iter, self.max_iter):
                    self.iter = self.storage.iter = it
                    for h in self.hooks:
                        h.before_step()
                    self.run_step()
                    for h in self.hooks:
                        h.after_step()
                    if self.stop_reason is not None:
                        break
            finally:
                for h in self.hooks:
                    h.after_train()
        return self._final_metrics()

    def _final_metrics(self) -> dict[str, Any]:
        if self.last_eval is None and len(self.cfg.DATASETS.TEST) and self.start_iter > 0:
            self.last_eval = (self.iter, self._evaluate())  # resumed a finished run
        results = dict(self.last_eval[1]) if self.last_eval else {}
        best = next((h for h in self.hooks if isinstance(h, H.BestCheckpointer)), None)
        results["best_iteration"] = best.tracker.best_iter if best else None
        results["iteration"] = self.iter
        if self.stop_reason:
            results["stop_reason"] = self.stop_reason
        if comm.is_main_process():
            path = os.path.join(self.cfg.OUTPUT_DIR, "final_metrics.json")
            atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True) + "\n")
            logger.info(f"Final metrics written to {path}")
        return results

    def _evaluate(self) -> dict[str, Any]:
        results = self.test(self.cfg, self.model)
        if self.ema is not None:
            results = dict(results)
            results["ema"] = self.test(self.cfg, self.ema.module)
        log = self.cfg.LOGGING
        if comm.is_main_process() and log.NUM_SAMPLE_IMAGES > 0 and log.TENSORBOARD:
            from detlab.engine.samples import log_sample_images

            log_sample_images(self, get_event_storage())
        return results

    # ------------------------------------------------------------------ one iteration
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
        if outcome == "rollback":
            self.rollback()
            storage.put_scalar("nan/rollbacks", guard.rollbacks, smoothing_hint=False)

    def rollback(self) -> None:
        """Restore the newest checkpoint with finite weights and back off the LR."""
        target = self._last_good_checkpoint()
        self.nan_guard.start_rollback(target)
        assert target is not None
        data = self.checkpointer.load(target, exclude=("scheduler",))
        self.scheduler.backoff(self.nan_guard.lr_backoff)
        self.optimizer.zero_grad(set_to_none=True)
        logger.warning(
            f"Rolled back to {os.path.basename(target)} (iteration {data.get('iteration')}) "
            f"after repeated non-finite steps; LR multiplied by {self.nan_guard.lr_backoff} "
            f"(now x{self.scheduler.lr_multiplier:g}); rollback {self.nan_guard.rollbacks}"
            f"/{self.nan_guard.max_rollbacks}."
        )

    def _last_good_checkpoint(self) -> str | None:
        candidates = self.checkpointer.periodic_checkpoints()[::-1]
        candidates.append(os.path.join(self.cfg.OUTPUT_DIR, "model_init.pth"))
        for path in candidates:
            if not os.path.isfile(path):
                continue
            try:
                data = load_checkpoint_file(path)
            except Exception:  # noqa: BLE001 - an unreadable file is not a rollback target
                continue
            if all_finite(data.get("model", {})):
                return path
        return None


class _WriterHook(H.PeriodicWriter):
    """PeriodicWriter whose writers are built at train start (after a resume is known)."""

    def __init__(self, period: int, metrics_period: int) -> None:
        super().__init__([], None, period, metrics_period)

    def before_train(self) -> None:
        if comm.is_main_process():
            from detlab.utils.writers import ConsoleWriter

            self.writers = self.trainer.build_writers()
            self.console = ConsoleWriter(self.trainer.max_iter)


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


def _trim_metrics(path: str, start_iter: int) -> None:
    """Drop metrics.jsonl lines a killed run wrote after its last checkpoint."""
    if not os.path.isfile(path):
        return
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line).get("iteration", -1) < start_iter:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by the crash
    atomic_write_text(path, "".join(keep))


def _register_datasets(cfg: Any) -> None:
    """Register ``DATASETS.REGISTER`` entries when the data package provides it."""
    if not len(cfg.DATASETS.REGISTER):
        return
    import detlab.data as data

    register = getattr(data, "register_from_config", None)
    if register is not None:
        register(cfg)
