"""Signals to real training processes: preemption (SIGTERM, SIGUSR1 + Slurm requeue), a
SIGKILLed DataLoader worker, and ``--resume`` of a finished run."""

from __future__ import annotations

import os
import signal
import stat

import pytest
from _run import children, finish, losses, one_sentence, reached, rows, run, start, wait_for

from detlab.engine.checkpoint import load_checkpoint_file

pytestmark = pytest.mark.faults

EXIT_PREEMPTED = 75


def _stop_with(sig, cfg, out, at: int, *extra, env=None) -> str:
    """Start a run, send ``sig`` once iteration ``at`` is logged; assert the preemption exit
    and return its one ``stopped:`` line."""
    proc = start(cfg, out, *extra, env=env)
    wait_for(reached(out, at), proc=proc, what=f"iteration {at}")
    proc.send_signal(sig)
    res = finish(proc)
    assert res.returncode == EXIT_PREEMPTED, res.stderr[-3000:]
    return one_sentence(res.stderr, "stopped: ")


def _assert_same_losses(out, expected):
    got = losses(out)
    assert sorted(got) == sorted(expected)
    assert got == expected  # bit-exact on CPU


def test_sigterm_saves_at_iteration_boundary_and_resume_matches(reference, tmp_path):
    ref_out, cfg, ref_losses = reference
    out = tmp_path / "run"
    line = _stop_with(signal.SIGTERM, cfg, out, 12)
    assert "SIGTERM" in line and "--resume" in line
    name = (out / "last_checkpoint").read_text().strip()
    assert name in line
    saved = load_checkpoint_file(str(out / name))
    assert int(name[6:13]) == saved["iteration"] >= 12  # the iteration it stopped after
    assert saved["iteration"] % 10 != 9, "expected a save between the periodic ones"

    res = run(cfg, out, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_losses(out, ref_losses)


def test_sigusr1_requeues_the_slurm_job_which_resumes_by_itself(reference, tmp_path):
    """``sbatch --signal=USR1@T --requeue``: SIGUSR1 → checkpoint → ``scontrol requeue``;
    the requeued job (``SLURM_RESTART_COUNT=1``, same command, no ``--resume``) continues."""
    _, cfg, ref_losses = reference
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    fake = bin_dir / "scontrol"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    out = tmp_path / "run"
    line = _stop_with(signal.SIGUSR1, cfg, out, 14, env=env)
    assert "SIGUSR1" in line and "4242 requeued" in line
    assert calls.read_text().split() == ["requeue", "4242"]

    requeued = run(cfg, out, env={**env, "SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    assert "resuming from" in requeued.stdout and "Slurm requeued" in requeued.stdout
    _assert_same_losses(out, ref_losses)
    assert calls.read_text().split() == ["requeue", "4242"]  # not requeued again


def test_sigterm_to_a_two_process_job_reaches_every_rank(reference, tmp_path):
    """Kubernetes and plain ``kill`` signal only the launcher process; it forwards the signal
    so every DDP rank stops at the same iteration boundary."""
    _, cfg, _ = reference
    short = ("--num-gpus", "2", "SOLVER.MAX_ITER", "14")
    ref = run(cfg, tmp_path / "ref", *short)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "ddp"
    assert _stop_with(signal.SIGTERM, cfg, out, 4, *short).startswith("stopped: Stopped by SIGTERM")
    name = (out / "last_checkpoint").read_text().strip()
    assert 4 <= load_checkpoint_file(str(out / name))["iteration"] < 13
    res = run(cfg, out, "--resume", *short)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_losses(out, losses(tmp_path / "ref"))


def test_sigkilled_dataloader_worker_is_replaced_and_the_run_finishes(tmp_path):
    """The OOM killer takes a worker while the main process is in the training step: the
    run goes on with fresh workers from the same batch and counts the event."""
    from _run import write_cfg

    cfg = write_cfg(tmp_path / "workers.yaml", **{"DATALOADER.NUM_WORKERS": 2})
    ref = run(cfg, tmp_path / "ref", "DATALOADER.NUM_WORKERS", "0", trainer="workers")
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "run"
    proc = start(cfg, out, trainer="workers")
    wait_for(reached(out, 8), proc=proc, what="iteration 8")
    workers = children(proc.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    res = finish(proc)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "fresh workers at batch" in res.stdout
    last = [r for r in rows(out) if "data/worker_failures" in r][-1]
    assert last["data/worker_failures"] == 1
    _assert_same_losses(out, losses(tmp_path / "ref"))


def test_resume_of_a_finished_run_exits_0_without_training_again(reference, copy_of):
    ref_out, cfg, _ = reference
    out = copy_of(ref_out)
    before = (out / "metrics.jsonl").read_text(), (out / "final_metrics.json").read_text()
    res = run(cfg, out, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert "already finished" in res.stdout
    assert (out / "metrics.jsonl").read_text() == before[0]
    assert (out / "final_metrics.json").read_text() == before[1]
