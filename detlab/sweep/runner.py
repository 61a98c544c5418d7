"""Running a sweep: launch the planned trials, keep the state file and the leaderboard.

:func:`run_sweep` runs the trials of :func:`~detlab.sweep.plan.plan_sweep` through a
launcher, at most ``launcher.capacity`` at a time. A trial that fails is recorded with the tail
of its log and the others go on; a finished trial is skipped when the sweep runs again
(``retry_failed`` re-runs failed ones; interrupted ones always re-run, with ``--resume`` when
they left a checkpoint). SIGINT/SIGTERM stop the running trials (their process groups or jobs)
and leave a consistent state file; SIGHUP (the terminal went away) leaves them running, and
the next run follows them.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from detlab.sweep.job import tail
from detlab.sweep.launchers import Handle, Launcher
from detlab.sweep.plan import PlannedTrial, config_args, plan_sweep, same_config, trial_action
from detlab.sweep.report import best_row, read_final_metrics, write_leaderboard
from detlab.sweep.spec import SweepSpec
from detlab.sweep.state import FINISHED, SweepState, sweep_lock
from detlab.utils.cli import EXIT_PREEMPTED

__all__ = ["SignalFlag", "SweepInterrupted", "SweepOutcome", "run_sweep"]

TAIL_LINES = 20


class SweepInterrupted(Exception):
    """The sweep was stopped by a signal; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"sweep stopped by signal {signum}")
        self.signum = signum


