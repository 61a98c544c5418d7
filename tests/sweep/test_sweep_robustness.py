"""Stopping a sweep cleanly, resuming it, the atomic state file, and the submitit launcher."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from detlab.sweep import SlurmLauncher, SweepState, load_spec, run_sweep
from detlab.sweep.state import sweep_lock
from detlab.utils.errors import UserError


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_children_and_rerun_resumes(make_spec, sig):
    spec_path = make_spec()
    env = dict(os.environ, FAKE_TRAIN_SLEEP="60")
    proc = subprocess.Popen(
        [sys.executable, "-m", "detlab.sweep", str(spec_path), "--parallel", "2", "--grace", "5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(make_spec.read_calls()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        calls = make_spec.read_calls()
        assert len(calls) == 2, proc.stdout.read() if proc.poll() is not None else "timeout"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, out
    assert "Sweep stopped" in out
    for call in calls:
        assert not _alive(call["pid"]), "a trial process survived the sweep"
    state = json.loads((make_spec.root / "sweep_state.json").read_text())
    statuses = sorted(t["status"] for t in state["trials"].values())
    assert statuses == ["interrupted", "interrupted", "pending", "pending"]
    assert "interrupted" in (make_spec.root / "leaderboard.md").read_text()

    # Running again finishes the sweep; the interrupted trials resume from their checkpoint.
    outcome = run_sweep(load_spec(spec_path), _local(2), out=lambda s: None)
    assert outcome.counts == {"finished": 4}
    new = make_spec.read_calls()[2:]
    assert len(new) == 4
    resumed = {os.path.basename(c["output_dir"]) for c in new if c["resume"]}
    interrupted = {n for n, t in state["trials"].items() if t["status"] == "interrupted"}
    assert resumed == interrupted


def _local(parallel: int):
    from detlab.sweep import LocalLauncher

    return LocalLauncher(parallel=parallel)


def test_state_file_is_replaced_atomically(tmp_path, monkeypatch):
    state = SweepState(str(tmp_path), {"a": {"status": "finished"}})
    state.save()
    before = (tmp_path / "sweep_state.json").read_text()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    state.trials["a"]["status"] = "failed"
    with pytest.raises(OSError):
        state.save()
    assert (tmp_path / "sweep_state.json").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["sweep_state.json"]  # no temporary left behind
    monkeypatch.undo()
    state.save()
    assert SweepState.load(str(tmp_path)).trials["a"]["status"] == "failed"


def test_unreadable_state_is_a_user_error(tmp_path):
    (tmp_path / "sweep_state.json").write_text('{"trials": [')
    with pytest.raises(UserError, match="unreadable"):
        SweepState.load(str(tmp_path))


def test_second_sweep_on_the_same_root_is_refused(tmp_path):
    root = str(tmp_path)
    with sweep_lock(root), pytest.raises(UserError, match="Another sweep"), sweep_lock(root):
        pass


@pytest.mark.parametrize("how", ["auto-local", "LocalExecutor"])
def test_slurm_launcher_through_submitit_local_executor(make_spec, how):
    spec = load_spec(
        make_spec(
            parameters={
                "SOLVER.BASE_LR": [0.01, 0.9],  # the second trial fails
                "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": [0.5],
            },
            slurm={"partition": "gpu", "cpus_per_task": 1, "mem_gb": 1, "timeout_min": 5},
        )
    )
    folder = str(make_spec.root / ".submitit")
    if how == "auto-local":
        launcher = SlurmLauncher(folder, slurm=spec.slurm, cluster="local")
        assert launcher.executor.cluster == "local"
    else:
        import submitit

        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=5)
        launcher = SlurmLauncher(folder, executor=executor)
    assert launcher.cluster == "local"
    messages: list[str] = []
    outcome = run_sweep(spec, launcher, out=messages.append)
    assert outcome.counts == {"finished": 1, "failed": 1}
    assert outcome.best_name == "lr0.01_clip0.5"
    state = json.loads((make_spec.root / "sweep_state.json").read_text())
    for trial in state["trials"].values():
        assert trial["launch"]["job_id"]
        assert trial["launch"]["job_state"] in ("FINISHED", "RUNNING")
    failed = state["trials"]["lr0.9_clip0.5"]
    assert failed["returncode"] == 1 and "FloatingPointError" in failed["log_tail"]
    assert (make_spec.root / "leaderboard.csv").read_text().count("\n") == 3


def test_rerun_follows_a_job_an_earlier_sweep_submitted(make_spec):
    """A sweep killed hard leaves 'running' jobs; the next run follows them, not re-submits."""
    from detlab.sweep import plan_sweep

    spec = load_spec(
        make_spec(parameters={"SOLVER.BASE_LR": [0.01], "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": [0.5]})
    )
    (planned,) = plan_sweep(spec)
    first = SlurmLauncher(str(make_spec.root / ".submitit"), cluster="local")
    handle = first.start(planned.trial.name, planned.cmd, planned.log_path)
    deadline = time.monotonic() + 60
    while first.poll(handle) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    SweepState(
        str(make_spec.root),
        {
            planned.trial.name: {
                "status": "running",
                "params": planned.trial.params,
                "launch": dict(handle.info),
                "started_epoch": time.time() - 5,
            }
        },
    ).save()

    second = SlurmLauncher(str(make_spec.root / ".submitit"), cluster="local")
    outcome = run_sweep(spec, second, out=lambda s: None)
    assert outcome.counts == {"finished": 1}
    assert len(make_spec.read_calls()) == 1  # not submitted again
    state = SweepState.load(str(make_spec.root))
    assert state.trials[planned.trial.name]["wall_time"] >= 5


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP])
def test_rerun_after_the_sweep_was_killed_follows_its_orphaned_trials(make_spec, sig):
    """SIGKILL (or SIGHUP: detach) leaves local trials running; the next run follows them
    instead of starting duplicates."""
    spec_path = make_spec()
    env = dict(os.environ, FAKE_TRAIN_SLEEP="3")
    proc = subprocess.Popen(
        [sys.executable, "-m", "detlab.sweep", str(spec_path), "--parallel", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while len(make_spec.read_calls()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(make_spec.read_calls()) == 2
        proc.send_signal(sig)
        assert proc.wait(timeout=20) == (-sig if sig == signal.SIGKILL else 128 + sig)
        orphans = make_spec.read_calls()
        assert all(_alive(c["pid"]) for c in orphans)

        outcome = run_sweep(load_spec(spec_path), _local(2), out=lambda s: None)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert outcome.counts == {"finished": 4}
    calls = make_spec.read_calls()
    assert len(calls) == 4  # the two orphans were followed, not started again
    dirs = [os.path.basename(c["output_dir"]) for c in calls]
    assert len(set(dirs)) == 4
    state = SweepState.load(str(make_spec.root))
    for c in orphans:
        rec = state.trials[os.path.basename(c["output_dir"])]
        assert rec["attempts"] == 1 and rec["wall_time"] >= 2.5
