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

import itertools
import json
import logging
import os
import signal
from typing import Any

import torch
from torch import nn

from detlab.engine import default_hooks as H
from detlab.engine.checkpoint import (
    Checkpointer,
    get_rng_state,
    set_rng_state,
    unwrap_model,
)
from detlab.engine.ema import ModelEMA
from detlab.engine.hooks import HOOK_REGISTRY, HookBase
from detlab.engine.nan_guard import NaNGuard
from detlab.engine.preemption import PreemptionHandler, TrainingPreempted, request_requeue
from detlab.engine.preflight import parameters_without_grad, preflight_check
from detlab.engine.run_dir import release_output_dir, trim_metrics
from detlab.engine.train_step import TrainStepMixin
from detlab.solver import build_lr_scheduler, build_optimizer
from detlab.utils import comm
from detlab.utils.errors import ConfigError
from detlab.utils.events import EventStorage, get_event_storage
from detlab.utils.file_io import atomic_write_text, read_json_object

__all__ = ["Trainer"]

logger = logging.getLogger("detlab")


class Trainer(TrainStepMixin):
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
        self._train_loader: Any = None
        register_datasets(cfg)

        model = self.build_model(cfg)
        self.device = next(iter(model.parameters())).device
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self._setup_amp(cfg)
        self.ema = ModelEMA(model, cfg.SOLVER.EMA.DECAY) if cfg.SOLVER.EMA.ENABLED else None
        self.model = model  # wrapped in DistributedDataParallel at the start of train()
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
        """Evaluate ``model`` on ``DATASETS.TEST``; every process gets the same results.

        Each process runs its shard of the test loader; the evaluator gathers predictions on
        the main process, whose results are then shared. One dataset: its results dict
        (``{"bbox": {...}}``); several: ``{name: results}``.
        """
        results: dict[str, Any] = {}
        for name in cfg.DATASETS.TEST:
            out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            loader = cls.build_test_loader(cfg, name)  # registers DATASETS.REGISTER entries
            evaluator = cls.build_evaluator(cfg, name, output_dir=out_dir)
            results[name] = cls.inference(unwrap_model(model), loader, evaluator)
        results = comm.broadcast_object(results)  # type: ignore[assignment]
        for name, res in results.items():
            logger.info(f"Evaluation on {name}: {json.dumps(H.flatten_results(res))}")
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
            health=self.nan_guard.health(),
        )
        comm.synchronize()
        return path

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in OUTPUT_DIR, continue that run exactly
        (``MODEL.WEIGHTS`` is then ignored); otherwise load ``MODEL.WEIGHTS`` if set."""
        path = self.checkpointer.resume_checkpoint() if resume else None
        if path is None:
            if resume:
                logger.info(f"No checkpoint in {self.cfg.OUTPUT_DIR}; starting from scratch.")
                if comm.is_main_process():  # rows of a run killed before its first checkpoint
                    trim_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.jsonl"), 0)
            if self.cfg.MODEL.WEIGHTS:
                self.load_weights(self.cfg.MODEL.WEIGHTS)
            return
        data = self.checkpointer.load(path)
        self.start_iter = int(data["iteration"]) + 1
        self.nan_guard.load_state_dict(data.get("nan_guard", {}))
        if self.nan_guard.amp_off:
            self.disable_amp("it was switched off after a rollback earlier in this run")
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
            trim_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.jsonl"), self.start_iter)
        comm.synchronize()

    def load_weights(self, path: str) -> None:
        """Initialise the model from ``path``: a detlab checkpoint, a bare state dict or a
        torchvision backbone/detector state dict (see :func:`detlab.modeling.load_weights`)."""
        from detlab.modeling import load_weights

        load_weights(unwrap_model(self.model), path)
        if self.ema is not None:
            self.ema.module.load_state_dict(unwrap_model(self.model).state_dict())
        logger.info(f"Loaded weights from {path}")

    # ------------------------------------------------------------------ loop
    def request_stop(self, reason: str) -> None:
        """Finish after the current iteration (used by early stopping)."""
        self.stop_reason = reason
        logger.info(f"Stopping: {reason}")

    def train(self) -> dict[str, Any]:
        """Run iterations ``start_iter .. MAX_ITER-1``; return (and write) the final metrics.

        SIGTERM, SIGUSR1 or SIGUSR2 end the run after the current iteration with a checkpoint
        (:class:`~detlab.engine.preemption.TrainingPreempted`). At the end, in any way, the
        lock on ``OUTPUT_DIR`` taken by :func:`~detlab.engine.default_setup` is released.
        """
        try:
            return self._train()
        finally:
            release_output_dir(self.cfg.OUTPUT_DIR)

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.start_iter >= self.max_iter:
            if self.start_iter:
                logger.info(
                    f"The run in {cfg.OUTPUT_DIR} already finished (iteration {self.start_iter} "
                    f"of {self.max_iter}); nothing to train. Raise SOLVER.MAX_ITER to train longer."
                )
            else:
                logger.info("SOLVER.MAX_ITER is 0: nothing to train.")
            self.iter = self.start_iter - 1
            with EventStorage(self.start_iter) as self.storage:
                return self._final_metrics()
        logger.info(f"Starting training from iteration {self.start_iter} to {self.max_iter}")
        loader = self.build_train_loader(cfg, start_iter=self.start_iter * self.accum)
        self._train_loader = loader  # its stats() become the data/* scalars
        self._data_iter = iter(loader)
        ddp = comm.get_world_size() > 1 and unwrap_model(self.model) is self.model
        if cfg.TRAINER.PREFLIGHT or ddp:
            first = next(self._data_iter)
            if cfg.TRAINER.PREFLIGHT:
                losses = preflight_check(unwrap_model(self.model), first, len(cfg.MODEL.PIXEL_MEAN))
                logger.info(f"Pre-flight check passed: {losses}")
            if ddp:
                self._wrap_ddp(first)
            self._data_iter = itertools.chain([first], self._data_iter)
        if self._resume_rng is not None:
            set_rng_state(self._resume_rng)
        self.iter = self.start_iter - 1  # the last completed iteration
        if self.nan_guard.enabled and not self.checkpointer.periodic_checkpoints():
            self.save_checkpoint("model_init")  # the rollback target before the first save
        with EventStorage(self.start_iter) as self.storage, PreemptionHandler() as preempt:
            try:
                for h in self.hooks:
                    h.before_train()
                for it in range(self.start_iter, self.max_iter):
                    self.iter = self.storage.iter = it
                    for h in self.hooks:
                        h.before_step()
                    rollbacks = self.nan_guard.rollbacks
                    self.run_step()
                    self._after_run_step(rolled_back=self.nan_guard.rollbacks != rollbacks)
                    for h in self.hooks:
                        h.after_step()
                    if self.stop_reason is not None:
                        break
                    last = it + 1 == self.max_iter
                    if not last and comm.all_reduce_any(preempt.signum is not None, self.device):
                        self._stop_preempted(preempt.signum)
            except BaseException:
                self._after_train(failing=True)
                raise
            self._after_train(failing=False)
            return self._final_metrics()

    def _after_train(self, failing: bool) -> None:
        """Hooks' ``after_train``; while an error ends the run, theirs must not replace it."""
        for h in self.hooks:
            if not failing:
                h.after_train()
                continue
            try:
                h.after_train()
            except Exception as err:  # noqa: BLE001 - the original error is the one to report
                logger.warning(f"{type(h).__name__}.after_train failed while stopping: {err}")

    def _after_run_step(self, rolled_back: bool) -> None:
        """Feed the NaN guard's health record with this iteration's total loss."""
        total = self.storage.latest().get("total_loss")
        if not rolled_back:  # after a rollback the window is the target's
            self.nan_guard.observe_loss(total[0] if total and total[1] == self.iter else None)

    def _stop_preempted(self, signum: int | None) -> None:
        """Save a checkpoint after this iteration (unless one was just saved) and stop."""
        name = f"model_{self.iter:07d}"
        last = self.checkpointer.last_checkpoint() if comm.is_main_process() else None
        saved = last is not None and os.path.basename(last) == f"{name}.pth"
        if not comm.broadcast_object(saved):  # every rank takes part in the save
            self.save_checkpoint(name, tag_last=True)
        sig = signal.Signals(signum).name if signum else "a preemption signal (on another rank)"
        note = request_requeue(signum) if signum and comm.is_main_process() else ""
        raise TrainingPreempted(
            f"Stopped by {sig} after iteration {self.iter}: saved {name}.pth in "
            f"{self.cfg.OUTPUT_DIR}; continue with --resume" + (f" ({note})" if note else "") + ".",
            signum or 0,
        )

    def disable_amp(self, why: str) -> None:
        """Train in full precision from now on (the NaN guard's AMP-off fallback)."""
        if self.amp_dtype is None:
            return
        self.amp_dtype = None
        self.scaler = None
        self.checkpointer.scaler = None
        self.nan_guard.amp_off = True
        logger.warning(f"Mixed precision switched off: {why}.")

    def _wrap_ddp(self, batch: list[dict]) -> None:
        """Wrap the model for DDP; look for unused parameters only if this batch leaves some
        parameters without a gradient (e.g. a backbone stage the FPN does not read)."""
        unused = parameters_without_grad(self.model, batch)
        find_unused = comm.all_reduce_any(bool(unused), self.device)
        if find_unused:
            logger.info(
                f"{len(unused)} parameter tensors get no gradient (e.g. {', '.join(unused[:3])}); "
                "DistributedDataParallel will look for unused parameters every step."
            )
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = nn.parallel.DistributedDataParallel(
            self.model, device_ids=ids, broadcast_buffers=False, find_unused_parameters=find_unused
        )
        self.checkpointer.model = self.model

    def _final_metrics(self) -> dict[str, Any]:
        path = os.path.join(self.cfg.OUTPUT_DIR, "final_metrics.json")
        if self.last_eval is None and len(self.cfg.DATASETS.TEST) and self.start_iter > 0:
            # Resumed a run whose last evaluation is not in memory (it finished, or was
            # stopped right after its last iteration): reuse its final metrics if written.
            previous = read_json_object(path) if self.start_iter >= self.max_iter else None
            if previous is not None:
                logger.info(f"Final metrics of the finished run: {path}")
                return previous
            self.last_eval = (self.iter, self._evaluate())
        results = dict(self.last_eval[1]) if self.last_eval else {}
        best = next((h for h in self.hooks if isinstance(h, H.BestCheckpointer)), None)
        results["best_iteration"] = best.tracker.best_iter if best else None
        results["iteration"] = self.iter
        if self.stop_reason:
            results["stop_reason"] = self.stop_reason
        if comm.is_main_process():
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


class _WriterHook(H.PeriodicWriter):
    """PeriodicWriter whose writers are built at train start (after a resume is known)."""

    def __init__(self, period: int, metrics_period: int) -> None:
        super().__init__([], None, period, metrics_period)

    def before_train(self) -> None:
        if comm.is_main_process():
            from detlab.utils.writers import ConsoleWriter

            self.writers = self.trainer.build_writers()
            self.console = ConsoleWriter(self.trainer.max_iter)


def register_datasets(cfg: Any) -> None:
    """Register the config's ``DATASETS.REGISTER`` entries (safe to call repeatedly)."""
    if not len(cfg.DATASETS.REGISTER):
        return
    from detlab.data import register_from_config

    register_from_config(cfg)
