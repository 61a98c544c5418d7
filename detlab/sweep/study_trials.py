"""Trials of a sweep study: names, attempts, claiming, and taking over dead ones.

A sweep trial (``lr0.0001_clip0.5``, one ``OUTPUT_DIR``) is one or more Optuna trials, its
*attempts*: a trial whose worker died, or that was stopped for preemption, is continued by a
new attempt (a WAITING copy with the same parameters, name and intermediate values) that
resumes from the checkpoint in the same ``OUTPUT_DIR``. The rules that keep several workers on
many machines from running a trial twice:

* Workers take WAITING attempts by switching them to RUNNING in the storage, which only one
  of them can do (the same primitive Optuna's own ``ask`` uses).
* Of the attempts of one name, the *live* one is the lowest-numbered that has not failed. A
  worker that took an attempt while a lower-numbered live one exists drops its own at once
  (recorded as ``detlab:discarded``); so do duplicates of a race in enqueueing.
* A RUNNING attempt is dead when its worker's process is gone (same host: checked by process
  id and start time) or its heartbeat is older than ``stale_after_s`` (other hosts). Any
  worker then fails it and enqueues the next attempt.

Attribute keys: user attributes ``name``, ``index``, ``output_dir``, ``metrics``, ``wall_time``,
``iterations``, ``error``, ``log_tail``, ``pruned_at`` (what people look at); system attributes
``detlab:*`` (bookkeeping).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = [
    "HEARTBEAT",
    "WORKER",
    "claim_waiting",
    "enqueue_attempt",
    "enqueue_planned",
    "group_by_name",
    "is_discarded",
    "live_attempt",
    "process_identity",
    "recover_dead",
    "trial_id",
    "worker_identity",
]

HEARTBEAT = "detlab:heartbeat"  # epoch seconds of the worker's last sign of life
WORKER = "detlab:worker"  # {"host", "pid", "pid_start", "trial_pid", "trial_pid_start", "label"}
ATTEMPT_OF = "detlab:attempt_of"  # number of the attempt this one continues
RESUME = "detlab:resume"  # start with --resume when OUTPUT_DIR has a checkpoint
CRASHES = "detlab:crashes"  # how many attempts of this lineage died
WALL_BEFORE = "detlab:wall_before"  # seconds spent by earlier attempts that this one resumes
DISCARDED = "detlab:discarded"  # why a duplicate or surplus attempt was dropped unrun
_CARRIED_USER_ATTRS = ("name", "index", "output_dir")


def trial_id(storage: Any, study_id: int, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)


def is_discarded(trial: Any) -> bool:
    return DISCARDED in trial.system_attrs


def group_by_name(trials: Iterable[Any]) -> dict[str, list[Any]]:
    """Attempts of each sweep trial (by the ``name`` user attribute), in number order;
    discarded attempts and not-yet-named ones are left out."""
    out: dict[str, list[Any]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        name = t.user_attrs.get("name")
        if name is not None and not is_discarded(t):
            out.setdefault(str(name), []).append(t)
    return out


def live_attempt(attempts: Sequence[Any]) -> Any | None:
    """The lowest-numbered attempt that has not failed (None: every attempt failed)."""
    from optuna.trial import TrialState

    for t in attempts:
        if t.state != TrialState.FAIL:
            return t
    return None


def process_identity(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22),
    which tells a live process from a later one that reuses its id; None if unknown/gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":  # a zombie has exited
        return None
    return int(fields[19])


def _alive(pid: Any, start: Any) -> bool:
    return isinstance(pid, int) and start is not None and process_identity(pid) == start


def enqueue_attempt(
    study: Any, trial: Any, *, resume: bool, crashes: int, wall_before: float = 0.0
) -> None:
    """Add a WAITING attempt continuing ``trial``: same parameters, name, ``OUTPUT_DIR`` and
    intermediate values, and the pruner's rung records, so a resumed trial is judged where it
    left off."""
    from optuna.trial import TrialState, create_trial

    system = {k: v for k, v in trial.system_attrs.items() if k.startswith("completed_rung_")}
    system.update(
        {ATTEMPT_OF: trial.number, RESUME: resume, CRASHES: crashes, WALL_BEFORE: wall_before}
    )
    study.add_trial(
        create_trial(
            state=TrialState.WAITING,
            params=dict(trial.params),
            distributions=dict(trial.distributions),
            user_attrs={k: v for k, v in trial.user_attrs.items() if k in _CARRIED_USER_ATTRS},
            system_attrs=system,
            intermediate_values=dict(trial.intermediate_values),
        )
    )


def enqueue_planned(
    study: Any, planned: Sequence[Any], space: dict[str, Any], encode: Callable, retry_failed: bool
) -> tuple[list[str], list[str]]:
    """Enqueue each planned (grid/random) trial the study does not have yet, and with
    ``retry_failed`` a fresh attempt of each failed one. Returns ``(new, retried)`` names.

    Safe to run from several places at once: a duplicate made by a race is dropped when a
    worker takes it (see the module docstring)."""
    from optuna.trial import TrialState, create_trial

    by_name = group_by_name(study.get_trials(deepcopy=False))
    new, retried = [], []
    for p in planned:
        name = p.trial.name
        attempts = by_name.get(name, [])
        if attempts and (live_attempt(attempts) is not None or not retry_failed):
            continue
        system: dict[str, Any] = {}
        if attempts:
            system = {ATTEMPT_OF: attempts[-1].number, RESUME: False, CRASHES: 0}
            retried.append(name)
        else:
            new.append(name)
        study.add_trial(
            create_trial(
                state=TrialState.WAITING,
                params=encode(p.trial.params),
                distributions={k: space[k] for k in p.trial.params},
                user_attrs={"name": name, "index": p.trial.index, "output_dir": p.output_dir},
                system_attrs=system,
            )
        )
    return new, retried


def enqueue_retries(study: Any) -> list[str]:
    """With ``--retry-failed`` in a sampled study: a fresh attempt of each failed trial."""
    out = []
    for name, attempts in group_by_name(study.get_trials(deepcopy=False)).items():
        if live_attempt(attempts) is None:
            enqueue_attempt(study, attempts[-1], resume=False, crashes=0)
            out.append(name)
    return out


def claim_waiting(storage: Any, study_id: int) -> Any | None:
    """Take the lowest-numbered WAITING attempt (switch it to RUNNING); None if there is none."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    waiting = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))
    for t in sorted(waiting, key=lambda t: t.number):
        tid = trial_id(storage, study_id, t.number)
        try:
            if storage.set_trial_state_values(tid, state=TrialState.RUNNING):
                return storage.get_trial(tid)
        except UpdateFinishedTrialError:
            continue
    return None


