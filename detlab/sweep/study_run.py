"""``tools/sweep.sh SPEC --workers N``: a sweep as an Optuna study, run by workers.

The command opens (or creates) the study, enqueues the planned grid/random trials it does not
have yet, then starts ``N`` workers — local processes, one per GPU group, or the tasks of a
Slurm job array through submitit — waits for them, and writes the leaderboard and the plots.
Running it again continues the study; running it on another machine with the same storage
adds workers to it. Each worker rebuilds everything from a :class:`WorkerJob` (spec path,
command-line overrides, storage text), so a Slurm task needs only the shared filesystem and
the database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from detlab.sweep.spec import SweepSpec, add_fixed_overrides, load_spec
from detlab.sweep.state import atomic_write_text
from detlab.sweep.study import (
    StorageRef,
    open_storage,
    open_study,
    resolve_pruner,
    resolve_storage,
    search_space,
)
from detlab.sweep.study_settings import parse_study_section
from detlab.utils.errors import UserError

__all__ = [
    "MANIFEST",
    "StudyRun",
    "WorkerJob",
    "existing_study",
    "run_worker_job",
    "study_settings_for",
]

MANIFEST = "study.json"  # in the sweep root: which study it is (no secrets)


def study_settings_for(spec: SweepSpec) -> SweepSpec:
    """``spec`` with a default ``study:`` section if it has none (``--workers`` on a plain
    grid or random spec runs it as a study)."""
    import dataclasses
    from pathlib import Path

    if spec.study is not None:
        return spec
    settings = parse_study_section(spec.path, {}, Path(spec.path).stem, len(spec.metrics))
    return dataclasses.replace(spec, study=settings)


@dataclass
class WorkerJob:
    """Everything one worker needs (picklable: it travels to Slurm tasks)."""

    spec_path: str
    output_root: str
    opts: list[str]
    storage: str  # StorageRef.text: ${VAR} unexpanded, expanded where the worker runs
    study_name: str
    slot: int = 0
    num_gpus: int = 1
    grace_s: float = 10.0

    def spec(self) -> SweepSpec:
        spec = load_spec(self.spec_path, output_root=self.output_root)
        if self.opts:
            spec = add_fixed_overrides(spec, list(self.opts))
        return study_settings_for(spec)


def run_worker_job(job: WorkerJob, out: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Run one worker to the end (what a local worker process and a Slurm task execute)."""
    import socket

    from detlab.sweep.worker import Worker, summary_line

    spec = job.spec()
    ref = resolve_storage(job.storage, spec.output_root)
    label = f"{socket.gethostname()}:{os.getpid()}"
    if os.environ.get("SLURM_ARRAY_TASK_ID"):
        label = f"{os.environ.get('SLURM_ARRAY_JOB_ID', '')}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    worker = Worker(
        spec,
        ref,
        job.study_name,
        slot=job.slot,
        label=label,
        num_gpus=job.num_gpus,
        grace_s=job.grace_s,
        out=out,
    )
    summary = worker.run()
    out(f"[{label}] done: {summary_line(summary)}")
    return asdict(summary)


def existing_study(spec: SweepSpec, ref: StorageRef, name: str) -> Any | None:
    """The study if it exists already; never creates a database file or a study."""
    from detlab.sweep.study import require_optuna

    require_optuna()
    if ref.kind == "journal" and not os.path.isfile(ref.target):
        return None
    if ref.target.startswith("sqlite:///") and not os.path.isfile(ref.target[len("sqlite:///") :]):
        return None
    try:
        return open_study(spec, ref, name, create=False)
    except UserError as err:
        if "There is no study" in str(err):
            return None
        raise


