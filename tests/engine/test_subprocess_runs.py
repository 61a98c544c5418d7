"""End-to-end runs in subprocesses: 2-process DDP against 1 process, SIGKILL then --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from _kill import losses, sigkill_after

from detlab.engine.checkpoint import load_checkpoint_file

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "_toy_train.py")


def _write_cfg(toy, path, **overrides) -> str:
    cfg = toy.toy_cfg(path.parent / "unused", **overrides)
    path.write_text(cfg.dump())
    return str(path)


def _run(cfg_file, out, *extra, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, SCRIPT, "--config-file", cfg_file, *extra, "OUTPUT_DIR", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(toy, tmp_path):
    cfg = _write_cfg(
        toy, tmp_path / "ddp.yaml", **{"SOLVER.MAX_ITER": 6, "SOLVER.CHECKPOINT_PERIOD": 3}
    )
    one = _run(cfg, tmp_path / "one", "--num-gpus", "1")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _run(cfg, tmp_path / "two", "--num-gpus", "2")
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_checkpoint_file(str(tmp_path / "one" / "model_final.pth"))["model"]
    b = load_checkpoint_file(str(tmp_path / "two" / "model_final.pth"))["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    la, lb = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert sorted(la) == sorted(lb) == list(range(6))
    for it in la:
        assert la[it] == pytest.approx(lb[it], rel=1e-4)
    # the same job started by torchrun (environment initialisation, no spawning)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [SCRIPT, "--config-file", cfg, "OUTPUT_DIR", str(tmp_path / "trun")]
    trun = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert trun.returncode == 0, trun.stderr[-2000:]
    c = load_checkpoint_file(str(tmp_path / "trun" / "model_final.pth"))["model"]
    for k in a:
        torch.testing.assert_close(b[k], c[k])
    fa = json.loads((tmp_path / "one" / "final_metrics.json").read_text())
    fb = json.loads((tmp_path / "two" / "final_metrics.json").read_text())
    assert fa["bbox"]["AP"] == pytest.approx(fb["bbox"]["AP"], rel=1e-3)


@pytest.mark.slow
def test_sigkilled_run_resumes_bit_exactly(toy, tmp_path):
    overrides = {
        "SOLVER.MAX_ITER": 40,
        "SOLVER.CHECKPOINT_PERIOD": 10,
        "TRAINER.EXTRA_HOOKS": ["SleepHook"],
    }
    cfg = _write_cfg(toy, tmp_path / "kill.yaml", **overrides)
    ref = _run(cfg, tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, SCRIPT, "--config-file", cfg, "OUTPUT_DIR", str(out)]
    assert sigkill_after(cmd, out, 24, env, wait=120) == -signal.SIGKILL
    assert (out / "last_checkpoint").read_text().strip() == "model_0000019.pth"
    assert not (out / "model_final.pth").exists()

    resumed = _run(cfg, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "continuing at iteration 20" in (out / "log.txt").read_text()
    assert losses(out) == losses(tmp_path / "ref")  # every iteration, bit for bit
    a = load_checkpoint_file(str(tmp_path / "ref" / "model_final.pth"))["model"]
    b = load_checkpoint_file(str(out / "model_final.pth"))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
