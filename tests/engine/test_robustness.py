"""Run robustness in-process: the healthy-checkpoint rule, rotation that keeps the newest
healthy checkpoint, resume fallbacks, the output-folder lock, disk errors, preemption and the
AMP-off fallback. (Process-level versions of these faults: ``tests/faults``.)"""

from __future__ import annotations

import errno
import json
import math
import os
import signal

import pytest
import torch
from torch import nn

from detlab.engine.checkpoint import Checkpointer, load_checkpoint_file
from detlab.engine.nan_guard import NaNGuard
from detlab.engine.run_dir import check_output_dir, claim_output_dir, release_output_dir
from detlab.utils.errors import UserError
from detlab.utils.file_io import OutputWriteError, atomic_write_text, file_mode
from detlab.utils.run_lock import RunLock, RunLockedError, lock_state


# ---------------------------------------------------------------------- health rule
def _guard(**kw) -> NaNGuard:
    return NaNGuard(health_window=4, max_loss_ratio=10.0, **kw)


def test_health_needs_no_skips_and_losses_near_their_lowest_median():
    g = _guard()
    assert g.health()["healthy"]  # nothing seen yet: nothing against it
    for v in (2.0, 1.5, 1.0, 1.0):
        g.observe_loss(v)
    h = g.health()
    assert h["healthy"] and h["loss_reference"] == pytest.approx(1.25)
    g.observe_loss(float("nan"))  # a skipped step
    h = g.health()
    assert not h["healthy"] and "1 of the last 4 steps were skipped" in h["reason"]
    for v in (1.0, 1.0, 1.0, 1.0):
        g.observe_loss(v)
    assert g.health()["healthy"] and g.loss_reference == pytest.approx(1.0)
    g.observe_loss(30.0)  # the storm begins: last loss 30x the reference
    h = g.health()
    assert not h["healthy"] and "the last loss 30" in h["reason"]
    for v in (40.0, 50.0, 60.0):
        g.observe_loss(v)
    h = g.health()
    assert "the loss median 45" in h["reason"] and h["loss_median"] == pytest.approx(45.0)
    assert g.loss_reference == pytest.approx(1.0)  # the storm does not raise the reference


def test_health_window_survives_state_dict_round_trip_and_rollback_restore():
    g = _guard()
    for v in (3.0, 2.0, 1.0, float("inf")):
        g.observe_loss(v)
    state = json.loads(json.dumps(g.state_dict()))  # plain types only
    h = _guard()
    h.load_state_dict(state)
    assert list(h.losses) == [3.0, 2.0, 1.0, None] and h.health() == g.health()
    h.restore_health({"losses": [1.0, 1.0], "loss_reference": 0.9})
    assert list(h.losses) == [1.0, 1.0] and h.health()["healthy"]


# ---------------------------------------------------------------------- checkpoints
def _ck(tmp_path, max_keep=2) -> Checkpointer:
    torch.manual_seed(0)
    return Checkpointer(nn.Linear(3, 2), str(tmp_path), max_keep=max_keep)


def _health(ok: bool) -> dict:
    return {"healthy": ok, "reason": "test"}


def test_rotation_keeps_the_newest_healthy_checkpoint_until_a_newer_one(tmp_path):
    ck = _ck(tmp_path)
    ck.save("model_0000009", tag_last=True, iteration=9, health=_health(True))
    for it in (19, 29, 39):
        ck.save(f"model_{it:07d}", tag_last=True, iteration=it, health=_health(False))
    names = sorted(os.listdir(tmp_path))
    assert [n for n in names if n.startswith("model_")] == [
        "model_0000009.pth",
        "model_0000029.pth",
        "model_0000039.pth",
    ]
    assert ck.rollback_target() == str(tmp_path / "model_0000009.pth")
    ck.save("model_0000049", tag_last=True, iteration=49, health=_health(True))
    kept = sorted(n for n in os.listdir(tmp_path) if n.startswith("model_"))
    assert kept == ["model_0000039.pth", "model_0000049.pth"]  # 9 protected no longer
    # a fresh Checkpointer reads the health records from the files
    assert _ck(tmp_path).rollback_target() == str(tmp_path / "model_0000049.pth")


