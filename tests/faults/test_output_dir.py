"""Who owns OUTPUT_DIR: two concurrent runs, a SIGKILLed run (stale lock, ``watch.py``, resume
fallbacks), a save killed midway, a fresh start in a used folder, file modes under the umask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from _run import (
    ROOT,
    finish,
    losses,
    one_sentence,
    reached,
    rows,
    run,
    start,
    tool,
    wait_for,
)

pytestmark = pytest.mark.faults


def test_second_run_in_the_same_folder_is_refused_naming_the_first(reference, tmp_path):
    _, cfg, ref_losses = reference
    out = tmp_path / "shared"
    first = start(cfg, out, "SOLVER.MAX_ITER", "5000")  # runs until stopped below
    wait_for(reached(out, 3), proc=first, what="iteration 3 of the first run")
    second = run(cfg, out, "SEED", "5", "SOLVER.MAX_ITER", "12")
    assert first.poll() is None, "the first run must still be running"
    assert second.returncode == 2
    line = one_sentence(second.stderr)
    assert f"OUTPUT_DIR {out} is in use by another run (pid {first.pid} on host" in line, line
    first.send_signal(signal.SIGTERM)
    res = finish(first)
    assert res.returncode == 75, res.stderr[-3000:]
    # the first run's files are its own: its config, one row per iteration, its losses
    assert "SEED: 0" in (out / "config.yaml").read_text()
    assert "MAX_ITER: 5000" in (out / "config.yaml").read_text()
    got = losses(out)
    iters = [r["iteration"] for r in rows(out) if "total_loss" in r]
    assert iters == list(range(len(iters))) and len(iters) > 3
    assert {i: v for i, v in got.items() if i < 30} == {
        i: v for i, v in ref_losses.items() if i < len(iters)
    }
    assert not (out / "run.lock").exists(), "a stopped run releases its folder"


def test_watch_says_a_killed_run_died(killed_run):
    res = tool("watch.py", str(killed_run))
    assert res.returncode == 0, res.stderr
    assert "status: DIED" in res.stdout and "model_0000019.pth" in res.stdout, res.stdout
    res = tool("watch.py", str(killed_run), "--follow", "--interval", "0.1")
    assert res.returncode == 1 and "DIED" in res.stdout


def test_stale_lock_of_a_killed_run_is_taken_over_and_resume_matches(
    killed_run, reference, copy_of
):
    _, cfg, ref_losses = reference
    out = copy_of(killed_run)
    res = run(cfg, out, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Took over the lock of" in res.stdout and "no longer running" in res.stdout
    assert losses(out) == ref_losses


def test_resume_with_last_checkpoint_naming_a_missing_file_uses_newest_valid(
    killed_run, reference, copy_of
):
    _, cfg, ref_losses = reference
    out = copy_of(killed_run)
    assert (out / "last_checkpoint").read_text().strip() == "model_0000019.pth"
    (out / "model_0000019.pth").unlink()
    res = run(cfg, out, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Resuming from model_0000009.pth, the newest readable checkpoint" in res.stdout
    assert "continuing at iteration 10" in res.stdout
    assert losses(out) == ref_losses


def test_temp_file_of_a_save_killed_midway_is_removed_at_the_next_start(
    killed_run, reference, copy_of
):
    """SIGKILL to a process in the middle of an atomic checkpoint write: the checkpoint it
    replaces is intact, and the next run in the folder removes the temporary file."""
    _, cfg, ref_losses = reference
    out = copy_of(killed_run)
    target = out / "model_0000019.pth"
    before = target.read_bytes()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from detlab.utils.file_io import atomic_open
                with atomic_open({str(target)!r}, "wb") as f:
                    f.write(b"half a checkpoint")
                    f.flush()
                    print("writing", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert writer.stdout.readline().strip() == "writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    temps = [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].startswith(".model_0000019.pth.")
    assert target.read_bytes() == before
    res = run(cfg, out, "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"Removed 1 temporary file(s) of an interrupted save: {temps[0]}" in res.stdout
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
    assert losses(out) == ref_losses


def test_fresh_start_in_a_used_folder_moves_the_earlier_run_aside(reference, copy_of):
    ref_out, cfg, ref_losses = reference
    out = copy_of(ref_out)
    res = run(cfg, out, "SOLVER.MAX_ITER", "4", "SOLVER.CHECKPOINT_PERIOD", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "held an earlier run" in res.stdout
    assert sorted(losses(out)) == [0, 1, 2, 3]  # not appended to the earlier rows
    assert (out / "last_checkpoint").read_text().strip() == "model_0000003.pth"
    (previous,) = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert losses(previous) == ref_losses
    assert (previous / "model_0000029.pth").is_file()
    assert json.loads((previous / "final_metrics.json").read_text())["iteration"] == 29


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_output_files_follow_the_umask(reference, tmp_path, umask, mode):
    _, cfg, _ = reference
    out = tmp_path / "run"
    res = run(cfg, out, "SOLVER.MAX_ITER", "3", "SOLVER.CHECKPOINT_PERIOD", "2", umask=umask)
    assert res.returncode == 0, res.stderr[-3000:]
    names = ["config.yaml", "env.txt", "log.txt", "metrics.jsonl", "last_checkpoint"]
    names += ["model_0000001.pth", "model_final.pth", "final_metrics.json"]
    for name in names:
        assert oct((out / name).stat().st_mode & 0o777) == oct(mode), name