def duplicate_of(trials: Sequence[Any], mine: Any) -> Any | None:
    """A lower-numbered live attempt of the same name as ``mine``, if any."""
    from optuna.trial import TrialState

    name = mine.user_attrs.get("name")
    for t in trials:
        if (
            t.number < mine.number
            and t.user_attrs.get("name") == name
            and t.state != TrialState.FAIL
            and not is_discarded(t)
        ):
            return t
    return None


def discard(storage: Any, study_id: int, trial: Any, why: str) -> None:
    """Drop an attempt this worker took but must not run (duplicate, surplus)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    tid = trial_id(storage, study_id, trial.number)
    try:
        storage.set_trial_system_attr(tid, DISCARDED, why)
        storage.set_trial_state_values(tid, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        pass


def _dead_reason(trial: Any, stale_after_s: float, now: float, host: str) -> str | None:
    worker = trial.system_attrs.get(WORKER) or {}
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    beat = float(trial.system_attrs.get(HEARTBEAT) or started)
    if worker.get("host") == host and worker.get("pid_start") is not None:
        if _alive(worker.get("pid"), worker.get("pid_start")):
            return None
        if _alive(worker.get("trial_pid"), worker.get("trial_pid_start")):
            return None  # the worker is gone and its trial is still saving and stopping
        return f"its worker (pid {worker.get('pid')} on {host}) is gone"
    if now - beat > stale_after_s:
        where = f" on {worker['host']}" if worker.get("host") else ""
        return f"its worker{where} has sent no heartbeat for {now - beat:.0f} s"
    return None


def recover_dead(
    study: Any, storage: Any, study_id: int, stale_after_s: float, max_retries: int
) -> list[tuple[str, str, bool]]:
    """Fail RUNNING attempts whose worker is dead and enqueue their next attempt (resuming
    from the checkpoint) unless the lineage already died ``max_retries`` times.
    Returns ``(name, reason, resumed)`` per attempt taken over."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    now, host = time.time(), socket.gethostname()
    out = []
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _dead_reason(t, stale_after_s, now, host)
        if reason is None:
            continue
        tid = trial_id(storage, study_id, t.number)
        crashes = int(t.system_attrs.get(CRASHES, 0)) + 1
        again = crashes <= max_retries
        started = t.datetime_start.timestamp() if t.datetime_start else now
        spent = float(t.system_attrs.get(HEARTBEAT) or started) - started
        wall = float(t.system_attrs.get(WALL_BEFORE, 0.0)) + max(0.0, spent)
        try:
            storage.set_trial_user_attr(tid, "error", f"stopped: {reason}")
            storage.set_trial_user_attr(tid, "wall_time", wall)
            storage.set_trial_state_values(tid, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # another worker got there first
        if again and t.user_attrs.get("name") is not None:
            enqueue_attempt(study, t, resume=True, crashes=crashes, wall_before=wall)
        out.append((str(t.user_attrs.get("name", f"#{t.number}")), reason, again))
    return out


def worker_identity(label: str) -> dict[str, Any]:
    """What :func:`recover_dead` needs to tell whether this worker is alive."""
    pid = os.getpid()
    host = socket.gethostname()
    return {"host": host, "pid": pid, "pid_start": process_identity(pid), "label": label}