class StudyRun:
    """One ``tools/sweep.sh`` command on a study: prepare, start workers, wait, report."""

    def __init__(
        self,
        spec: SweepSpec,
        *,
        opts: Sequence[str],
        storage: str | None,
        study_name: str | None,
        num_gpus: int,
        grace_s: float,
        out: Callable[[str], None] = print,
    ) -> None:
        self.spec = study_settings_for(spec)
        settings = self.spec.study
        assert settings is not None
        self.name = study_name or settings.name
        self.ref = resolve_storage(storage or settings.storage, self.spec.output_root)
        self.opts = list(opts)
        self.num_gpus = num_gpus
        self.grace_s = grace_s
        self.out = out

    def job(self, slot: int) -> WorkerJob:
        return WorkerJob(
            spec_path=self.spec.path,
            output_root=self.spec.output_root,
            opts=self.opts,
            storage=self.ref.text,
            study_name=self.name,
            slot=slot,
            num_gpus=self.num_gpus,
            grace_s=self.grace_s,
        )

    def describe(self) -> str:
        s = self.spec
        sampler = {"grid": "grid (planned)", "random": f"random (planned, seed {s.seed})"}.get(
            s.method, f"{s.method.upper()} (seed {s.seed}, {s.num_trials} trials)"
        )
        pruner = resolve_pruner(s)
        options = ", ".join(f"{k}={v}" for k, v in pruner.items() if k != "type")
        shown = pruner["type"] + (f" ({options})" if options else "")
        objectives = ", ".join(f"{m} ({d})" for m, d in zip(s.metrics, s.modes, strict=True))
        return (
            f"Study {self.name!r} in {self.ref.shown}: sampler {sampler}, pruner {shown}, "
            f"objective {objectives}"
        )

    def prepare(self, planned: Sequence[Any], retry_failed: bool) -> Any:
        """Create/load the study, enqueue what it lacks, write the manifest and leaderboard."""
        from detlab.sweep.study import encode_params
        from detlab.sweep.study_report import write_study_leaderboard
        from detlab.sweep.study_trials import enqueue_planned, enqueue_retries

        resolve_pruner(self.spec)  # a pruner without periodic evaluation fails here
        storage = open_storage(self.ref)
        study = open_study(self.spec, self.ref, self.name, storage=storage)
        if self.spec.sampled:
            retried = enqueue_retries(study) if retry_failed else []
            new: list[str] = []
        else:
            new, retried = enqueue_planned(
                study,
                planned,
                search_space(self.spec),
                lambda p: encode_params(self.spec, p),
                retry_failed,
            )
        if new:
            self.out(f"Enqueued {len(new)} planned trial(s) in study {self.name!r}.")
        if retried:
            self.out(f"Retrying {len(retried)} failed trial(s): {', '.join(retried)}")
        manifest = {"study_name": self.name, "storage": self.ref.text, "spec": self.spec.path}
        os.makedirs(self.spec.output_root, exist_ok=True)
        atomic_write_text(
            os.path.join(self.spec.output_root, MANIFEST), json.dumps(manifest, indent=2) + "\n"
        )
        write_study_leaderboard(self.spec, study, None if self.spec.sampled else planned)
        return study

    # ------------------------------------------------------------------ local workers
    def run_local(self, slots: Sequence[dict[str, str]], env: dict[str, str]) -> int | None:
        """Start one worker process per entry of ``slots`` (its extra environment) and wait.
        Returns the signal that stopped the command, or None."""
        procs = []
        base = [
            sys.executable,
            "-m",
            "detlab.sweep",
            self.spec.path,
            "--output-root",
            self.spec.output_root,
            "--storage",
            self.ref.text,
            "--study-name",
            self.name,
            "--gpus-per-trial",
            str(self.num_gpus),
            "--grace",
            str(self.grace_s),
        ]
        for i, extra in enumerate(slots):
            cmd = [*base, "--run-worker", str(i), *self.opts]
            full = {**os.environ, **env, **extra}
            procs.append(subprocess.Popen(cmd, env=full, start_new_session=True))
            where = extra.get("CUDA_VISIBLE_DEVICES") or "CPU"
            self.out(f"Worker {i} started (pid {procs[-1].pid}, {where})")
        return _wait_for(procs, self.grace_s, self.out)

    # ------------------------------------------------------------------ Slurm job array
    def run_slurm(
        self, n: int, slurm: dict[str, Any], cluster: str, executor: Any = None
    ) -> int | None:
        """Submit ``n`` workers as one job array (submitit) and follow it to the end."""
        from detlab.sweep.launchers import submit_array

        jobs = submit_array(
            os.path.join(self.spec.output_root, ".submitit"),
            slurm,
            cluster,
            run_worker_job,
            [self.job(i) for i in range(n)],
            executor=executor,
            name=f"detlab-{self.name}",
        )
        ids = ", ".join(str(j.job_id) for j in jobs)
        self.out(f"Submitted {n} worker(s) as a job array: {ids}")
        return _follow_jobs(jobs, self.out)


def _wait_for(
    procs: list[subprocess.Popen], grace_s: float, out: Callable[[str], None]
) -> int | None:
    """Wait for worker processes; relay SIGINT/SIGTERM to them (SIGHUP: leave them running).
    A worker still there ``grace_s`` + 30 s after the relay is killed (its trial with it)."""
    got: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, lambda signum, frame: got.append(signum))
    try:
        deadline = None
        while any(p.poll() is None for p in procs):
            if got and got[0] == signal.SIGHUP:
                out("Workers keep running; run the same command to add workers or see results.")
                return got[0]
            if got and deadline is None:
                out(f"Stopping {sum(p.poll() is None for p in procs)} worker(s)...")
                for p in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s + 30.0
            if deadline is not None and time.monotonic() > deadline:
                for p in procs:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return got[0] if got else None


def _follow_jobs(jobs: list[Any], out: Callable[[str], None]) -> int | None:
    """Poll array tasks until all are done, printing state changes; Ctrl-C cancels them."""
    got: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda s, f: got.append(s))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    states: dict[str, str] = {}
    try:
        while True:
            if got:
                out("Cancelling the worker jobs...")
                for j in jobs:
                    with contextlib.suppress(Exception):  # already ended
                        j.cancel(check=False)
                return got[0]
            done = True
            for j in jobs:
                try:
                    state, finished = str(j.state), j.done()
                except Exception:  # scheduler hiccup: ask again
                    state, finished = "UNKNOWN", False
                if states.get(str(j.job_id)) != state:
                    states[str(j.job_id)] = state
                    out(f"Worker job {j.job_id}: {state}")
                done = done and finished
            if done:
                for j in jobs:
                    try:
                        j.result()
                    except Exception as err:
                        lines = str(err).strip().splitlines()
                        out(f"Worker job {j.job_id} failed: {lines[-1] if lines else err}")
                return None
            time.sleep(1.0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
