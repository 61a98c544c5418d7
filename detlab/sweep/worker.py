"""A sweep worker: takes the study's trials one at a time and trains each in its own process.

Any number of workers, on any number of machines, share one study; none drives the others.
A worker loops: take over trials whose worker died (:func:`~detlab.sweep.study_trials.
recover_dead`), take a waiting trial (a planned grid/random point, or an attempt to resume),
or ask the sampler for a new one while the budget lasts; run it; record the outcome in the
study; rewrite the leaderboard. With nothing left it waits while other trials run (to take
over a dead one) when ``study.wait`` is on, then exits.

A trial is ``tools/train_net.py`` in its own process group, given the study through the
environment (:class:`~detlab.sweep.trial_link.TrialLink`; the pruning hook reports each
evaluation and stops a pruned trial there). Outcomes: exit 0 with ``final_metrics.json`` is
COMPLETE (or PRUNED when the trial recorded ``pruned_at``); an exit by a signal (OOM killer,
preemption; a status of 128 + N counts too) fails this attempt and enqueues one that resumes
from the checkpoint, up to ``study.max_retries`` times; any other exit fails the trial with the
tail of its log. SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2 stop the worker: its trial gets SIGTERM
(and SIGKILL after ``grace_s``) and is handed back as an attempt to resume; the worker exits
128 + the signal. A worker killed outright takes its trial with it (Linux: the trial gets
SIGTERM); the next worker resumes it.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from detlab.sweep.job import stop_process_group, tail
from detlab.sweep.plan import PlannedTrial, plan_sweep, plan_trial
from detlab.sweep.report import read_final_metrics
from detlab.sweep.runner import SignalFlag, SweepInterrupted
from detlab.sweep.spec import SweepSpec, split_metric
from detlab.sweep.state import _json_safe
from detlab.sweep.study import (
    StorageRef,
    decode_params,
    open_storage,
    open_study,
    resolve_pruner,
    search_space,
)
from detlab.sweep.study_trials import (
    ATTEMPT_OF,
    CRASHES,
    HEARTBEAT,
    RESUME,
    WALL_BEFORE,
    WORKER,
    claim_waiting,
    discard,
    duplicate_of,
    enqueue_attempt,
    process_identity,
    recover_dead,
    trial_id,
    worker_identity,
)
from detlab.sweep.trial_link import TrialLink
from detlab.sweep.trials import Trial, override_tokens, trial_name
from detlab.utils.cli import EXIT_PREEMPTED

__all__ = ["Worker", "WorkerSummary", "hook_overrides", "summary_line"]

TAIL_LINES = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class WorkerSummary:
    """What one worker did: trial names by outcome."""

    finished: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resumed_later: list[str] = field(default_factory=list)


def hook_overrides(spec: SweepSpec) -> list[str]:
    """``TRAINER.EXTRA_HOOKS [..., SweepPruningHook]`` for a single-metric study's trials (the
    hook reports evaluations to the study and applies the pruner); nothing otherwise."""
    if len(spec.metrics) > 1:
        return []  # Optuna records no intermediate values for several objectives
    from detlab.config import load_config

    cfg = load_config(spec.base_config, override_tokens(spec.fixed))
    hooks = list(cfg.TRAINER.EXTRA_HOOKS)
    if "SweepPruningHook" not in hooks:
        hooks.append("SweepPruningHook")
    return override_tokens({"TRAINER.EXTRA_HOOKS": hooks})


class Worker:
    """One worker of the study ``study_name`` in storage ``ref`` (see the module docstring)."""

    def __init__(
        self,
        spec: SweepSpec,
        ref: StorageRef,
        study_name: str,
        *,
        slot: int = 0,
        label: str = "",
        num_gpus: int = 1,
        grace_s: float = 10.0,
        poll_s: float = 0.5,
        out: Callable[[str], None] = print,
        env: dict[str, str] | None = None,
    ) -> None:
        if spec.study is None:
            raise ValueError("a Worker needs a spec with a study section")
        self.spec = spec
        self.settings = spec.study
        self.ref = ref
        self.study_name = study_name
        self.label = label or f"w{slot}"
        self.num_gpus = num_gpus
        self.grace_s = grace_s
        self.poll_s = poll_s
        self._out = out
        self.env = dict(os.environ if env is None else env)
        self.env.update(spec.env)
        self.storage = open_storage(ref)
        self.study = open_study(spec, ref, study_name, seed_offset=slot, storage=self.storage)
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.space = search_space(spec)
        self.pruner = resolve_pruner(spec)
        self.extra = hook_overrides(spec)
        planned = [] if spec.sampled else plan_sweep(spec, num_gpus=num_gpus, extra=self.extra)
        self.planned = {p.trial.name: p for p in planned}
        self.identity = worker_identity(self.label)
        self.summary = WorkerSummary()

    def out(self, text: str) -> None:
        self._out(f"[{self.label}] {text}")

    # ------------------------------------------------------------------ the loop
    def run(self) -> WorkerSummary:
        """Run trials until none is left; raises :class:`SweepInterrupted` on a stop signal."""
        with SignalFlag(STOP_SIGNALS) as stop:
            idle_said = False
            while stop.signum is None:
                self._recover()
                trial = self._next()
                if trial is not None:
                    idle_said = False
                    self._run(trial, stop)
                    continue
                if not (self.settings.wait and self._others_running()):
                    break
                if not idle_said:
                    self.out("nothing to start; waiting while other trials run")
                    idle_said = True
                self._sleep(max(1.0, min(5.0, self.settings.heartbeat_s)), stop)
            if stop.signum is not None:
                raise SweepInterrupted(stop.signum)
        return self.summary

    def _sleep(self, seconds: float, stop: SignalFlag) -> None:
        end = time.monotonic() + seconds
        while stop.signum is None and time.monotonic() < end:
            time.sleep(min(self.poll_s, max(0.0, end - time.monotonic())))

    def _others_running(self) -> bool:
        from optuna.trial import TrialState

        states = (TrialState.RUNNING, TrialState.WAITING)
        return bool(self.storage.get_all_trials(self.study_id, deepcopy=False, states=states))

    def _recover(self) -> None:
        s = self.settings
        for name, reason, again in recover_dead(
            self.study, self.storage, self.study_id, s.stale_after_s, s.max_retries
        ):
            verb = "to be resumed" if again else f"given up after {s.max_retries} resumes"
            self.out(f"{name}: taken over ({reason}); {verb}")

    def _budget_left(self) -> bool:
        origins = [
            t
            for t in self.storage.get_all_trials(self.study_id, deepcopy=False)
            if t.system_attrs.get(ATTEMPT_OF) is None
        ]
        return len(origins) < int(self.spec.num_trials or 0)

    def _next(self) -> Any | None:
        """The next attempt this worker runs (RUNNING and named), or None."""
        t = claim_waiting(self.storage, self.study_id)
        if t is None and self.spec.sampled and self._budget_left():
            asked = self.study.ask(self.space)
            t = self.storage.get_trial(trial_id(self.storage, self.study_id, asked.number))
        if t is None:
            return None
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        if "name" not in t.user_attrs:  # a fresh sampled trial: name it by its rank
            index = sum(
                1 for u in trials if u.number < t.number and u.system_attrs.get(ATTEMPT_OF) is None
            )
            if index >= int(self.spec.num_trials or 0):
                discard(self.storage, self.study_id, t, "surplus: the budget was already used")
                return None
            params = decode_params(self.spec, t.params)
            name = trial_name(self.spec, index, params)
            tid = trial_id(self.storage, self.study_id, t.number)
            out_dir = os.path.join(self.spec.output_root, name)
            for key, value in (("name", name), ("index", index), ("output_dir", out_dir)):
                self.storage.set_trial_user_attr(tid, key, value)
            return self.storage.get_trial(tid)
        other = duplicate_of(trials, t)
        if other is not None:
            discard(self.storage, self.study_id, t, f"duplicate of trial {other.number}")
            return None
        return t

    # ------------------------------------------------------------------ one trial
    def _planned(self, t: Any) -> PlannedTrial:
        name = t.user_attrs["name"]
        if name in self.planned:
            return self.planned[name]
        trial = Trial(
            int(t.user_attrs.get("index", t.number)), name, decode_params(self.spec, t.params)
        )
        return plan_trial(self.spec, trial, num_gpus=self.num_gpus, extra=self.extra)

    def _run(self, t: Any, stop: SignalFlag) -> None:
        from detlab.sweep.job import start_process

        tid = trial_id(self.storage, self.study_id, t.number)
        p = self._planned(t)
        name = p.trial.name
        resume = bool(t.system_attrs.get(RESUME)) and _has_checkpoint(p.output_dir)
        os.makedirs(p.output_dir, exist_ok=True)
        final = os.path.join(p.output_dir, "final_metrics.json")
        if os.path.exists(final):  # never mistake an earlier attempt's result for this one's
            os.replace(final, os.path.join(p.output_dir, "final_metrics.previous.json"))
        link = TrialLink(self.ref.env_value, self.study_name, tid, self.spec.metric, self.pruner)
        env = {**self.env, **link.env()}
        identity = dict(self.identity)
        self.storage.set_trial_system_attr(tid, WORKER, identity)
        self.storage.set_trial_system_attr(tid, HEARTBEAT, time.time())
        cmd = p.command(resume)
        note = f"trial {name} (study {self.study_name}, Optuna trial {t.number}, {self.label})"
        start = time.monotonic()
        proc, log = start_process(cmd, p.log_path, env, note=note, die_with_parent=True)
        identity.update(trial_pid=proc.pid, trial_pid_start=process_identity(proc.pid))
        self.storage.set_trial_system_attr(tid, WORKER, identity)
        verb = "resuming" if resume else "started"
        self.out(f"{name}: {verb} (Optuna trial {t.number}, pid {proc.pid}); log {p.log_path}")
        beat = time.monotonic()
        try:
            while proc.poll() is None:
                if stop.signum is not None:
                    self.out(f"{name}: stopping (signal {stop.signum}); it will resume later")
                    stop_process_group(proc, self.grace_s)
                    break
                if time.monotonic() - beat >= self.settings.heartbeat_s:
                    self._beat(tid)
                    beat = time.monotonic()
                time.sleep(self.poll_s)
            stop_process_group(proc, grace_s=0)  # anything the trainer left behind
        finally:
            log.close()
        wall = float(t.system_attrs.get(WALL_BEFORE, 0.0)) + time.monotonic() - start
        if stop.signum is not None:
            self._hand_back(t, tid, wall, f"stopped by signal {stop.signum}", count=False)
            self.summary.resumed_later.append(name)
        else:
            self._record(t, tid, p, proc.returncode, wall)
        self._leaderboard()

    def _beat(self, tid: int) -> None:
        try:
            self.storage.set_trial_system_attr(tid, HEARTBEAT, time.time())
        except Exception as err:  # the database may be briefly away; keep training
            self.out(f"heartbeat not recorded ({type(err).__name__}); retrying")

    def _hand_back(self, t: Any, tid: int, wall: float, why: str, count: bool) -> bool:
        """Fail this attempt and enqueue one that resumes it; False if out of retries."""
        crashes = int(t.system_attrs.get(CRASHES, 0)) + (1 if count else 0)
        again = crashes <= self.settings.max_retries
        if not self._finish(tid, t.number, "fail", {"error": why, "wall_time": wall}):
            return again
        if again:
            enqueue_attempt(
                self.study,
                self.storage.get_trial(tid),
                resume=True,
                crashes=crashes,
                wall_before=wall,
            )
        return again

    def _record(self, t: Any, tid: int, p: PlannedTrial, rc: int, wall: float) -> None:
        name = p.trial.name
        metrics = read_final_metrics(p.output_dir) if rc == 0 else None
        attrs: dict[str, Any] = {"wall_time": wall}
        if metrics is not None:
            attrs["metrics"] = _json_safe(metrics)
            last = metrics.get("iteration")
            attrs["iterations"] = last + 1 if isinstance(last, int) else None
        if rc == 0 and metrics is not None:
            pruned_at = self.storage.get_trial(tid).user_attrs.get("pruned_at")
            if pruned_at is not None:
                if self._finish(tid, t.number, "pruned", attrs):
                    self.summary.pruned.append(name)
                    self.out(f"{name}: pruned after {pruned_at} iterations ({wall:.1f} s)")
                return
            values = [_value(metrics, m) for m in self.spec.metrics]
            missing = [m for m, v in zip(self.spec.metrics, values, strict=True) if v is None]
            if not missing:
                if self._finish(tid, t.number, "complete", attrs, values):
                    self.summary.finished.append(name)
                    shown = ", ".join(
                        f"{m} = {v:.2f}" for m, v in zip(self.spec.metrics, values, strict=True)
                    )
                    self.out(f"{name}: finished in {wall:.1f} s, {shown}")
                return
            error = f"final_metrics.json has no finite {', '.join(missing)}"
        elif rc == 0:
            error = "exited 0 but wrote no readable final_metrics.json"
        elif rc < 0 or rc >= 128 or rc == EXIT_PREEMPTED:
            sig = -rc if rc < 0 else rc - 128
            why = (
                "the trial was preempted (SIGTERM/SIGUSR1) after saving a checkpoint"
                if rc == EXIT_PREEMPTED
                else f"the trial process ended by signal {sig}"
            )
            if _has_checkpoint(p.output_dir) and self._hand_back(t, tid, wall, why, count=True):
                self.summary.resumed_later.append(name)
                self.out(f"{name}: {why}; it will resume from its checkpoint")
                return
            error = why
        else:
            error = f"exited with status {rc}"
        attrs.update(error=error, log_tail=tail(p.log_path, TAIL_LINES))
        if self._finish(tid, t.number, "fail", attrs):
            self.summary.failed.append(name)
            lines = attrs["log_tail"].splitlines() or ["(log is empty)"]
            indented = "\n".join("    " + line for line in lines)
            self.out(f"{name}: FAILED ({error}); last lines of {p.log_path}:\n{indented}")

    def _finish(
        self, tid: int, number: int, state: str, attrs: dict, values: list | None = None
    ) -> bool:
        """Write ``attrs`` and end the attempt; False if another worker already ended it."""
        from optuna.trial import TrialState

        try:
            for key, value in attrs.items():
                self.storage.set_trial_user_attr(tid, key, value)
            if state == "complete":
                self.study.tell(number, values)
            else:
                self.study.tell(
                    number, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL
                )
        except Exception as err:  # finished elsewhere: a worker took it for dead
            self.out(
                f"Optuna trial {number} was ended by another worker ({type(err).__name__}); "
                "its output stays in its folder"
            )
            return False
        return True

    def _leaderboard(self) -> None:
        from detlab.sweep.study_report import write_study_leaderboard

        try:
            planned = list(self.planned.values()) or None
            write_study_leaderboard(self.spec, self.study, planned)
        except OSError as err:
            self.out(f"leaderboard not written ({err})")


def _has_checkpoint(output_dir: str) -> bool:
    return os.path.isfile(os.path.join(output_dir, "last_checkpoint"))


def _value(metrics: dict, metric: str) -> float | None:
    import math

    task, key = split_metric(metric)
    block = metrics.get(task)
    value = block.get(key) if isinstance(block, dict) else metrics.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def summary_line(summary: WorkerSummary) -> str:
    parts = [
        f"{len(summary.finished)} finished",
        f"{len(summary.pruned)} pruned",
        f"{len(summary.failed)} failed",
    ]
    if summary.resumed_later:
        parts.append(f"{len(summary.resumed_later)} handed back to resume")
    return ", ".join(parts)
