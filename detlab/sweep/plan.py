"""Planning a sweep: every trial's exact command, checked before anything runs.

:func:`plan_sweep` expands a spec into trials and builds each trial's ``train_net.py`` command
(``--config-file BASE`` + fixed overrides + parameters + ``OUTPUT_DIR``). Every trial's full
config is loaded with :func:`detlab.config.load_config` first, so a misspelt key or a wrong
type fails at once, naming the key. :func:`print_dry_run` shows what a run would do.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from detlab.sweep.launchers import Launcher
from detlab.sweep.spec import SweepSpec
from detlab.sweep.state import FINISHED, SweepState
from detlab.sweep.trials import (
    Trial,
    expand_trials,
    format_value,
    override_tokens,
    parameter_combinations,
)
from detlab.utils.errors import ConfigError, UserError

__all__ = [
    "LOG_NAME",
    "PlannedTrial",
    "config_args",
    "example_params",
    "plan_sweep",
    "plan_trial",
    "print_dry_run",
    "resolve_train_script",
    "same_config",
    "trial_action",
]

LOG_NAME = "run.log"


@dataclass
class PlannedTrial:
    """A trial with its output directory, log file and command (without ``--resume``)."""

    trial: Trial
    output_dir: str
    log_path: str
    cmd: list[str]

    def command(self, resume: bool = False) -> list[str]:
        if not resume:
            return list(self.cmd)
        i = self.cmd.index("--config-file")
        return [*self.cmd[:i], "--resume", *self.cmd[i:]]


def resolve_train_script(spec: SweepSpec) -> str:
    """``spec.train_script`` or ``tools/train_net.py`` next to the ``detlab`` package."""
    if spec.train_script:
        path = spec.train_script
        if not os.path.isfile(path):
            raise UserError(f"Sweep spec {spec.path}: train_script {path} does not exist.")
        return path
    import detlab

    candidates = [
        Path(detlab.__file__).resolve().parents[1] / "tools" / "train_net.py",
        Path.cwd() / "tools" / "train_net.py",
    ]
    for path in candidates:
        if path.is_file():
            return str(path)
    raise UserError(
        f"Cannot find tools/train_net.py (looked in {candidates[0].parent}); set train_script "
        f"in {spec.path}."
    )


def example_params(spec: SweepSpec) -> dict:
    """One set of parameter values to check keys and types with before anything runs."""
    first = parameter_combinations(spec)[:1]
    if first:
        return first[0]
    out = {}
    for key, dist in spec.parameters.items():  # a sampled search: the low end of each range
        ((_kind, args),) = dist.items()
        out[key] = args[0]
    return out


class _Planner:
    """Builds trial commands for one spec (the base command is computed once)."""

    def __init__(self, spec: SweepSpec, validate: bool, num_gpus: int, extra: Sequence[str]):
        self.spec = spec
        self.validate = validate
        self.fixed = [*override_tokens(spec.fixed), *extra]
        script = resolve_train_script(spec)
        python = spec.python or sys.executable
        # A Python script runs under `python`; any other executable (a wrapper script) as is.
        direct = not script.endswith(".py") and os.access(script, os.X_OK)
        runner = [script] if direct else [python, script]
        self.runner = [*runner, *(["--num-gpus", str(num_gpus)] if num_gpus > 1 else [])]

    def check(self, opts: list[str], what: str) -> None:
        from detlab.config import load_config

        try:
            load_config(self.spec.base_config, opts)
        except ConfigError as err:
            reason = str(err).replace(" (from the command line)", "")
            text = f"Sweep spec {self.spec.path}, {what}: {reason}"
            raise ConfigError(text if text.endswith((".", "?", "!")) else text + ".") from None

    def plan(self, trial: Trial) -> PlannedTrial:
        out_dir = os.path.join(self.spec.output_root, trial.name)
        opts = [*self.fixed, *override_tokens(trial.params), "OUTPUT_DIR", out_dir]
        if self.validate:
            self.check(opts, f"trial {trial.name}")
        cmd = [*self.runner, "--config-file", self.spec.base_config, *opts]
        return PlannedTrial(trial, out_dir, os.path.join(out_dir, LOG_NAME), cmd)


def plan_sweep(
    spec: SweepSpec, validate: bool = True, num_gpus: int = 1, extra: Sequence[str] = ()
) -> list[PlannedTrial]:
    """Trials of ``spec`` with their commands; ``validate`` checks every full config first.

    ``num_gpus > 1`` adds ``--num-gpus N`` (one DDP process per GPU of the trial); ``extra``
    are ``KEY VALUE`` tokens added after the fixed overrides. A sampled search (``tpe``,
    ``cmaes``) has no planned trials: its keys and types are checked with the low end of each
    range, and :func:`plan_trial` plans each trial once Optuna has picked its values.
    """
    planner = _Planner(spec, validate, num_gpus, extra)
    if validate:  # keys first, so a misspelt key is named before anything else can fail
        planner.check([*planner.fixed, *override_tokens(example_params(spec))], "parameters")
    return [planner.plan(trial) for trial in expand_trials(spec)]


def plan_trial(
    spec: SweepSpec, trial: Trial, num_gpus: int = 1, extra: Sequence[str] = ()
) -> PlannedTrial:
    """One trial's command (e.g. a trial Optuna sampled), its config checked."""
    return _Planner(spec, True, num_gpus, extra).plan(trial)