@dataclass
class SweepOutcome:
    """What a sweep run ended with: leaderboard rows and the best trial."""

    rows: list[dict]
    counts: dict[str, int]
    best_name: str | None = None
    best_config: str | None = None  # the best trial's resolved OUTPUT_DIR/config.yaml
    best_dir: str | None = None
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class SignalFlag:
    """Turns signals (default SIGINT/SIGTERM/SIGHUP) into a flag while a sweep or a worker
    runs (main thread only); ``signum`` is the last one received."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)):
        self.signum: int | None = None
        self.signals = signals
        self._previous: dict[int, object] = {}

    def __enter__(self) -> SignalFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_sweep(
    spec: SweepSpec,
    launcher: Launcher,
    planned: Sequence[PlannedTrial] | None = None,
    *,
    retry_failed: bool = False,
    out: Callable[[str], None] = print,
    poll_interval: float | None = None,
    grace_s: float = 10.0,
) -> SweepOutcome:
    """Run the trials that are not finished yet; return the final leaderboard.

    Raises :class:`SweepInterrupted` after a SIGINT/SIGTERM has stopped the running trials.
    """
    planned = list(planned) if planned is not None else plan_sweep(spec)
    trials = [p.trial for p in planned]
    root = spec.output_root
    with sweep_lock(root):
        state = SweepState.load(root)
        state.meta.update(
            spec=spec.path, base_config=spec.base_config, metric=spec.metric, mode=spec.mode
        )
        queue: list[tuple[PlannedTrial, bool]] = []
        skipped: list[str] = []
        running: dict[str, tuple[Handle, PlannedTrial, bool]] = {}
        for p in planned:
            rec = state.record(p.trial.name)
            if not same_config(rec, p):
                out(f"{p.trial.name}: its config changed since the last run; running it again.")
                state.trials[p.trial.name] = rec = {"status": "pending"}
            action, resume = trial_action(rec, p, retry_failed)
            rec.update(
                params=p.trial.params,
                index=p.trial.index,
                output_dir=p.output_dir,
                config_args=config_args(p),
            )
            if action == "skip":
                skipped.append(p.trial.name)
                continue
            if rec.get("status") == "running":  # an earlier sweep died while this trial ran
                elapsed = time.time() - float(rec.get("started_epoch") or time.time())
                handle = launcher.reattach(
                    p.trial.name, rec.get("launch") or {}, elapsed, p.command(False)
                )
                if handle is not None:
                    out(f"{p.trial.name}: following {handle.info} started by an earlier run")
                    running[p.trial.name] = (handle, p, False)
                    continue
                rec["status"] = "interrupted"
            queue.append((p, resume))
        state.save()
        write_leaderboard(spec, trials, state, root)
        if skipped:
            out(f"Skipping {len(skipped)} finished or failed trial(s): {', '.join(skipped)}")
        ran = [p.trial.name for p, _ in queue]
        with SignalFlag() as signals:
            try:
                while queue or running:
                    if signals.signum is not None:
                        raise SweepInterrupted(signals.signum)
                    started = False
                    while queue and len(running) < launcher.capacity:
                        p, resume = queue.pop(0)
                        _start(p, resume, launcher, state, running, out)
                        started = True
                    if started:
                        write_leaderboard(spec, trials, state, root)
                    for name, (handle, p, resume) in list(running.items()):
                        result = launcher.poll(handle)
                        if result is None:
                            before = state.trials[name].get("launch") or {}
                            if handle.info != before:
                                new = handle.info.get("job_state")
                                if new and new != before.get("job_state"):
                                    job = handle.info.get("job_id")
                                    out(f"{name}: job {job} is {new}")
                                state.update(name, launch=dict(handle.info))
                            continue
                        del running[name]
                        _finish(spec, p, handle, result, resume, state, out)
                        write_leaderboard(spec, trials, state, root)
                    if running or queue:
                        time.sleep(poll_interval or launcher.poll_interval)
            except SweepInterrupted as err:
                if err.signum == signal.SIGHUP and running:  # terminal gone: detach, not stop
                    out(f"Sweep detached; {len(running)} trial(s) keep running.")
                    state.save()
                    write_leaderboard(spec, trials, state, root)
                    raise
                _stop_all(err, running, launcher, state, spec, trials, root, out, grace_s)
                raise
            except BaseException as err:
                _stop_all(err, running, launcher, state, spec, trials, root, out, grace_s)
                raise
            finally:
                launcher.close()

        rows = write_leaderboard(spec, trials, state, root)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    best = best_row(rows)
    outcome = SweepOutcome(rows=rows, counts=counts, ran=ran, skipped=skipped)
    if best is not None:
        outcome.best_name = best["name"]
        out_dir = os.path.join(root, best["name"])
        resolved = os.path.join(out_dir, "config.yaml")
        outcome.best_dir = out_dir
        outcome.best_config = resolved if os.path.isfile(resolved) else None
    return outcome


def _stop_all(
    err: BaseException,
    running: dict,
    launcher: Launcher,
    state: SweepState,
    spec: SweepSpec,
    trials: list,
    root: str,
    out: Callable[[str], None],
    grace_s: float,
) -> None:
    """Stop every running trial and record it as interrupted."""
    if not running:
        return
    why = "stopping" if isinstance(err, SweepInterrupted) else "error; stopping"
    out(f"Sweep {why} {len(running)} running trial(s)...")
    launcher.stop([h for h, _, _ in running.values()], grace_s=grace_s)
    for name, (handle, _p, resume) in running.items():
        wall = _wall(state.trials[name], handle, resume)
        state.trials[name].update(status="interrupted", wall_time=wall)
    state.save()
    write_leaderboard(spec, trials, state, root)


def _wall(record: dict, handle: Handle, resume: bool) -> float:
    previous = record.get("wall_time_before", 0.0) if resume else 0.0
    return float(previous) + time.monotonic() - handle.started


def _start(
    p: PlannedTrial,
    resume: bool,
    launcher: Launcher,
    state: SweepState,
    running: dict,
    out: Callable[[str], None],
) -> None:
    os.makedirs(p.output_dir, exist_ok=True)
    metrics_file = os.path.join(p.output_dir, "final_metrics.json")
    if os.path.exists(metrics_file):  # never mistake an earlier attempt's result for this one's
        os.replace(metrics_file, os.path.join(p.output_dir, "final_metrics.previous.json"))
    rec = state.record(p.trial.name)
    before = rec.get("wall_time") if resume else None
    handle = launcher.start(p.trial.name, p.command(resume), p.log_path)
    running[p.trial.name] = (handle, p, resume)
    attempts = int(rec.get("attempts", 0)) + 1
    state.update(
        p.trial.name,
        status="running",
        attempts=attempts,
        launch=dict(handle.info),
        wall_time_before=float(before or 0.0),
        started_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
        started_epoch=time.time(),
        error=None,
        log_tail=None,
    )
    where = ", ".join(f"{k} {v}" for k, v in handle.info.items())
    verb = "resuming" if resume else "started"
    out(f"{p.trial.name}: {verb} ({where}); log {p.log_path}")


def _finish(
    spec: SweepSpec,
    p: PlannedTrial,
    handle: Handle,
    result: dict,
    resume: bool,
    state: SweepState,
    out: Callable[[str], None],
) -> None:
    name = p.trial.name
    rec = state.trials[name]
    wall = _wall(rec, handle, resume)
    rc = result["returncode"]
    metrics = read_final_metrics(p.output_dir) if rc == 0 else None
    if rc == 0 and metrics is not None:
        state.update(
            name,
            status=FINISHED,
            returncode=rc,
            wall_time=wall,
            metrics=metrics,
            launch=dict(handle.info),
        )
        task, key = spec.metric_key
        block = metrics.get(task) if isinstance(metrics.get(task), dict) else {}
        value = block.get(key) if block else None
        shown = f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"
        out(f"{name}: finished in {wall:.1f} s, {task}/{key} = {shown}")
        return
    if rc == EXIT_PREEMPTED:  # stopped on SIGTERM/SIGUSR1 after saving a checkpoint
        state.update(
            name, status="interrupted", returncode=rc, wall_time=wall, launch=dict(handle.info)
        )
        out(f"{name}: preempted after saving a checkpoint; the next sweep run resumes it")
        return
    if rc == 0:
        error = "exited 0 but wrote no readable final_metrics.json"
    elif result.get("error"):
        error = str(result["error"])
    else:
        error = f"exited with status {rc}"
    log_tail = tail(p.log_path, TAIL_LINES)
    state.update(
        name,
        status="failed",
        returncode=rc,
        wall_time=wall,
        error=error,
        log_tail=log_tail,
        launch=dict(handle.info),
    )
    indented = "\n".join("    " + line for line in log_tail.splitlines()) or "    (log is empty)"
    out(f"{name}: FAILED ({error}); last lines of {p.log_path}:\n{indented}")
