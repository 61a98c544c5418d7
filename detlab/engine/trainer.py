"""``Trainer``: the training loop with hooks, NaN guard, AMP, accumulation, EMA and checkpoints.

Typical use (what ``tools/train_net.py`` does)::

    cfg = default_setup(load_config("my.yaml"))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    final_metrics = trainer.train()

Override the ``build_*`` classmethods to swap a component, or add hooks by name through
``TRAINER.EXTRA_HOOKS`` (``HOOK_REGISTRY``). One iteration (:meth:`run_step`) is a
:class:`~detlab.engine.train_step.TrainStep`: ``SOLVER.GRAD_ACCUM_STEPS`` loader batches
forward and backward, every loss term and the global gradient norm checked for non-finite
values (the NaN guard), clipping, the optimizer step and the EMA update; when the guard asks for
it the trainer rolls back to the newest checkpoint with finite weights.
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
from detlab.engine.train_step import TrainStep
from detlab.solver import build_lr_scheduler, build_optimizer
from detlab.utils import comm
from detlab.utils.events import EventStorage, get_event_storage
from detlab.utils.file_io import atomic_write_text, read_json_object
from detlab.utils.registry import instantiate

__all__ = ["Trainer"]

logger = logging.getLogger("detlab")
DATA_COUNTERS = ("skipped_images", "dropped_boxes", "clipped_boxes", "worker_failures")


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
        self._resume_rng: Any = None
        self._train_loader: Any = None
        register_datasets(cfg)

        model = self.build_model(cfg)
        self.device = next(iter(model.parameters())).device
        self.optimizer = self.build_optimizer(cfg, model)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        self.ema = ModelEMA(model, cfg.SOLVER.EMA.DECAY) if cfg.SOLVER.EMA.ENABLED else None
        self.model = model  # wrapped in DistributedDataParallel at the start of train()
        self.nan_guard = instantiate(NaNGuard, cfg)
        self.train_step = instantiate(
            TrainStep, cfg, model, self.optimizer, self.nan_guard, self.ema
        )
        self.checkpointer = Checkpointer(
            model,
            cfg.OUTPUT_DIR,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.train_step.scaler,
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
            hooks.append(H.BestCheckpointer(self.checkpointer, b.METRIC, b.MODE))
            e = cfg.SOLVER.EARLY_STOPPING
            if e.ENABLED:
                hooks.append(H.EarlyStopping(e.METRIC, e.MODE, e.PATIENCE, e.MIN_DELTA))
        hooks.append(H.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        hooks += [HOOK_REGISTRY.build(name, cfg) for name in cfg.TRAINER.EXTRA_HOOKS]
        hooks.append(_WriterHook(cfg.LOGGING.PERIOD, cfg.LOGGING.METRICS_PERIOD))
        return hooks

    def register_hooks(self, hooks: list[HookBase | None]) -> None:
        for h in hooks:
            if h is not None:
                h.trainer = self
                self.hooks.append(h)

    # ------------------------------------------------------------------ checkpoints
    def training_state(self) -> dict[str, Any]:
        """Trainer state saved beside the weights, to continue exactly after the current
        iteration (a collective: every rank calls it). Hook state is keyed by hook class name,
        so reordering hooks keeps it."""
        keys = hook_state_keys(self.hooks)
        return {
            "iteration": self.iter,
            "data_position": (self.iter + 1) * self.accum,
            "rng": comm.all_gather_object(get_rng_state()),
            "nan_guard": self.nan_guard.state_dict(),
            "hooks": {
                k: h.state_dict()
                for k, h in zip(keys, self.hooks, strict=True)
                if hasattr(h, "state_dict")
            },
            "clip_count": self.clip_count,
            "world_size": comm.get_world_size(),
            "health": self.nan_guard.health(),  # see detlab.engine.nan_guard
        }

    def save_checkpoint(self, name: str, tag_last: bool = False) -> str | None:
        """Weights and :meth:`training_state` as ``name.pth`` (all ranks call)."""
        path = self.checkpointer.save(name, tag_last=tag_last, **self.training_state())
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
        hook_state = by_hook_class(data.get("hooks", {}))
        for key, h in zip(hook_state_keys(self.hooks), self.hooks, strict=True):
            if key in hook_state and hasattr(h, "load_state_dict"):
                h.load_state_dict(hook_state[key])
        rng = data.get("rng")
        if rng and len(rng) == comm.get_world_size():
            self._resume_rng = rng[comm.get_rank()]
        logger.info(f"Resumed from {path}: continuing at iteration {self.start_iter}")
        if comm.is_main_process():
            trim_metrics(os.path.join(self.cfg.OUTPUT_DIR, "metrics.jsonl"), self.start_iter)
        comm.synchronize()

    def load_weights(self, spec: str) -> None:
        """Initialise the model (and its EMA) from ``MODEL.WEIGHTS`` with
        :func:`detlab.modeling.load_model_weights`."""
        from detlab.modeling import load_model_weights

        load_model_weights(unwrap_model(self.model), spec)
        if self.ema is not None:
            self.ema.module.load_state_dict(unwrap_model(self.model).state_dict())

    # ------------------------------------------------------------------ loop
    def request_stop(self, reason: str) -> None:
        """Finish after the current iteration (used by early stopping)."""
        self.stop_reason = reason
        logger.info(f"Stopping: {reason}")

    @property
    def clip_count(self) -> int:
        """Iterations in which gradient clipping changed a gradient (saved in checkpoints)."""
        return self.train_step.clip_count

    @clip_count.setter
    def clip_count(self, value: int) -> None:
        self.train_step.clip_count = int(value)

    def run_step(self) -> None:
        """One iteration (:class:`TrainStep`); roll back when the NaN guard asks for it."""
        hooks = self.hooks

        def after_backward() -> None:
            for h in hooks:
                h.after_backward()

        verdict = self.train_step(self._data_iter, self.iter, after_backward)
        storage = get_event_storage()
        storage.put_scalars(smoothing_hint=False, **self._data_counters())
        if verdict == "rollback":
            self.rollback()
            storage.put_scalar("nan/rollbacks", self.nan_guard.rollbacks, smoothing_hint=False)

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
        if self.train_step.amp_dtype is None:
            return
        self.train_step.amp_dtype = None
        self.train_step.scaler = None
        self.checkpointer.scaler = None
        self.nan_guard.amp_off = True
        logger.warning(f"Mixed precision switched off: {why}.")

    def _wrap_ddp(self, batch: list[dict]) -> None:
        """Wrap the model for DDP; look for unused parameters only if this batch leaves some
        parameters without a gradient (e.g. a backbone stage the FPN does not read)."""
        from detlab.modeling.layers import check_sync_batchnorm

        check_sync_batchnorm(self.model, self.device)
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
        self.train_step.model = self.model

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


def hook_state_keys(hooks: list[Any]) -> list[str]:
    """Checkpoint keys of hook state: the class name (``Name#2`` for a second of a class)."""
    seen: dict[str, int] = {}
    keys = []
    for h in hooks:
        name = type(h).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


def by_hook_class(state: dict[str, Any]) -> dict[str, Any]:
    """Hook state keyed as :func:`hook_state_keys` does; also reads checkpoints that keyed it
    by position (``"3:BestCheckpointer"``)."""
    legacy = sorted(
        (int(k.split(":", 1)[0]), k.split(":", 1)[1], v)
        for k, v in state.items()
        if ":" in k and k.split(":", 1)[0].isdigit()
    )
    out = {k: v for k, v in state.items() if not (":" in k and k.split(":", 1)[0].isdigit())}
    seen: dict[str, int] = {}
    for _, name, value in legacy:
        seen[name] = seen.get(name, 0) + 1
        out.setdefault(name if seen[name] == 1 else f"{name}#{seen[name]}", value)
    return out


def register_datasets(cfg: Any) -> None:
    """Register the config's ``DATASETS.REGISTER`` entries (safe to call repeatedly)."""
    if not len(cfg.DATASETS.REGISTER):
        return
    from detlab.data import register_from_config

    register_from_config(cfg)
