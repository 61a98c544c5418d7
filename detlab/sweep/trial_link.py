"""A training process's line to its sweep study: report evaluations, learn whether to stop.

A sweep worker starts each trial as its own process (``tools/train_net.py``) and tells it,
through the environment, where the study is (``DETLAB_SWEEP_STORAGE``, ``DETLAB_SWEEP_STUDY``),
which Optuna trial it is (``DETLAB_SWEEP_TRIAL_ID``), the metric (``DETLAB_SWEEP_METRIC``) and
the pruner (``DETLAB_SWEEP_PRUNER``, JSON). :meth:`TrialLink.report` writes an evaluation to
the study as the trial's intermediate value at step = iterations done, and asks the pruner,
which compares it with the other trials' values in the same storage, whether this trial should
stop. The decision is made in the training process at the evaluation boundary, so a pruned
trial stops exactly there and saves its checkpoint; the worker only records the outcome.

A storage that cannot be reached never stops training: the report is skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["ENV_KEYS", "TrialLink"]

logger = logging.getLogger("detlab")

#: Environment variables a worker sets for its trial process.
ENV_KEYS = (
    "DETLAB_SWEEP_STORAGE",
    "DETLAB_SWEEP_STUDY",
    "DETLAB_SWEEP_TRIAL_ID",
    "DETLAB_SWEEP_METRIC",
    "DETLAB_SWEEP_PRUNER",
)


def _flat(results: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in results.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


class TrialLink:
    """Reports a trial's periodic evaluations to its study and relays the pruner's verdict."""

    def __init__(
        self, storage: str, study_name: str, trial_id: int, metric: str, pruner: dict[str, Any]
    ) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_id = int(trial_id)
        self.metric = metric
        self.pruner = dict(pruner)
        self._trial: Any = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TrialLink | None:
        """The link described by the environment, or None outside a sweep study."""
        env = os.environ if env is None else env
        if not all(env.get(k) for k in ENV_KEYS[:3]):
            return None
        return cls(
            env["DETLAB_SWEEP_STORAGE"],
            env["DETLAB_SWEEP_STUDY"],
            int(env["DETLAB_SWEEP_TRIAL_ID"]),
            env.get("DETLAB_SWEEP_METRIC") or "bbox/AP",
            json.loads(env.get("DETLAB_SWEEP_PRUNER") or '{"type": "none"}'),
        )

    def env(self) -> dict[str, str]:
        """The environment variables that describe this link (see :meth:`from_env`)."""
        return {
            "DETLAB_SWEEP_STORAGE": self.storage,
            "DETLAB_SWEEP_STUDY": self.study_name,
            "DETLAB_SWEEP_TRIAL_ID": str(self.trial_id),
            "DETLAB_SWEEP_METRIC": self.metric,
            "DETLAB_SWEEP_PRUNER": json.dumps(self.pruner),
        }

    def _optuna_trial(self) -> Any:
        if self._trial is None:
            import optuna

            from detlab.sweep.study import build_pruner, open_storage, storage_from_env_value

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(
                study_name=self.study_name,
                storage=open_storage(storage_from_env_value(self.storage)),
                pruner=build_pruner(self.pruner),
            )
            self._trial = optuna.Trial(study, self.trial_id)
        return self._trial

    def report(self, step: int, results: Mapping[str, Any], may_prune: bool = True) -> bool:
        """Record ``results``' metric at ``step`` (iterations done); True if the trial should
        stop here (asked only when ``may_prune``). Without the metric, or when the storage
        fails, returns False."""
        value = _flat(results).get(self.metric)
        if value is None or not math.isfinite(value):
            logger.warning(
                f"Sweep: evaluation at iteration {step} has no finite {self.metric}; not reported."
            )
            return False
        try:
            trial = self._optuna_trial()
            trial.report(value, step)
            prune = may_prune and self.pruner.get("type", "none") != "none" and trial.should_prune()
            if prune:
                trial.set_user_attr("pruned_at", int(step))
        except Exception as err:  # a database hiccup must not end a training run
            logger.warning(f"Sweep: could not report to the study ({type(err).__name__}: {err}).")
            return False
        return bool(prune)
