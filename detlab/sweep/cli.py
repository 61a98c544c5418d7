"""``python -m detlab.sweep SPEC [options]``: run a sweep from the command line.

A spec with a ``study:`` section or ``method: tpe``/``cmaes``, or a command with ``--workers``,
``--storage`` or ``--study-name``, runs the sweep as an Optuna study worked on by workers
(:mod:`detlab.sweep.study_run`); otherwise one process drives the trials
(:mod:`detlab.sweep.runner`) and Optuna is not needed.

Exit status: 0 when every trial finished (or was pruned), 1 when some failed, 2 on a user
error (one line on stderr), 128 + signal number when stopped by SIGINT/SIGTERM (trials stopped)
or SIGHUP (trials or workers left running, to be followed by the next run).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from detlab.utils.cli import DetlabArgumentParser, run_tool

__all__ = ["build_parser", "main"]


def build_parser() -> DetlabArgumentParser:
    parser = DetlabArgumentParser(
        prog="tools/sweep.sh",
        description="Run a sweep of training runs from a spec file and rank them in a "
        "leaderboard (leaderboard.md / leaderboard.csv in the sweep root).",
    )
    parser.add_argument("spec", help="sweep spec YAML (see configs/sweeps/)")
    parser.add_argument(
        "--launcher",
        choices=("local", "slurm"),
        default="local",
        help="local subprocesses (default) or one Slurm job per trial through submitit",
    )
    parser.add_argument(
        "--parallel", type=int, help="trials at a time (local: default = #GPUs or 1)"
    )
    parser.add_argument(
        "--gpus", help="GPU indices for local trials, e.g. 0,1 (one per trial); empty = CPU"
    )
    parser.add_argument(
        "--gpus-per-trial",
        type=int,
        metavar="K",
        help="GPUs per trial (default 1); K > 1 runs train_net with --num-gpus K (DDP)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print trials and commands only")
    parser.add_argument(
        "--status", action="store_true", help="print the current leaderboard and exit (no runs)"
    )
    parser.add_argument("--retry-failed", action="store_true", help="run failed trials again")
    parser.add_argument("--output-root", help="sweep root directory (overrides the spec)")
    study = parser.add_argument_group("study (Optuna; pip install 'detlab[sweep]')")
    study.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run the sweep as a study with N workers (local: one per GPU group by default; "
        "slurm: N array tasks); workers started elsewhere on the same storage join it",
    )
    study.add_argument(
        "--storage",
        metavar="URL",
        help="study storage: sqlite (default, <root>/study.db), journal[:PATH], or a database "
        "URL such as postgresql+psycopg://user:${PW}@host/db",
    )
    study.add_argument("--study-name", metavar="NAME", help="study name (default: spec's)")
    study.add_argument("--no-plots", action="store_true", help="skip the study's figures")
    study.add_argument("--run-worker", type=int, metavar="SLOT", help=argparse.SUPPRESS)
    parser.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds a stopped trial gets to exit before SIGKILL",
    )
    slurm = parser.add_argument_group("slurm (override the spec's slurm: section)")
    slurm.add_argument("--partition")
    slurm.add_argument("--gpus-per-node", type=int)
    slurm.add_argument("--cpus-per-task", type=int)
    slurm.add_argument("--mem-gb", type=float)
    slurm.add_argument("--timeout-min", type=int, help="job time limit in minutes")
    slurm.add_argument(
        "--cluster",
        default="slurm",
        choices=("slurm", "local"),
        help="submitit executor: slurm, or local to run the job path on this machine",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    parser.add_argument(
        "opts",
        nargs="*",
        default=[],
        metavar="KEY VALUE",
        help="config overrides added to every trial (win over the spec's fixed ones)",
    )
    return parser


def _sweep(args) -> int:
    from detlab.sweep.launchers import build_launcher
    from detlab.sweep.plan import plan_sweep, print_dry_run
    from detlab.sweep.runner import SweepInterrupted, run_sweep
    from detlab.sweep.spec import add_fixed_overrides, load_spec, parse_gpus
    from detlab.sweep.state import FINISHED
    from detlab.utils.errors import UserError

    spec = load_spec(args.spec, output_root=args.output_root)
    if args.opts:
        spec = add_fixed_overrides(spec, list(args.opts))
    if args.parallel is not None and args.parallel < 1:
        raise UserError(f"--parallel must be at least 1, got {args.parallel}.")
    gpus = parse_gpus(args.gpus) if args.gpus is not None else (spec.gpus or [])
    parallel = args.parallel or spec.parallel
    slurm = dict(spec.slurm)
    for key in ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min"):
        if getattr(args, key) is not None:
            slurm[key] = getattr(args, key)
    per_trial = args.gpus_per_trial or spec.gpus_per_trial
    if args.gpus_per_trial is not None and args.gpus_per_trial < 1:
        raise UserError(f"--gpus-per-trial must be at least 1, got {args.gpus_per_trial}.")
    if args.launcher == "slurm":
        if per_trial and not slurm.get("gpus_per_node"):
            slurm["gpus_per_node"] = per_trial
        per_trial = per_trial or int(slurm.get("gpus_per_node") or 1)
    per_trial = per_trial or 1
    if _study_mode(spec, args):
        return _study(args, spec, gpus, parallel, slurm, per_trial)
    # Checks every trial's config before anything starts.
    planned = plan_sweep(spec, num_gpus=per_trial)
    if args.status:
        from detlab.sweep.report import render_leaderboard
        from detlab.sweep.state import SweepState

        state = SweepState.load(spec.output_root)
        _print(render_leaderboard(spec, [p.trial for p in planned], state)[1].rstrip())
        return 0
    launcher = build_launcher(
        args.launcher,
        spec.output_root,
        gpus=gpus,
        parallel=parallel,
        slurm=slurm,
        cluster=args.cluster,
        env=spec.env,
        dry_run=args.dry_run,
        gpus_per_trial=per_trial,
    )
    if args.dry_run:
        print_dry_run(spec, planned, launcher, retry_failed=args.retry_failed, out=_print)
        return 0
    try:
        outcome = run_sweep(
            spec, launcher, planned, retry_failed=args.retry_failed, out=_print, grace_s=args.grace
        )
    except SweepInterrupted as stop:
        if stop.signum == signal.SIGHUP:
            _print("Trials keep running; run the same command to follow them to the end.")
        else:
            _print(f"Sweep stopped; state in {spec.output_root}. Run the same command to go on.")
        return 128 + stop.signum
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.counts.items()))
    _print(f"Leaderboard: {os.path.join(spec.output_root, 'leaderboard.md')} ({counts})")
    if outcome.best_name:
        where = f"config: {outcome.best_config}" if outcome.best_config else outcome.best_dir
        _print(f"Best trial: {outcome.best_name} by {spec.metric}; {where}")
    else:
        _print(f"No trial has a value for {spec.metric} yet.")
    return 0 if outcome.counts.get(FINISHED, 0) == len(outcome.rows) else 1


def _study_mode(spec, args) -> bool:
    flags = (args.workers, args.storage, args.study_name, args.run_worker)
    return spec.study is not None or any(f is not None for f in flags)


def _study(args, spec, gpus: list[str], parallel, slurm: dict, per_trial: int) -> int:
    """The sweep as an Optuna study: prepare it, run workers, write leaderboard and plots."""
    from detlab.sweep.launchers import LocalLauncher
    from detlab.sweep.plan import plan_sweep
    from detlab.sweep.runner import SweepInterrupted
    from detlab.sweep.study import quiet_optuna
    from detlab.sweep.study_run import StudyRun, existing_study, run_worker_job
    from detlab.sweep.worker import hook_overrides
    from detlab.utils.errors import UserError

    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}.")
    quiet_optuna()
    run = StudyRun(
        spec,
        opts=list(args.opts),
        storage=args.storage,
        study_name=args.study_name,
        num_gpus=per_trial,
        grace_s=args.grace,
        out=_print,
    )
    if args.run_worker is not None:  # this process is one worker (started by the command)
        try:
            run_worker_job(run.job(args.run_worker), out=_print)
        except SweepInterrupted as stop:
            return 128 + stop.signum
        return 0
    spec = run.spec
    # Checks every trial's config (a sampled search: keys and types) before anything starts.
    planned = plan_sweep(spec, num_gpus=per_trial, extra=hook_overrides(spec))
    n = args.workers or parallel
    local = None
    if args.launcher == "local":
        local = LocalLauncher(gpus=gpus, parallel=n, env=spec.env, gpus_per_trial=per_trial)
        n = n or len(local.gpus) or 1
    n = n or 1
    if args.dry_run:
        from detlab.sweep.study_dry_run import print_study_dry_run

        where = local.describe() if local else f"a Slurm job array ({args.cluster})"
        print_study_dry_run(run, planned, n, where, local, args.retry_failed, out=_print)
        return 0
    if args.status:
        study = existing_study(spec, run.ref, run.name)
        if study is None:
            _print(f"No study {run.name!r} in {run.ref.shown} yet.")
            return 0
        _report(run, study, planned, args)
        return 0
    study = run.prepare(planned, args.retry_failed)
    _print(run.describe())
    if local is not None:
        groups = local.gpus
        slots = [
            {"CUDA_VISIBLE_DEVICES": groups[i % len(groups)] if groups else ""} for i in range(n)
        ]
        stopped = run.run_local(slots, local.env)
    else:
        stopped = run.run_slurm(n, slurm, args.cluster)
    rows = _report(run, study, planned, args)
    if stopped is not None:
        _print("Sweep stopped; the study keeps its state. Run the same command to go on.")
        return 128 + stopped
    done = sum(r["status"] in ("finished", "pruned") for r in rows)
    return 0 if rows and done == len(rows) else 1


def _report(run, study, planned, args) -> list[dict]:
    """Leaderboard (printed) and figures of the study."""
    from detlab.sweep.report import best_row, render_leaderboard
    from detlab.sweep.study_report import study_view, write_study_leaderboard

    spec = run.spec
    rows = write_study_leaderboard(spec, study, None if spec.sampled else planned)
    trials, state = study_view(spec, study, None if spec.sampled else planned)
    _print(render_leaderboard(spec, trials, state)[1].rstrip())
    if not args.no_plots:
        from detlab.sweep.plots import write_plots

        drawn = write_plots(study, spec)
        made = [k for k, v in drawn.items() if v == "written"]
        _print(f"Figures in {spec.output_root}: {', '.join(made) or 'none yet'}")
        for k, v in drawn.items():
            if v != "written":
                _print(f"  {k}: {v}")
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{c} {s}" for s, c in sorted(counts.items()))
    _print(f"Leaderboard: {os.path.join(spec.output_root, 'leaderboard.md')} ({summary})")
    best = best_row(rows)
    if best is not None:
        cfg = os.path.join(spec.output_root, best["name"], "config.yaml")
        _print(f"Best trial: {best['name']} by {spec.metric}; config: {cfg}")
    return rows


def _print(text: str) -> None:
    """Print a progress line; a closed pipe (``| head``) must not stop a running sweep."""
    try:
        print(text, flush=True)
    except OSError:  # EPIPE, or EIO once the terminal has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)  # options before or after overrides
    return run_tool(lambda: _sweep(args), debug=args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