def test_rollback_target_never_a_finite_but_unhealthy_checkpoint(tmp_path):
    ck = _ck(tmp_path, max_keep=0)
    ck.save("model_0000009", iteration=9, health=_health(False))
    assert ck.rollback_target() is None  # and no model_init either
    ck.save("model_init", iteration=-1, health=_health(True))
    assert ck.rollback_target() == str(tmp_path / "model_init.pth")


def test_resume_falls_back_to_newest_readable_checkpoint(tmp_path, caplog):
    ck = _ck(tmp_path, max_keep=0)
    for it in (9, 19):
        ck.save(f"model_{it:07d}", tag_last=True, iteration=it)
    (tmp_path / "model_0000019.pth").write_bytes(b"truncated")
    assert ck.resume_checkpoint() == str(tmp_path / "model_0000009.pth")
    assert "newest readable checkpoint" in caplog.text
    (tmp_path / "last_checkpoint").write_text("model_0000077.pth\n")  # names a missing file
    assert ck.resume_checkpoint() == str(tmp_path / "model_0000009.pth")
    (tmp_path / "last_checkpoint").unlink()
    assert ck.resume_checkpoint() == str(tmp_path / "model_0000009.pth")


def test_disk_full_during_save_is_one_sentence_and_keeps_the_previous_file(tmp_path, monkeypatch):
    ck = _ck(tmp_path)
    ck.save("model_0000009", tag_last=True, iteration=9)
    good = (tmp_path / "model_0000009.pth").read_bytes()
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputWriteError) as err:
        ck.save("model_0000019", tag_last=True, iteration=19)
    monkeypatch.setattr(os, "fsync", real_fsync)
    msg = str(err.value)
    assert msg.startswith(f"Could not write {tmp_path / 'model_0000019.pth'}: No space left")
    assert "free there" in msg and "model_0000009.pth is intact" in msg and "\n" not in msg
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert (tmp_path / "model_0000009.pth").read_bytes() == good