def config_args(p: PlannedTrial) -> list[str]:
    """The part of a trial's command that defines its config: ``--config-file BASE KEY V ...``."""
    return p.cmd[p.cmd.index("--config-file") :]


def same_config(record: dict, p: PlannedTrial) -> bool:
    """False if the record was made for other parameters, fixed overrides or base config."""
    if record.get("params") not in (None, json.loads(json.dumps(p.trial.params))):
        return False
    return record.get("config_args") in (None, config_args(p))


def _has_checkpoint(output_dir: str) -> bool:
    return os.path.isfile(os.path.join(output_dir, "last_checkpoint"))


def print_dry_run(
    spec: SweepSpec,
    planned: Sequence[PlannedTrial],
    launcher: Launcher,
    retry_failed: bool = False,
    out: Callable[[str], None] = print,
) -> None:
    """Print every trial, whether it would run, and its exact command; start nothing."""
    state = SweepState.load(spec.output_root)
    out(
        f"Sweep {spec.path}: {len(planned)} trials ({spec.method}) on {launcher.describe()}, "
        f"ranked by {spec.metric} ({spec.mode}), root {spec.output_root}"
    )
    slot = 0
    for p in planned:
        rec = state.trials.get(p.trial.name, {})
        action, resume = trial_action(rec, p, retry_failed)
        params = ", ".join(f"{k}={format_value(v)}" for k, v in p.trial.params.items())
        out(f"[{p.trial.index}] {p.trial.name} ({params}): {action}")
        if action == "skip":
            continue
        env = launcher.env_preview(slot)
        slot = (slot + 1) % max(1, min(launcher.capacity, len(planned)))
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        cmd = shlex.join(p.command(resume))
        out(f"    {prefix + ' ' if prefix else ''}{cmd} > {shlex.quote(p.log_path)} 2>&1")


def trial_action(record: dict, p: PlannedTrial, retry_failed: bool) -> tuple[str, bool]:
    """``("skip"|"run"|"resume"|"retry", resume?)`` for a trial given its state record."""
    status = record.get("status", "pending")
    if not same_config(record, p):
        return "run", False
    if status == FINISHED:
        return "skip", False
    if status == "failed":
        if not retry_failed:
            return "skip", False
        # Killed by a signal (the OOM killer, a cancelled job): continue from its checkpoint;
        # any other failure (an error, divergence) runs again from the start.
        if _killed(record) and _has_checkpoint(p.output_dir):
            return "resume", True
        return "retry", False
    if status in ("running", "interrupted") and _has_checkpoint(p.output_dir):
        return "resume", True
    return "run", False


def _killed(record: dict) -> bool:
    """Whether a failed trial's process was killed rather than ending with an error."""
    rc = record.get("returncode")
    return isinstance(rc, int) and (rc < 0 or rc in (128 + 9, 128 + 15))
