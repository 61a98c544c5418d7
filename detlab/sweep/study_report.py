"""What a sweep study holds, as the sweep's leaderboard sees it.

:func:`study_view` turns the study's Optuna trials into the sweep's trials (one per name, the
live attempt standing for them) and a :class:`~detlab.sweep.state.SweepState` of records, so
:func:`~detlab.sweep.report.write_leaderboard` draws the same tables as for a sweep without a
study. Statuses: ``finished`` (COMPLETE), ``pruned``, ``running``, ``pending`` (WAITING),
``interrupted`` (waiting to resume), ``failed``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from detlab.sweep.report import write_leaderboard
from detlab.sweep.spec import SweepSpec
from detlab.sweep.state import FINISHED, SweepState
from detlab.sweep.study import decode_params
from detlab.sweep.study_trials import ATTEMPT_OF, RESUME, group_by_name, live_attempt
from detlab.sweep.trials import Trial

__all__ = ["study_view", "sweep_root_entries", "write_study_leaderboard"]


def _status(trial: Any) -> str:
    from optuna.trial import TrialState

    if trial.state == TrialState.WAITING and trial.system_attrs.get(ATTEMPT_OF) is not None:
        return "interrupted" if trial.system_attrs.get(RESUME) else "pending"
    return {
        TrialState.COMPLETE: FINISHED,
        TrialState.PRUNED: "pruned",
        TrialState.RUNNING: "running",
        TrialState.WAITING: "pending",
        TrialState.FAIL: "failed",
    }[trial.state]


def study_view(
    spec: SweepSpec, study: Any, planned: Sequence[Any] | None = None
) -> tuple[list[Trial], SweepState]:
    """The sweep's trials and their records. ``planned`` (grid/random) lists every trial,
    run or not; otherwise the trials are those the study has named so far."""
    groups = group_by_name(study.get_trials(deepcopy=False))
    if planned is not None:
        trials = [p.trial for p in planned]
    else:
        trials = []
        for name, attempts in groups.items():
            first = attempts[0]
            index = int(first.user_attrs.get("index", first.number))
            trials.append(Trial(index, name, decode_params(spec, first.params)))
        trials.sort(key=lambda t: t.index)
    pareto = {t.number for t in study.best_trials} if len(spec.metrics) > 1 else set()
    state = SweepState(spec.output_root)
    for trial in trials:
        attempts = groups.get(trial.name)
        if not attempts:
            continue
        live = live_attempt(attempts) or attempts[-1]
        attrs = live.user_attrs
        state.trials[trial.name] = {
            "status": _status(live),
            "metrics": attrs.get("metrics"),
            "wall_time": attrs.get("wall_time"),
            "attempts": len(attempts),
            "error": attrs.get("error"),
            "log_tail": attrs.get("log_tail"),
            "output_dir": attrs.get("output_dir"),
            "optuna_number": live.number,
            "pareto": live.number in pareto,
        }
    return trials, state


def sweep_root_entries(root: str) -> list[dict[str, Any]] | None:
    """``tools/eval.py --compare`` entries of a sweep root's trials that have box metrics,
    from its study (``study.json``) or its state file; None if ``root`` is no sweep root."""
    import json

    from detlab.sweep.state import STATE_FILE, SweepState

    manifest = os.path.join(root, "study.json")
    records: dict[str, dict] = {}
    if os.path.isfile(manifest):
        import optuna

        from detlab.sweep.study import open_storage, require_optuna, resolve_storage

        require_optuna()
        with open(manifest, encoding="utf-8") as f:
            info = json.load(f)
        storage = open_storage(resolve_storage(info["storage"], root))
        study = optuna.load_study(study_name=info["study_name"], storage=storage)
        for name, attempts in group_by_name(study.get_trials(deepcopy=False)).items():
            live = live_attempt(attempts) or attempts[-1]
            records[name] = {
                "status": _status(live),
                "metrics": live.user_attrs.get("metrics"),
                "output_dir": live.user_attrs.get("output_dir"),
            }
    elif os.path.isfile(os.path.join(root, STATE_FILE)):
        records = SweepState.load(root).trials
    else:
        return None
    entries = []
    for name, rec in records.items():
        metrics = rec.get("metrics") or {}
        box = metrics.get("bbox")
        if not isinstance(box, dict):
            continue
        entry: dict[str, Any] = {"name": name}
        entry.update(
            {k: float(v) for k, v in box.items() if isinstance(v, (int, float)) and v == v}
        )
        for key in ("iteration", "best_iteration"):
            if isinstance(metrics.get(key), int):
                entry[key] = metrics[key]
        entry["status"] = rec.get("status", "finished")
        entry["source"] = rec.get("output_dir") or os.path.join(root, name)
        entries.append(entry)
    return entries


def write_study_leaderboard(
    spec: SweepSpec, study: Any, planned: Sequence[Any] | None = None
) -> list[dict]:
    """(Re)write ``leaderboard.md``/``.csv`` in the sweep root from the study; the rows."""
    trials, state = study_view(spec, study, planned)
    os.makedirs(spec.output_root, exist_ok=True)
    return write_leaderboard(spec, trials, state, spec.output_root)