def test_atomic_writes_get_the_umask_mode_not_0600(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        assert oct(os.stat(tmp_path / "a.txt").st_mode & 0o777) == oct(0o640)
        assert file_mode() == 0o640
    finally:
        os.umask(old)


# ---------------------------------------------------------------------- output folder
def _hold_lock_in_child(directory) -> tuple[int, int]:
    """Fork a process that takes the lock and waits; returns (pid, pipe to end it)."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(w)
            RunLock(str(directory)).acquire()
            os.write(ready_w, b"1")
            os.read(r, 1)
        finally:
            os._exit(0)
    os.close(r)
    assert os.read(ready_r, 1) == b"1"
    return pid, w


def test_lock_refuses_a_second_run_and_takes_over_a_dead_ones(tmp_path):
    pid, pipe = _hold_lock_in_child(tmp_path)
    assert lock_state(str(tmp_path)) == "running"
    with pytest.raises(RunLockedError, match=f"in use by another run \\(pid {pid} on host"):
        RunLock(str(tmp_path)).acquire(tries=2, wait_s=0.01)
    os.kill(pid, signal.SIGKILL)  # dies without releasing: the file stays, the lock goes
    os.waitpid(pid, 0)
    os.close(pipe)
    assert lock_state(str(tmp_path)) == "stale"
    lock = RunLock(str(tmp_path))
    note = lock.acquire()
    assert note and f"pid {pid}" in note and "no longer running" in note
    assert lock_state(str(tmp_path)) == "running"  # a lock held in this process
    lock.release()
    assert lock_state(str(tmp_path)) == "free" and not (tmp_path / "run.lock").exists()


def test_claim_moves_an_earlier_run_aside_only_for_a_fresh_start(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"iteration": 0}\n')
    (out / "model_0000009.pth").write_bytes(b"x")
    (out / ".model_0000019.pth.abcd1234.tmp").write_bytes(b"half")
    (out / "notes.txt").write_text("mine")
    notes = claim_output_dir(str(out), fresh=False)
    release_output_dir(str(out))
    assert any("temporary file" in n for n in notes)
    assert (out / "metrics.jsonl").exists()  # resuming: nothing moved
    notes = claim_output_dir(str(out), fresh=True)
    release_output_dir(str(out))
    (moved,) = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert sorted(p.name for p in moved.iterdir()) == ["metrics.jsonl", "model_0000009.pth"]
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: left alone
    assert any(str(moved) in n for n in notes)


def test_output_dir_that_is_a_file_is_one_sentence(tmp_path):
    f = tmp_path / "f"
    f.write_text("")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_output_dir(str(f))


# ---------------------------------------------------------------------- trainer
def test_preemption_signal_saves_after_the_iteration_and_stops(toy, tmp_path):
    from detlab.engine import HookBase, default_setup
    from detlab.engine.preemption import TrainingPreempted

    class SignalAt(HookBase):
        def after_step(self):
            if self.trainer.iter == 6:
                os.kill(os.getpid(), signal.SIGTERM)

    cfg = default_setup(toy.toy_cfg(tmp_path / "pre", **{"SOLVER.MAX_ITER": 20}))
    trainer = toy.ToyTrainer(cfg)
    trainer.register_hooks([SignalAt()])
    trainer.resume_or_load(resume=False)
    with pytest.raises(TrainingPreempted, match="Stopped by SIGTERM after iteration 6"):
        trainer.train()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    data = load_checkpoint_file(str(tmp_path / "pre" / "model_0000006.pth"))
    assert data["iteration"] == 6 and data["health"]["healthy"]
    assert (tmp_path / "pre" / "last_checkpoint").read_text().strip() == "model_0000006.pth"
    assert not (tmp_path / "pre" / "run.lock").exists()


def test_amp_is_switched_off_after_a_rollback_when_asked(run_toy, tmp_path):
    overrides = {
        "SOLVER.MAX_ITER": 20,
        "SOLVER.AMP.ENABLED": True,
        "SOLVER.NAN_GUARD.AMP_OFF_AFTER_ROLLBACK": True,
        "SOLVER.NAN_GUARD.MAX_CONSECUTIVE": 2,
        "SOLVER.NAN_GUARD.INJECT.ITERS": [12, 13],
    }
    trainer, _ = run_toy(tmp_path / "amp", **overrides)
    assert trainer.nan_guard.rollbacks == 1 and trainer.train_step.amp_dtype is None
    assert "Mixed precision switched off" in (tmp_path / "amp" / "log.txt").read_text()
    state = load_checkpoint_file(str(tmp_path / "amp" / "model_0000019.pth"))["nan_guard"]
    assert state["amp_off"] is True
    resumed, _ = run_toy(tmp_path / "amp", resume=True, **{**overrides, "SOLVER.MAX_ITER": 22})
    assert resumed.train_step.amp_dtype is None  # stays off after a resume
    assert math.isfinite(resumed.nan_guard.health()["loss_median"])


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("reader", ["checkpoint", "weights"])
def test_pickled_code_is_refused_without_advice_to_disable_weights_only(tmp_path, reader):
    from detlab.modeling.weight_files import read_weights_file
    from detlab.utils.file_io import read_torch_file

    torch.save({"model": {"w": torch.zeros(1)}, "x": _Payload()}, tmp_path / "code.pth")
    read = read_weights_file if reader == "weights" else read_torch_file
    with pytest.raises(UserError) as err:
        read(str(tmp_path / "code.pth"))
    msg = str(err.value)
    assert "holds pickled Python objects (posix.getcwd)" in msg and "weights_only" not in msg
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"cannot be read \(UnpicklingError\); it is truncated"):
        read_torch_file(str(tmp_path / "text.pth"))
