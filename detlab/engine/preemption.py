"""Preemption: SIGTERM/SIGUSR1/SIGUSR2 end a run at the next iteration boundary with a
checkpoint.

Schedulers announce the end of a job with a signal: Slurm and Kubernetes send SIGTERM before
killing (preemption, ``scancel``, pod eviction); ``sbatch --signal=USR1@120`` sends SIGUSR1
two minutes before the time limit (submitit's jobs use SIGUSR2 for the same). While
:class:`PreemptionHandler` is active, these signals only set a flag; the trainer checks it
after each iteration, saves a checkpoint (tagged in ``last_checkpoint``) and raises
:class:`TrainingPreempted`, which the tools turn into exit status :data:`EXIT_PREEMPTED` (75,
``EX_TEMPFAIL``: "try again later").

Slurm: after SIGUSR1 the job asks to be requeued (``scontrol requeue $SLURM_JOB_ID``); after
SIGTERM it does not (``scancel`` sends SIGTERM too, and preemption with ``--requeue`` requeues
by itself), nor after SIGUSR2 (submitit requeues its jobs itself). A requeued job
(``SLURM_RESTART_COUNT`` > 0) resumes from ``last_checkpoint`` without ``--resume``
(:func:`requeued_job`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from typing import Any

from detlab.utils.cli import EXIT_PREEMPTED

__all__ = [
    "EXIT_PREEMPTED",
    "PREEMPTION_SIGNALS",
    "PreemptionHandler",
    "TrainingPreempted",
    "request_requeue",
    "requeued_job",
]

logger = logging.getLogger("detlab")
PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class TrainingPreempted(Exception):
    """Training stopped on a preemption signal after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class PreemptionHandler:
    """While active (``with``), SIGTERM, SIGUSR1 and SIGUSR2 set :attr:`signum` instead of
    killing.

    Installs nothing outside the main thread (signals can only be handled there); the previous
    handlers come back on exit.
    """

    def __init__(self, signals: tuple[int, ...] = PREEMPTION_SIGNALS) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> PreemptionHandler:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def requeued_job() -> bool:
    """True in a Slurm job that was requeued (``SLURM_RESTART_COUNT`` > 0)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
    except ValueError:
        return False


def request_requeue(signum: int) -> str:
    """After SIGUSR1 in a Slurm job, ask Slurm to requeue it; return a sentence saying what
    happened ('' when not under Slurm or after another signal)."""
    job = os.environ.get("SLURM_JOB_ID")
    if signum != signal.SIGUSR1 or not job:
        return ""
    exe = shutil.which("scontrol")
    if exe is None:
        return f"scontrol is not on PATH, so Slurm job {job} was not requeued"
    try:
        done = subprocess.run(
            [exe, "requeue", job], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"scontrol requeue {job} failed ({err})"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        return f"scontrol requeue {job} failed ({why[-1] if why else done.returncode})"
    return f"Slurm job {job} requeued; it resumes from this checkpoint when it starts again"
