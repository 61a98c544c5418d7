"""Bad input to real tool processes: config values that used to pass the check and crash
later, options after the overrides, a checkpoint holding pickled code, and a leaderboard
over an unfinished run."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from _run import ROOT, losses, one_sentence, run, tool

pytestmark = pytest.mark.faults

QUICKSTART = str(ROOT / "configs" / "quickstart" / "sar_ships_cpu.yaml")

BAD_VALUES = [
    (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH is 0; it must be an integer >= 1"),
    (["SOLVER.STEPS", "abc"], "SOLVER.STEPS (from the command line) expects a list of int"),
    (["SOLVER.STEPS", "(300, 100)"], "SOLVER.STEPS is [300, 100]; it must be strictly ascending"),
    (["SOLVER.MAX_ITER", "-5"], "SOLVER.MAX_ITER is -5; it must be an integer >= 0"),
    (["SOLVER.BASE_LR", "-0.1"], "SOLVER.BASE_LR is -0.1; it must be a number >= 0"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS is -1"),
    (["SOLVER.NAN_GUARD.INJECT.ITERS", "x"], "SOLVER.NAN_GUARD.INJECT.ITERS is ['x']"),
]


def test_config_values_that_would_crash_later_fail_at_load_in_one_sentence(tmp_path):
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    cases = [(opts + ["OUTPUT_DIR", str(tmp_path / "out")], want) for opts, want in BAD_VALUES]
    cases.append((["OUTPUT_DIR", str(a_file)], f"OUTPUT_DIR {a_file} is a file, not a folder"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [  # real tool processes, started together to save time
        subprocess.Popen(
            [sys.executable, "tools/train_net.py", "--config-file", QUICKSTART, *opts],
            cwd=str(ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for opts, _ in cases
    ]
    for proc, (opts, want) in zip(procs, cases, strict=True):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 2, (opts, out[-1000:], err[-2000:])
        assert want in one_sentence(err), (opts, err)
    assert not (tmp_path / "out").exists(), "nothing may be written for a bad config"


def test_options_after_the_overrides(reference, tmp_path):
    _, cfg, _ = reference
    out = tmp_path / "run"
    res = run(cfg, out, "SOLVER.MAX_ITER", "3", "--num-gpus", "1", "SEED=0", "--debug")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(losses(out)) == [0, 1, 2]
    res = run(cfg, out, "SOLVER.MAX_ITER", "3", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "already finished (iteration 3 of 3)" in res.stdout
    res = tool("eval.py", "--compare", str(reference[0]), "--out", str(tmp_path / "board"))
    assert res.returncode == 0, res.stderr
    missing = tmp_path / "missing.pth"
    res = tool("eval.py", "--config-file", QUICKSTART, "MODEL.WEIGHTS", str(missing), "--out", "x")
    assert res.returncode == 2  # parsed; then the weights file is missing
    assert f"MODEL.WEIGHTS file {missing} does not exist" in one_sentence(res.stderr)


def test_checkpoint_with_pickled_code_is_refused_without_unsafe_advice(reference, tmp_path):
    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(2)}, "extra": Payload()}, evil)
    _, cfg, _ = reference
    res = run(cfg, tmp_path / "run", "MODEL.WEIGHTS", str(evil))
    assert res.returncode == 2
    line = one_sentence(res.stderr)
    assert "holds pickled Python objects (posix.system)" in line, line
    assert "weights_only" not in res.stderr and not (tmp_path / "pwned").exists()
    res = tool("eval.py", "--config-file", QUICKSTART, "MODEL.WEIGHTS", str(evil))
    assert res.returncode == 2 and "weights_only" not in res.stderr
    assert "pickled Python objects" in one_sentence(res.stderr)


def test_compare_includes_an_unfinished_run(reference, killed_run, tmp_path):
    res = tool("eval.py", "--compare", str(reference[0]), f"killed={killed_run}")
    assert res.returncode == 0, res.stderr
    killed = next(line for line in res.stdout.splitlines() if "| killed |" in line)
    assert "unfinished (last evaluation at iteration 19)" in killed
    board = tmp_path / "board"
    empty = tmp_path / "started"
    empty.mkdir()
    (empty / "metrics.jsonl").write_text("")
    res = tool("eval.py", "--compare", str(reference[0]), str(empty), "--out", str(board))
    assert res.returncode == 0, res.stderr
    assert "unfinished (no evaluation yet)" in (board / "leaderboard.md").read_text()
