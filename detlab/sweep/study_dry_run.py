"""``--dry-run`` of a study sweep: the study, its workers and each trial's command; nothing runs,
and no database or study is created (an existing one is only read)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import Any

from detlab.sweep.trials import Trial, format_value

__all__ = ["print_study_dry_run"]


def _actions(run: Any, retry_failed: bool) -> dict[str, str]:
    """What a run would do with each trial the study already knows."""
    from detlab.sweep.study_report import study_view
    from detlab.sweep.study_run import existing_study

    study = existing_study(run.spec, run.ref, run.name)
    if study is None:
        return {}
    _trials, state = study_view(run.spec, study)
    verbs = {"finished": "skip (finished)", "pruned": "skip (pruned)", "running": "running"}
    out = {}
    for name, rec in state.trials.items():
        status = rec["status"]
        if status == "failed":
            out[name] = "retry" if retry_failed else "skip (failed)"
        elif status == "interrupted":
            out[name] = "resume"
        else:
            out[name] = verbs.get(status, "run")
    return out


def print_study_dry_run(
    run: Any,
    planned: Sequence[Any],
    workers: int,
    where: str,
    local: Any,
    retry_failed: bool = False,
    out: Callable[[str], None] = print,
) -> None:
    """Print the study, the workers and every planned trial with its exact command."""
    from detlab.sweep.plan import example_params, plan_trial
    from detlab.sweep.worker import hook_overrides

    spec = run.spec
    count = f"{spec.num_trials} trials" if spec.sampled else f"{len(planned)} trials"
    out(
        f"Sweep {spec.path}: {count} ({spec.method}) as an Optuna study, {workers} worker(s) "
        f"on {where}, ranked by {spec.metric} ({spec.mode}), root {spec.output_root}"
    )
    out(run.describe())
    env = " ".join(
        f"{k}={shlex.quote(v)}" for k, v in (local.env_preview(0) if local else {}).items()
    )
    out(
        "Each trial also gets DETLAB_SWEEP_STORAGE/STUDY/TRIAL_ID/METRIC/PRUNER in its "
        "environment (see docs/sweeps.md)."
    )
    if spec.sampled:
        example = plan_trial(
            spec,
            Trial(0, "<trial name>", example_params(spec)),
            run.num_gpus,
            hook_overrides(spec),
        )
        out(f"Trials are picked one at a time by {spec.method.upper()}; a trial's command:")
        out(f"    {env + ' ' if env else ''}{shlex.join(example.command())}")
        return
    actions = _actions(run, retry_failed)
    for p in planned:
        action = actions.get(p.trial.name, "run")
        params = ", ".join(f"{k}={format_value(v)}" for k, v in p.trial.params.items())
        out(f"[{p.trial.index}] {p.trial.name} ({params}): {action}")
        if not action.startswith("skip"):
            cmd = shlex.join(p.command(action == "resume"))
            out(f"    {env + ' ' if env else ''}{cmd} > {shlex.quote(p.log_path)} 2>&1")
