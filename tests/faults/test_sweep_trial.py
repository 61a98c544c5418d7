"""A sweep trial killed like the OOM killer does it (SIGKILL) continues from its checkpoint
when the sweep retries it, instead of starting over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import yaml
from _run import ROOT, SCRIPT, children, env_for, losses, reached, wait_for

pytestmark = pytest.mark.faults


def test_killed_sweep_trial_resumes_from_its_checkpoint(reference, tmp_path):
    _, cfg, ref_losses = reference
    spec = {
        "base_config": cfg,
        "parameters": {"SOLVER.BASE_LR": [0.1]},  # the reference's value
        "metric": "bbox/AP",
        "mode": "max",
        "output_root": str(tmp_path / "sweep"),
        "train_script": SCRIPT,
        "python": sys.executable,
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, "-m", "detlab.sweep", str(spec_path)]
    env = env_for(None, "toy")
    sweep = subprocess.Popen(
        cmd, cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(lambda: len(list((tmp_path / "sweep").glob("*/metrics.jsonl"))) == 1, 120)
        (trial_dir,) = [p.parent for p in (tmp_path / "sweep").glob("*/metrics.jsonl")]
        wait_for(reached(trial_dir, 12), what="iteration 12 of the trial")
        (trial_pid,) = children(sweep.pid)
        subprocess.run(["kill", "-KILL", str(trial_pid)], check=True)
        first, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    state = json.loads((tmp_path / "sweep" / "sweep_state.json").read_text())
    (record,) = state["trials"].values()
    assert record["status"] == "failed" and record["returncode"] == -signal.SIGKILL, first

    again = subprocess.run(
        [*cmd, "--retry-failed"], cwd=str(ROOT), env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming" in again.stdout, again.stdout
    log = (trial_dir / "run.log").read_text()
    assert "continuing at iteration 10" in log
    assert losses(trial_dir) == ref_losses
    state = json.loads((tmp_path / "sweep" / "sweep_state.json").read_text())
    assert next(iter(state["trials"].values()))["status"] == "finished"
