"""Sweeps: run a grid or random search of training runs and rank them in a leaderboard.

>>> from detlab.sweep import load_spec, plan_sweep, run_sweep, LocalLauncher
>>> spec = load_spec("configs/sweeps/sar_lr_clip.yaml")
>>> outcome = run_sweep(spec, LocalLauncher(gpus=["0", "1"]))   # doctest: +SKIP

From the shell: ``tools/sweep.sh SPEC [--parallel N] [--gpus 0,1] [--launcher local|slurm]
[--dry-run] [--retry-failed]``; ``--workers N`` (or a ``study:`` section) runs it as an Optuna
study (:class:`StudyRun`, :class:`Worker`; ``pip install 'detlab[sweep]'``). Nothing here
imports torch, nor Optuna until a study is used.
"""

from detlab.sweep.launchers import Launcher, LocalLauncher, SlurmLauncher, build_launcher
from detlab.sweep.plan import PlannedTrial, plan_sweep, print_dry_run
from detlab.sweep.report import write_leaderboard
from detlab.sweep.runner import SweepInterrupted, SweepOutcome, run_sweep
from detlab.sweep.spec import SweepSpec, load_spec
from detlab.sweep.state import SweepState
from detlab.sweep.study_run import StudyRun
from detlab.sweep.trials import Trial, expand_trials
from detlab.sweep.worker import Worker

__all__ = [
    "Launcher",
    "LocalLauncher",
    "PlannedTrial",
    "SlurmLauncher",
    "SweepInterrupted",
    "SweepOutcome",
    "SweepSpec",
    "SweepState",
    "StudyRun",
    "Trial",
    "Worker",
    "build_launcher",
    "expand_trials",
    "load_spec",
    "plan_sweep",
    "print_dry_run",
    "run_sweep",
    "write_leaderboard",
]
