"""End-to-end sweeps with the stand-in trainer: grid, failures, re-runs, dry run, bad keys."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from detlab.sweep import LocalLauncher, load_spec, run_sweep
from detlab.sweep.cli import main

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_train_net.py")


def _expected(lr: float, clip: float) -> dict:
    return {"AP": 100 * lr + clip, "APs": 10 * clip - 1000 * lr}


def _csv(root) -> list[dict]:
    with open(os.path.join(root, "leaderboard.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_grid_2x2_completes_with_sorted_leaderboard(make_spec, capsys):
    spec_path = make_spec()
    assert main([str(spec_path), "--parallel", "2"]) == 0
    out = capsys.readouterr().out

    rows = _csv(make_spec.root)
    assert len(rows) == 4
    assert {r["status"] for r in rows} == {"finished"}
    # Independent reference: the stand-in's formula over the grid, sorted by APs (max first).
    grid = [(lr, clip) for lr in (0.01, 0.02) for clip in (0.5, 1.0)]
    want = sorted(grid, key=lambda p: _expected(*p)["APs"], reverse=True)
    got = [(float(r["SOLVER.BASE_LR"]), float(r["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"])) for r in rows]
    assert got == want
    for r, (lr, clip) in zip(rows, want, strict=True):
        assert float(r["APs"]) == pytest.approx(_expected(lr, clip)["APs"], abs=1e-4)
        assert float(r["AP"]) == pytest.approx(_expected(lr, clip)["AP"], abs=1e-4)
        assert r["best_iteration"] == "10"
        assert float(r["wall_time"]) >= 0
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4]

    md = (make_spec.root / "leaderboard.md").read_text()
    assert md.index(rows[0]["name"]) < md.index(rows[-1]["name"])
    assert "| rank | name | BASE_LR | CLIP_VALUE | status | AP |" in md
    assert "- `CLIP_VALUE` = `SOLVER.CLIP_GRADIENTS.CLIP_VALUE`" in md
    best_cfg = make_spec.root / rows[0]["name"] / "config.yaml"
    assert f"config: {best_cfg}" in out
    # Each trial ran with its own OUTPUT_DIR, log and the fixed override.
    for r in rows:
        trial_dir = make_spec.root / r["name"]
        assert (trial_dir / "run.log").read_text().count("training in") == 1
        cfg_text = (trial_dir / "config.yaml").read_text()
        assert f"OUTPUT_DIR: {trial_dir}" in cfg_text
    state = json.loads((make_spec.root / "sweep_state.json").read_text())
    assert {t["status"] for t in state["trials"].values()} == {"finished"}


def test_failing_trial_is_reported_and_others_go_on(make_spec, capsys):
    spec_path = make_spec(
        parameters={
            "SOLVER.BASE_LR": [0.01, 0.9],  # 0.9 makes the stand-in fail
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": [0.5, 1.0],
        }
    )
    assert main([str(spec_path), "--parallel", "2"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAILED") == 2
    assert "FloatingPointError: loss became NaN" in out

    rows = _csv(make_spec.root)
    assert [r["status"] for r in rows] == ["finished", "finished", "failed", "failed"]
    assert all(r["APs"] == "" for r in rows[2:])
    state = json.loads((make_spec.root / "sweep_state.json").read_text())
    failed = [t for t in state["trials"].values() if t["status"] == "failed"]
    assert len(failed) == 2
    for t in failed:
        assert t["returncode"] == 1
        assert "FloatingPointError" in t["log_tail"]
    assert "Failed trials" in (make_spec.root / "leaderboard.md").read_text()


def test_rerun_skips_finished_and_retries_failed_on_request(make_spec, capsys):
    spec_path = make_spec(
        parameters={
            "SOLVER.BASE_LR": [0.01, 0.9],
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": [0.5, 1.0],
        }
    )
    main([str(spec_path), "--parallel", "2"])
    assert len(make_spec.read_calls()) == 4

    capsys.readouterr()
    assert main([str(spec_path), "--status"]) == 0  # shows the table, runs nothing
    table = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ")]
    assert len(table) == 5 and len(make_spec.read_calls()) == 4
    assert [ln.split(" | ")[4] for ln in table[1:]] == ["finished"] * 2 + ["failed"] * 2

    assert main([str(spec_path)]) == 1  # nothing new runs; the failed trials stay failed
    assert len(make_spec.read_calls()) == 4
    assert "Skipping 4" in capsys.readouterr().out

    assert main([str(spec_path), "--retry-failed"]) == 1  # they fail again, but did run
    calls = make_spec.read_calls()
    assert len(calls) == 6
    assert {os.path.basename(c["output_dir"]) for c in calls[4:]} == {
        "lr0.9_clip0.5",
        "lr0.9_clip1",
    }
    state = json.loads((make_spec.root / "sweep_state.json").read_text())
    assert state["trials"]["lr0.9_clip1"]["attempts"] == 2
    assert state["trials"]["lr0.01_clip1"]["attempts"] == 1


def test_dry_run_prints_commands_without_running(make_spec, capsys):
    spec_path = make_spec()
    assert main([str(spec_path), "--dry-run", "--gpus", "0,1"]) == 0
    out = capsys.readouterr().out
    assert not make_spec.calls.exists()
    assert not (make_spec.root / "sweep_state.json").exists()
    commands = [line for line in out.splitlines() if "--config-file" in line]
    assert len(commands) == 4
    assert [c.split()[0] for c in commands] == [
        "CUDA_VISIBLE_DEVICES=0",
        "CUDA_VISIBLE_DEVICES=1",
    ] * 2
    for c in commands:
        assert "SOLVER.BASE_LR" in c and "SOLVER.CLIP_GRADIENTS.CLIP_VALUE" in c
        assert "SOLVER.CLIP_GRADIENTS.ENABLED True" in c
        assert f"OUTPUT_DIR {make_spec.root}" in c


def test_unknown_config_key_fails_before_any_trial(make_spec, capsys):
    spec_path = make_spec(
        parameters={
            "SOLVER.BASE_LR": [0.01, 0.02],
            "SOLVER.CLIP_GRADIENTS.CLIP_VALUES": [0.5, 1.0],
        }
    )
    assert main([str(spec_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "SOLVER.CLIP_GRADIENTS.CLIP_VALUES" in err
    assert "did you mean SOLVER.CLIP_GRADIENTS.CLIP_VALUE" in err
    assert not make_spec.calls.exists()
    assert not make_spec.root.exists()


def test_bad_value_type_in_fixed_fails_before_any_trial(make_spec, capsys):
    spec_path = make_spec(fixed={"SOLVER": {"MAX_ITER": "ten"}})
    assert main([str(spec_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "SOLVER.MAX_ITER" in err and "expects int" in err
    assert not make_spec.calls.exists()


def test_gpu_pinning_one_gpu_per_trial_or_cpu(make_spec):
    spec = load_spec(make_spec())
    run_sweep(spec, LocalLauncher(gpus=["3", "5"], parallel=2), out=lambda s: None)
    cuda = [c["cuda"] for c in make_spec.read_calls()]
    assert len(cuda) == 4 and set(cuda) == {"3", "5"}  # both GPUs used, one index each
    spec = load_spec(make_spec(), output_root=str(make_spec.root) + "_cpu")
    make_spec.calls.unlink()
    run_sweep(spec, LocalLauncher(), out=lambda s: None)
    assert [c["cuda"] for c in make_spec.read_calls()] == [""] * 4


def test_gpu_groups_for_multi_gpu_trials(make_spec):
    spec_path = make_spec()
    assert main([str(spec_path), "--gpus", "0,1,2,3,4", "--gpus-per-trial", "2"]) == 0
    calls = make_spec.read_calls()
    assert len(calls) == 4
    assert {c["cuda"] for c in calls} == {"0,1", "2,3"}  # GPU 4 is left over
    assert {c["num_gpus"] for c in calls} == {2}


def test_trial_environment_from_spec_and_cpu_thread_share(make_spec, monkeypatch, capsys):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    spec_path = make_spec(env={"SWEEP_TEST_VAR": "on"})
    assert main([str(spec_path), "--parallel", "4", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("SWEEP_TEST_VAR=on OMP_NUM_THREADS=2") == 4
    assert main([str(spec_path), "--parallel", "4"]) == 0
    calls = make_spec.read_calls()
    assert [(c["extra"], c["omp"]) for c in calls] == [("on", "2")] * 4
    # GPU trials and an explicit thread count are left alone.
    spec = load_spec(make_spec(env={"OMP_NUM_THREADS": "3"}), output_root=str(make_spec.root) + "2")
    run_sweep(spec, LocalLauncher(parallel=2, env=spec.env), out=lambda s: None)
    assert {c["omp"] for c in make_spec.read_calls()[4:]} == {"3"}
    assert "OMP_NUM_THREADS" not in LocalLauncher(gpus=["0", "1"], parallel=2).env


def test_sweep_sh_wrapper_runs_module(make_spec):
    spec_path = make_spec()
    script = os.path.join(os.path.dirname(__file__), "..", "..", "tools", "sweep.sh")
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", script, str(spec_path), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("--config-file") == 4


def test_changed_fixed_overrides_rerun_finished_trials(make_spec, capsys):
    main([str(make_spec(parameters={"SOLVER.BASE_LR": [0.01, 0.02]}, name_template=None))])
    assert len(make_spec.read_calls()) == 2
    main([str(make_spec(parameters={"SOLVER.BASE_LR": [0.01, 0.02]}, name_template=None))])
    assert len(make_spec.read_calls()) == 2  # same spec: skipped
    spec = make_spec(
        parameters={"SOLVER.BASE_LR": [0.01, 0.02]},
        name_template=None,
        fixed={"SOLVER.CLIP_GRADIENTS.CLIP_VALUE": 2.0},
    )
    assert main([str(spec)]) == 0
    assert len(make_spec.read_calls()) == 4
    assert "config changed since the last run" in capsys.readouterr().out
    rows = _csv(make_spec.root)
    assert sorted(float(r["AP"]) for r in rows) == pytest.approx([3.0, 4.0])  # 100*lr + 2
    assert (make_spec.root / rows[0]["name"] / "final_metrics.previous.json").exists()


def test_random_search_runs_and_csv_keeps_exact_values(make_spec):
    spec = load_spec(
        make_spec(
            method="random",
            num_trials=3,
            seed=3,
            name_template="r{index}",
            parameters={
                "SOLVER.BASE_LR": {"loguniform": [1e-4, 1e-2]},
                "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": {"choice": [0.5, 1.0]},
            },
        )
    )
    outcome = run_sweep(spec, LocalLauncher(parallel=2), out=lambda s: None)
    assert outcome.counts == {"finished": 3}
    from detlab.sweep import expand_trials

    want = {t.name: t.params for t in expand_trials(spec)}
    for r in _csv(make_spec.root):
        assert float(r["SOLVER.BASE_LR"]) == want[r["name"]]["SOLVER.BASE_LR"]  # bit-exact
        lr, clip = (
            want[r["name"]]["SOLVER.BASE_LR"],
            want[r["name"]]["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"],
        )
        assert float(r["APs"]) == pytest.approx(_expected(lr, clip)["APs"], abs=1e-4)


def test_command_line_overrides_join_the_fixed_ones(make_spec, capsys):
    spec_path = make_spec(fixed={"SOLVER.CLIP_GRADIENTS.ENABLED": True, "SOLVER.MAX_ITER": 20})
    argv = [str(spec_path), "SOLVER.MAX_ITER", "4", "SEED=-1", "--dry-run", "--gpus", "0"]
    assert main(argv) == 0
    commands = [ln for ln in capsys.readouterr().out.splitlines() if "--config-file" in ln]
    assert len(commands) == 4
    for c in commands:
        assert "SOLVER.MAX_ITER 4 " in c and "SOLVER.MAX_ITER 20" not in c and "SEED -1" in c

    assert main([str(spec_path), "SOLVER.BASE_LR", "0.5"]) == 2
    assert "SOLVER.BASE_LR is a parameter" in capsys.readouterr().err
    assert main([str(spec_path), "SOLVER.MAX_ITR", "4"]) == 2
    err = capsys.readouterr().err
    assert "SOLVER.MAX_ITR" in err and "did you mean SOLVER.MAX_ITER" in err
    assert not make_spec.calls.exists()

    assert main([str(spec_path), "SOLVER.MAX_ITER", "4"]) == 0
    rows = _csv(make_spec.root)
    assert {r["best_iteration"] for r in rows} == {"2"}  # the stand-in reports MAX_ITER // 2


def test_executable_train_script_runs_directly(make_spec, tmp_path):
    wrapper = tmp_path / "train.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    wrapper.chmod(0o755)
    spec = load_spec(make_spec(train_script=str(wrapper)))
    from detlab.sweep import plan_sweep

    assert plan_sweep(spec)[0].cmd[0] == str(wrapper)
    assert run_sweep(spec, LocalLauncher(parallel=2), out=lambda s: None).counts == {"finished": 4}
