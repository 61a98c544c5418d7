"""A real 3 MB tmpfs that fills up mid-run, and a read-only mount as OUTPUT_DIR."""

from __future__ import annotations

import os
import shutil

import pytest
from _run import losses, one_sentence, run, write_cfg

from detlab.engine.checkpoint import all_finite, load_checkpoint_file

pytestmark = pytest.mark.faults


def test_full_disk_stops_in_one_sentence_and_resume_matches(reference, mount_tmpfs, tmp_path):
    _, _, ref_losses = reference
    disk = mount_tmpfs("disk", size="3m")
    # keep every checkpoint, and leave room for only a few of them
    cfg = write_cfg(tmp_path / "full.yaml", **{"SOLVER.CHECKPOINT_MAX_KEEP": 0})
    ballast = disk / "ballast.bin"
    room = 420 * 1024
    with open(ballast, "wb") as f:
        f.write(b"\0" * max(0, shutil.disk_usage(disk).free - room))
    out = disk / "run"
    res = run(cfg, out, "SOLVER.CHECKPOINT_PERIOD", "4")
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    line = one_sentence(res.stderr)
    assert "No space left on device" in line and "free there" in line, line
    assert str(out) in line
    tmp_left = [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert not tmp_left, tmp_left
    # nothing lost: the checkpoint last_checkpoint names is complete and finite
    name = (out / "last_checkpoint").read_text().strip()
    saved = load_checkpoint_file(str(out / name))
    assert all_finite(saved["model"]) and saved["iteration"] >= 3
    if ".pth" in line:
        assert f"{name} is intact" in line

    ballast.unlink()  # space freed: continue
    res = run(cfg, out, "--resume", "SOLVER.CHECKPOINT_PERIOD", "4")
    assert res.returncode == 0, res.stderr[-3000:]
    got = losses(out)
    assert got == ref_losses


def test_read_only_output_dir_is_one_sentence(mount_tmpfs, tmp_path):
    ro = mount_tmpfs("ro", size="1m", read_only=True)
    cfg = write_cfg(tmp_path / "ro.yaml")
    res = run(cfg, ro / "run")
    assert res.returncode == 2
    line = one_sentence(res.stderr)
    assert f"OUTPUT_DIR {ro / 'run'} is not writable" in line and "Read-only" in line, line
