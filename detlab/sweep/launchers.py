"""Where trials run: local subprocesses pinned to GPUs, or cluster jobs through submitit.

A launcher starts a trial's command and reports when it has ended. The sweep runner
(:mod:`detlab.sweep.runner`) decides what to start, keeps the state file and the leaderboard.

* :class:`LocalLauncher` runs each trial as a subprocess in its own process group, output to
  the trial's log, with ``CUDA_VISIBLE_DEVICES`` set to one GPU of ``gpus`` (the least busy
  one) or to ``""`` for CPU runs.
* :class:`SlurmLauncher` submits each trial as a job with ``submitit.AutoExecutor`` (partition,
  GPUs, CPUs, memory, time limit); ``cluster="local"`` uses submitit's local executor, which
  runs the same code path on this machine.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detlab.sweep.job import RequeueableCommand, start_process, stop_process_group
from detlab.utils.errors import UserError

__all__ = [
    "Handle",
    "Launcher",
    "LocalLauncher",
    "SlurmLauncher",
    "build_launcher",
    "submit_array",
]


@dataclass
class Handle:
    """A started trial: what the launcher needs to poll and stop it."""

    name: str
    started: float
    info: dict[str, Any] = field(default_factory=dict)
    obj: Any = None  # Popen or submitit Job
    log: Any = None
    gpu: str | None = None


class Launcher:
    """Interface: ``start`` a command, ``poll`` for its end, ``stop`` running trials."""

    name = "base"
    capacity: int = 1
    poll_interval: float = 0.5  # seconds between polls of running trials

    def env_preview(self, slot: int) -> dict[str, str]:
        """Environment the ``slot``-th concurrent trial would get (for ``--dry-run``)."""
        return {}

    def describe(self) -> str:
        """One line: where and how many at a time trials run."""
        return f"{self.name}, {self.capacity} at a time"

    def start(self, name: str, cmd: Sequence[str], log_path: str) -> Handle:
        raise NotImplementedError

    def poll(self, handle: Handle) -> dict | None:
        """None while running; ``{"returncode": int, "error": str | None}`` once ended."""
        raise NotImplementedError

    def stop(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        raise NotImplementedError

    def reattach(
        self, name: str, info: Mapping[str, Any], elapsed: float, cmd: Sequence[str] = ()
    ) -> Handle | None:
        """A handle on a trial an earlier sweep started (from its ``launch`` record and its
        command), if the launcher can still follow it; None means it must be started again."""
        return None

    def close(self) -> None:
        """Release resources once the sweep ends."""


class LocalLauncher(Launcher):
    """Subprocesses on this machine, ``parallel`` at a time, one GPU each (or CPU).

    With ``gpus_per_trial=k`` the GPU list is cut into groups of ``k`` (``0,1`` and ``2,3``)
    and each trial gets one group.
    """

    name = "local"
    poll_interval = 0.1

    def __init__(
        self,
        gpus: Sequence[str] = (),
        parallel: int | None = None,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        gpus_per_trial: int = 1,
    ):
        gpus = [str(g) for g in gpus]
        k = max(1, int(gpus_per_trial))
        if gpus and len(gpus) < k:
            raise UserError(
                f"{k} GPUs per trial need at least {k} GPUs in --gpus, got {','.join(gpus)}."
            )
        self.gpus = [",".join(gpus[i : i + k]) for i in range(0, len(gpus) - k + 1, k)]
        self.capacity = max(1, parallel or len(self.gpus) or 1)
        self.cwd = cwd
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        threads_set = "OMP_NUM_THREADS" in self.env or "OMP_NUM_THREADS" in os.environ
        if not self.gpus and self.capacity > 1 and not threads_set:  # N CPU trials share cores
            self.env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.capacity))
        self._load = {g: 0 for g in self.gpus}

    def _pick_gpu(self) -> str | None:
        if not self.gpus:
            return None
        return min(self.gpus, key=lambda g: (self._load[g], self.gpus.index(g)))

    def env_preview(self, slot: int) -> dict[str, str]:
        gpu = self.gpus[slot % len(self.gpus)] if self.gpus else ""
        return {**self.env, "CUDA_VISIBLE_DEVICES": gpu}

    def describe(self) -> str:
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else "CPU"
        return f"local ({where}), {self.capacity} at a time"

    def start(self, name: str, cmd: Sequence[str], log_path: str) -> Handle:
        gpu = self._pick_gpu()
        env = dict(os.environ)
        env.update(self.env)
        env["CUDA_VISIBLE_DEVICES"] = gpu or ""
        note = f"trial {name} (CUDA_VISIBLE_DEVICES={gpu or ''})"
        try:
            proc, log = start_process(cmd, log_path, env, cwd=self.cwd, note=note)
        except OSError as err:
            raise UserError(
                f"Could not start trial {name}: {err}; check python and train_script."
            ) from None
        if gpu is not None:
            self._load[gpu] += 1
        return Handle(
            name=name,
            started=time.monotonic(),
            info={"pid": proc.pid, "gpu": gpu or "cpu"},
            obj=proc,
            log=log,
            gpu=gpu,
        )

    def _release(self, handle: Handle) -> None:
        if handle.gpu is not None and self._load.get(handle.gpu, 0) > 0:
            self._load[handle.gpu] -= 1
            handle.gpu = None
        if handle.log is not None:
            handle.log.close()
            handle.log = None

    def poll(self, handle: Handle) -> dict | None:
        rc = handle.obj.poll()
        if rc is None:
            return None
        if not isinstance(handle.obj, _Orphan):  # (an orphan's pid may be reused by now)
            stop_process_group(handle.obj, grace_s=0)  # workers the trainer left behind
        self._release(handle)
        if isinstance(handle.obj, _Orphan):  # not our child: its exit status is unknown
            done = os.path.isfile(os.path.join(handle.obj.output_dir, "final_metrics.json"))
            error = None if done else "ended while no sweep was watching it (status unknown)"
            return {"returncode": 0 if done else -1, "error": error}
        return {"returncode": rc, "error": None}

    def reattach(
        self, name: str, info: Mapping[str, Any], elapsed: float, cmd: Sequence[str] = ()
    ) -> Handle | None:
        """Follow a trial process an earlier sweep started and left running when it died.

        The process must still exist, lead its own process group and have this trial's config
        file and ``OUTPUT_DIR`` on its command line (read from ``/proc``); otherwise None.
        """
        pid = info.get("pid")
        if not isinstance(pid, int) or "OUTPUT_DIR" not in cmd:
            return None
        output_dir = list(cmd)[list(cmd).index("OUTPUT_DIR") + 1]
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            if os.getpgid(pid) != pid or not _pid_alive(pid):
                return None
        except OSError:
            return None
        config = list(cmd)[list(cmd).index("--config-file") + 1] if "--config-file" in cmd else ""
        if output_dir not in args or config not in args:
            return None
        gpu = info.get("gpu")
        gpu = gpu if gpu in self._load else None
        if gpu is not None:
            self._load[gpu] += 1
        return Handle(
            name=name,
            started=time.monotonic() - elapsed,
            info=dict(info),
            obj=_Orphan(pid, output_dir),
            gpu=gpu,
        )

    def stop(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        import signal

        for h in handles:  # ask everyone first, then wait: total wait is one grace period
            if h.obj.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(h.obj.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for h in handles:
            stop_process_group(h.obj, grace_s=max(0.0, deadline - time.monotonic()))
            self._release(h)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class _Orphan:
    """A trial process an earlier sweep started (not our child): polled through ``/proc``."""

    def __init__(self, pid: int, output_dir: str) -> None:
        self.pid = pid
        self.output_dir = output_dir
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _pid_alive(self.pid):
            self.returncode = -1
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            time.sleep(0.05)
        return int(self.returncode)


class SlurmLauncher(Launcher):
    """Cluster jobs through submitit; ``executor`` may be given (e.g. a ``LocalExecutor``)."""

    name = "slurm"
    poll_interval = 1.0

    def __init__(
        self,
        folder: str,
        slurm: Mapping[str, Any] | None = None,
        cluster: str = "slurm",
        executor: Any = None,
        parallel: int | None = None,
        cwd: str | None = None,
        dry_run: bool = False,
        env: Mapping[str, str] | None = None,
    ):
        opts = dict(slurm or {})
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        max_parallel = opts.pop("max_parallel", None)
        self.capacity = max(1, parallel or max_parallel or 10_000)
        self.cwd = cwd
        self.cluster = cluster
        self.parameters = _executor_parameters(opts, cluster)
        self.executor = executor
        if dry_run:  # describe only: no executor, nothing created on disk
            return
        submitit = _import_submitit()
        if executor is None:
            executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
            executor.update_parameters(**self.parameters)
        self.executor = executor
        inner = getattr(executor, "_executor", executor)  # AutoExecutor wraps the real one
        with contextlib.suppress(Exception):
            self.cluster = str(inner.name())

    def env_preview(self, slot: int) -> dict[str, str]:
        return dict(self.env)

    def describe(self) -> str:
        shown = {k: v for k, v in self.parameters.items() if k not in ("nodes", "tasks_per_node")}
        opts = ", ".join(f"{k}={v}" for k, v in shown.items())
        limit = "no limit" if self.capacity >= 10_000 else f"{self.capacity} at a time"
        return f"submitit {self.cluster} jobs ({opts or 'cluster defaults'}), {limit}"

    def start(self, name: str, cmd: Sequence[str], log_path: str) -> Handle:
        params = {"name": f"detlab-{name}"}
        with contextlib.suppress(Exception):  # executors without a `name` parameter
            self.executor.update_parameters(**params)
        job = self.executor.submit(
            RequeueableCommand(), list(cmd), log_path, self.env or None, self.cwd
        )
        return Handle(
            name=name, started=time.monotonic(), info={"job_id": str(job.job_id)}, obj=job
        )

    def poll(self, handle: Handle) -> dict | None:
        job = handle.obj
        with contextlib.suppress(Exception):  # scheduler hiccup: keep the last known state
            handle.info["job_state"] = str(job.state)
        if not job.done():
            return None
        try:
            result = job.result()
            return {"returncode": int(result["returncode"]), "error": None}
        except Exception as err:  # job crashed, was cancelled or timed out
            first = str(err).strip().splitlines()
            return {"returncode": -1, "error": first[-1] if first else type(err).__name__}

    def reattach(
        self, name: str, info: Mapping[str, Any], elapsed: float, cmd: Sequence[str] = ()
    ) -> Handle | None:
        """Follow a job submitted by an earlier sweep run (e.g. after the sweep was killed).

        Slurm jobs are looked up by id; a local-executor job only if it has already finished
        (its controller process cannot be followed from another sweep process).
        """
        job_id = info.get("job_id")
        inner = getattr(self.executor, "_executor", self.executor)
        job_class = getattr(inner, "job_class", None)
        if not job_id or job_class is None:
            return None
        try:
            job = job_class(folder=self.executor.folder, job_id=str(job_id))
            if self.cluster != "slurm" and str(job.state) != "FINISHED":
                return None
        except Exception:  # unknown to the scheduler: start the trial again
            return None
        return Handle(name=name, started=time.monotonic() - elapsed, info=dict(info), obj=job)

    def stop(self, handles: Sequence[Handle], grace_s: float = 10.0) -> None:
        for h in handles:
            with contextlib.suppress(Exception):  # best effort; the job may have just ended
                h.obj.cancel(check=False)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all(_done(h.obj) for h in handles):
            time.sleep(0.2)


def _done(job: Any) -> bool:
    try:
        return bool(job.done())
    except Exception:
        return True


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UserError(
            "The slurm launcher needs submitit; install it with pip install 'detlab[slurm]'."
        ) from None
    return submitit


def submit_array(
    folder: str,
    slurm: Mapping[str, Any] | None,
    cluster: str,
    fn: Any,
    args: Sequence[Any],
    executor: Any = None,
    name: str = "detlab-sweep",
) -> list[Any]:
    """Submit ``fn(arg)`` for each of ``args`` as one job array (submitit ``map_array``);
    ``max_parallel`` caps how many tasks run at once. Returns the submitit jobs."""
    opts = dict(slurm or {})
    max_parallel = opts.pop("max_parallel", None)
    if executor is None:
        submitit = _import_submitit()
        executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster)
        params = _executor_parameters(opts, cluster)
        if cluster == "slurm" and max_parallel:
            params["slurm_array_parallelism"] = int(max_parallel)
        executor.update_parameters(name=name, **params)
    return list(executor.map_array(fn, list(args)))


def _executor_parameters(opts: Mapping[str, Any], cluster: str) -> dict[str, Any]:
    """Spec ``slurm:`` keys -> ``AutoExecutor.update_parameters`` arguments."""
    out: dict[str, Any] = {}
    generic = {"gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min"}
    for key, value in opts.items():
        if value is None:
            continue
        if key in generic:
            out[key] = float(value) if key == "mem_gb" else int(value)
        elif key == "partition":
            out["slurm_partition"] = str(value)
        elif key in ("account", "qos", "constraint"):
            out[f"slurm_{key}"] = str(value)
        elif key == "additional_parameters":
            out["slurm_additional_parameters"] = dict(value)
    if cluster != "slurm":  # other executors ignore slurm_* keys; drop them to avoid warnings
        out = {k: v for k, v in out.items() if not k.startswith("slurm_")}
        out.setdefault("timeout_min", 7 * 24 * 60)  # submitit's local default is 2 minutes
    out["tasks_per_node"] = 1
    out["nodes"] = 1
    return out


def build_launcher(
    kind: str,
    root: str,
    gpus: Sequence[str] = (),
    parallel: int | None = None,
    slurm: Mapping[str, Any] | None = None,
    cluster: str = "slurm",
    env: Mapping[str, str] | None = None,
    dry_run: bool = False,
    gpus_per_trial: int = 1,
) -> Launcher:
    """``"local"`` or ``"slurm"`` launcher for a sweep rooted at ``root``; ``env`` is added to
    every trial's environment. ``dry_run`` builds one that can only describe itself."""
    if kind == "local":
        return LocalLauncher(gpus=gpus, parallel=parallel, env=env, gpus_per_trial=gpus_per_trial)
    if kind == "slurm":
        return SlurmLauncher(
            os.path.join(root, ".submitit"),
            slurm=slurm,
            cluster=cluster,
            parallel=parallel,
            env=env,
            dry_run=dry_run,
        )
    raise UserError(f"Unknown launcher {kind!r}; use 'local' or 'slurm'.")
