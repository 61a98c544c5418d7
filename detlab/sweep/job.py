"""Running one trial's command: used inside cluster jobs and for stopping process groups.

:func:`run_command` is what a submitit job executes: it starts the training command in its own
process group with output appended to the trial's log, waits, and on any interruption (the
job being cancelled, a signal) stops the whole group before returning or re-raising.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

__all__ = [
    "RequeueableCommand",
    "open_log",
    "run_command",
    "start_process",
    "stop_process_group",
    "tail",
]


def open_log(log_path: str, cmd: Sequence[str], note: str = ""):
    """Open ``log_path`` for appending and write a header naming the command."""
    import shlex

    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    f = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - handed to a subprocess
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    f.write(f"==== {stamp} {note}\n==== {shlex.join(list(cmd))}\n")
    f.flush()
    return f


def _die_with_parent(parent: int) -> None:
    """In the child before exec: get SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the call above
        os.kill(os.getpid(), signal.SIGTERM)


def start_process(
    cmd: Sequence[str],
    log_path: str,
    env: Mapping[str, str],
    cwd: str | None = None,
    note: str = "",
    die_with_parent: bool = False,
) -> tuple[subprocess.Popen, object]:
    """Start ``cmd`` in its own process group with output appended to ``log_path``.

    ``env`` is the full environment. With ``die_with_parent`` (Linux) the process gets SIGTERM
    when this process dies, so a killed sweep worker leaves no trial running on its own.
    Returns the process and the open log file (close it once the process has ended).
    """
    import sys

    log = open_log(log_path, cmd, note=note)
    preexec = None
    if die_with_parent and sys.platform.startswith("linux"):
        parent = os.getpid()

        def preexec() -> None:
            _die_with_parent(parent)

    try:
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,  # own process group: stopped as a whole
            preexec_fn=preexec,
        )
    except BaseException:
        log.close()
        raise
    return proc, log


def stop_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group of ``proc``, then SIGKILL it after ``grace_s`` seconds."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # leftovers of an exited leader
        return
    _kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    _kill_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def run_command(
    cmd: Sequence[str],
    log_path: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    grace_s: float = 10.0,
) -> dict:
    """Run ``cmd`` to completion with output appended to ``log_path``.

    Returns ``{"returncode": int, "wall_time": seconds}``. ``env`` entries are added to the
    current environment. If this function is interrupted (KeyboardInterrupt, SystemExit, a job
    cancellation), the command's process group is stopped before the exception propagates.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    start = time.monotonic()
    with open_log(log_path, cmd, note="job") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
        )
        previous = signal.getsignal(signal.SIGTERM)
        in_main = _in_main_thread()

        def _on_term(signum, frame):  # turn SIGTERM into an exception so `finally` runs
            raise KeyboardInterrupt

        if in_main:
            signal.signal(signal.SIGTERM, _on_term)
        try:
            returncode = proc.wait()
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)
            stop_process_group(proc, grace_s)
    return {"returncode": int(returncode), "wall_time": time.monotonic() - start}


class RequeueableCommand:
    """:func:`run_command` as a submitit job that is requeued on preemption *and* on timeout.

    submitit calls :meth:`checkpoint` when the job is about to end and requeues what it
    returns: the same command. The training process got the signal too and saved a checkpoint
    (exit 75); the requeued job's ``train_net.py`` sees ``SLURM_RESTART_COUNT`` and resumes.
    """

    def __call__(self, cmd: Sequence[str], log_path: str, env=None, cwd=None) -> dict:
        return run_command(cmd, log_path, env, cwd)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def tail(path: str, lines: int = 20, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
