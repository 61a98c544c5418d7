"""tools/watch.py and the CI quick-start floor check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _tool(*args, timeout=60):
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def test_watch_summarises_a_run(run_toy, tmp_path):
    from detlab.monitor import format_status, summarize_run

    out = tmp_path / "w"
    run_toy(
        out,
        **{
            "SOLVER.MAX_ITER": 20,
            "SOLVER.NAN_GUARD.INJECT.ITERS": [5],
            "SOLVER.CLIP_GRADIENTS.ENABLED": True,
            "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "full_model",
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 0.01,
        },
    )
    s = summarize_run(str(out))
    assert s["iteration"] == 19 and s["max_iter"] == 20 and s["finished"]
    assert s["nan_skipped"] == 1 and s["rollbacks"] == 0
    assert s["clip_events"] == 19  # every finite step exceeds a norm of 0.01
    assert s["last_eval"]["iteration"] == 19 and "bbox/AP50" in s["last_eval"]
    text = format_status(s)
    assert "20/20" in text and "NaN skips: 1" in text and "clip events: 19" in text
    res = _tool("tools/watch.py", str(out))
    assert res.returncode == 0 and "last evaluation (iteration 19)" in res.stdout
    # a line cut by a crash does not break it
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"iteration": 20, "total_lo')
    assert summarize_run(str(out))["iteration"] == 19


def test_watch_on_a_wrong_directory_is_one_line(tmp_path):
    res = _tool("tools/watch.py", str(tmp_path))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "metrics.jsonl" in res.stderr


def test_quickstart_floor_check(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"bbox": {"AP50": 88.0, "AP": 50.0, "APs": 40.0}}))
    res = _tool(".ci/check_quickstart.py", str(good))
    assert res.returncode == 0 and "passed" in res.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"bbox": {"AP50": 60.0, "AP": 30.0}}))
    res = _tool(".ci/check_quickstart.py", str(bad))
    assert res.returncode == 1
    assert res.stdout.strip().count("\n") == 0 and "below the floor" in res.stdout


def test_train_net_user_errors_are_one_line(tmp_path):
    res = _tool("tools/train_net.py", "--config-file", str(tmp_path / "missing.yaml"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    cfg = os.path.join("configs", "quickstart", "sar_ships_cpu.yaml")
    res = _tool("tools/train_net.py", "--config-file", cfg, "SOLVER.MAX_ITERR", "3")
    assert res.returncode == 2 and "did you mean SOLVER.MAX_ITER?" in res.stderr
    assert res.stderr.count("\n") == 1


def test_eval_only_writes_final_metrics(run_toy, tmp_path):
    import _toy

    run_toy(tmp_path / "src", **{"SOLVER.MAX_ITER": 10})
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(_toy.toy_cfg(tmp_path / "x").dump())
    weights = str(tmp_path / "src" / "model_final.pth")
    out = tmp_path / "ev"
    script = os.path.join("tests", "engine", "_toy_train.py")
    res = _tool(
        script,
        "--config-file",
        str(cfg),
        "--eval-only",
        "MODEL.WEIGHTS",
        weights,
        "OUTPUT_DIR",
        str(out),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    ev = json.loads((out / "final_metrics.json").read_text())
    src = json.loads((tmp_path / "src" / "final_metrics.json").read_text())
    assert ev["bbox"] == src["bbox"]  # same weights, same evaluation
    res = _tool(script, "--config-file", str(cfg), "--eval-only", "OUTPUT_DIR", str(out))
    assert res.returncode == 2 and "MODEL.WEIGHTS" in res.stderr


def test_divergence_stops_train_net_with_one_line(toy, tmp_path):
    cfg = tmp_path / "div.yaml"
    overrides = {
        "SOLVER.MAX_ITER": 20,
        "SOLVER.NAN_GUARD.INJECT.ITERS": list(range(3, 20)),
        "SOLVER.NAN_GUARD.MAX_CONSECUTIVE": 2,
        "SOLVER.NAN_GUARD.MAX_ROLLBACKS": 1,
    }
    cfg.write_text(toy.toy_cfg(tmp_path / "x", **overrides).dump())
    script = os.path.join("tests", "engine", "_toy_train.py")
    res = _tool(script, "--config-file", str(cfg), "OUTPUT_DIR", str(tmp_path / "out"))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "Training diverged" in res.stderr
    assert "model_init.pth" in res.stderr


def test_watch_tells_running_died_stopped_and_finished(tmp_path):
    from detlab.monitor.status import format_status, summarize_run
    from detlab.utils.run_lock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"iteration": 4, "total_loss": 1.0}) + "\n")
    (run / "last_checkpoint").write_text("model_0000004.pth\n")
    assert summarize_run(str(run))["state"] == "stopped"
    lock = RunLock(str(run))
    lock.acquire()
    s = summarize_run(str(run))
    assert s["state"] == "running" and f"pid {os.getpid()}" in format_status(s)
    lock.release()
    owner = {"host": "node7", "pid": 12345, "started": "2026-01-01 00:00:00"}
    (run / "run.lock").write_text(json.dumps(owner))  # left behind by a killed run
    text = format_status(summarize_run(str(run)))
    assert "status: DIED" in text and "pid 12345 on host node7" in text
    assert "last checkpoint model_0000004.pth; continue with --resume" in text
    (run / "run.lock").unlink()
    (run / "final_metrics.json").write_text("{}")
    assert summarize_run(str(run))["state"] == "finished"
