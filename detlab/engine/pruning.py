"""``SweepPruningHook``: a sweep study's pruner, applied at the trainer's periodic evaluations.

The sweep adds this hook (``TRAINER.EXTRA_HOOKS``) to the trials of an Optuna study. After
each evaluation (``TEST.EVAL_PERIOD``) the main process reports the metric to the study and
asks the pruner; when the trial is to stop, every process stops after this iteration, with a
checkpoint of it tagged in ``last_checkpoint`` (so ``--resume`` continues the trial) and
``final_metrics.json`` saying why (``stop_reason``). Outside a sweep study the hook does
nothing. The Optuna side lives in :mod:`detlab.sweep.trial_link`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from detlab.engine.hooks import HOOK_REGISTRY, HookBase
from detlab.utils import comm

__all__ = ["SweepPruningHook"]

logger = logging.getLogger("detlab")


@HOOK_REGISTRY.register()
class SweepPruningHook(HookBase):
    """Reports periodic evaluations to the sweep study; stops the run when it is pruned.

    ``link`` is any object with ``report(step, results) -> bool`` (default: the
    :class:`~detlab.sweep.trial_link.TrialLink` described by the environment).
    """

    def __init__(self, link: Any = None) -> None:
        self.link = link
        self.pruned_at: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {}

    def before_train(self) -> None:
        if self.link is None and comm.is_main_process():
            from detlab.sweep.trial_link import TrialLink

            self.link = TrialLink.from_env()
            if self.link is None:
                logger.info("SweepPruningHook: not a trial of a sweep study; nothing to report.")

    def after_step(self) -> None:
        last = self.trainer.last_eval
        it = self.trainer.iter
        if last is None or last[0] != it:
            return
        prune = False
        final = it + 1 >= self.trainer.max_iter  # a trial that ran its schedule is complete
        if self.link is not None and comm.is_main_process():
            prune = bool(self.link.report(it + 1, last[1], may_prune=not final))
        prune = bool(comm.broadcast_object(prune))
        if not prune or self.trainer.stop_reason is not None:
            return
        self.pruned_at = it + 1
        self.trainer.request_stop(f"pruned by the sweep after {it + 1} iterations")
        name = f"model_{it:07d}"
        tagged = self.trainer.checkpointer.last_checkpoint()
        if tagged is None or os.path.basename(tagged) != f"{name}.pth":
            self.trainer.save_checkpoint(name, tag_last=True)  # the periodic one ran before us
