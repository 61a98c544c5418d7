"""Sweeps as Optuna studies, end to end with the stand-in trainer: workers, pruning, resumes.

Each storage kind that works without a server (SQLite, Optuna's journal file) runs the
multi-worker tests; the pruner decides inside the trial process from the same storage.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna")

from detlab.sweep.cli import main  # noqa: E402
from detlab.sweep.spec import load_spec  # noqa: E402
from detlab.sweep.study import resolve_storage  # noqa: E402
from detlab.sweep.study_run import StudyRun  # noqa: E402

# SQLite in the default suite; the journal file (same tests) with the slow ones.
STORAGES = ["sqlite", pytest.param("journal", marks=pytest.mark.slow)]
LR, CLIP = "SOLVER.BASE_LR", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"
FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_train_net.py")


def _csv(root) -> list[dict]:
    with open(os.path.join(root, "leaderboard.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _study(root, storage: str = "sqlite"):
    import optuna

    ref = resolve_storage(storage, str(root))
    from detlab.sweep.study import open_storage

    name = next(iter(optuna.get_all_study_names(open_storage(ref))))
    return optuna.load_study(study_name=name, storage=open_storage(ref))


def _by_dir(calls: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for c in calls:
        out.setdefault(os.path.basename(c["output_dir"]), []).append(c)
    return out


@pytest.mark.parametrize("storage", STORAGES)
def test_two_workers_share_one_study_and_never_run_a_trial_twice(make_spec, monkeypatch, storage):
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0.5")
    spec = make_spec(
        parameters={LR: [0.01, 0.02, 0.03], CLIP: [0.5, 1.0]},
        study={"storage": storage},
    )
    assert main([str(spec), "--workers", "2", "--no-plots"]) == 0
    runs = _by_dir(make_spec.read_calls())
    assert len(runs) == 6 and all(len(v) == 1 for v in runs.values())  # each trial exactly once
    assert len({c[0]["ppid"] for c in runs.values()}) == 2  # and both workers took some
    rows = _csv(make_spec.root)
    assert {r["status"] for r in rows} == {"finished"}
    # The ranking follows the stand-in's formula APs = 10 * clip - 1000 * lr.
    want = sorted(
        ((lr, c) for lr in (0.01, 0.02, 0.03) for c in (0.5, 1.0)),
        key=lambda p: 1000 * p[0] - 10 * p[1],
    )
    got = [(float(r["SOLVER.BASE_LR"]), float(r["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"])) for r in rows]
    assert got == want
    study = _study(make_spec.root, storage)
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 6
    assert json.loads((make_spec.root / "study.json").read_text())["study_name"] == "spec"


@pytest.mark.parametrize("method", ["grid", "random"])
def test_a_study_enqueues_exactly_the_planned_trials(make_spec, method):
    from detlab.sweep import expand_trials
    from detlab.sweep.plan import plan_sweep
    from detlab.sweep.study import decode_params

    keys = {"method": "random", "num_trials": 5, "seed": 7, "name_template": "r{index}"}
    params = {
        LR: {"loguniform": [1e-3, 1e-1]},
        CLIP: [0.5, 1.0],
        "MODEL.FPN.IN_STAGES": [[2, 3, 4], [1, 2, 3]],
    }
    if method == "grid":
        keys = {"name_template": "t{index}"}
        params = {
            LR: [0.01, 0.02, 0.03],
            CLIP: [0.5, 1.0],
            "MODEL.FPN.IN_STAGES": [[2, 3, 4], [1, 2, 3]],
        }
    spec = load_spec(make_spec(parameters=params, **keys))
    run = StudyRun(spec, opts=[], storage=None, study_name=None, num_gpus=1, grace_s=5)
    for _ in range(2):  # preparing twice (a re-run, a second machine) adds nothing
        study = run.prepare(plan_sweep(run.spec), retry_failed=False)
    trials = sorted(study.trials, key=lambda t: t.number)
    want = expand_trials(spec)
    assert [t.user_attrs["name"] for t in trials] == [w.name for w in want]
    assert [t.user_attrs["index"] for t in trials] == [w.index for w in want]
    assert [decode_params(spec, t.params) for t in trials] == [w.params for w in want]  # exact


@pytest.mark.slow
def test_grid_and_random_specs_give_the_same_trials_as_without_a_study(make_spec, tmp_path):
    """A plain spec run by workers trains exactly the trials the single-driver sweep trains."""
    for method, params in (
        ("grid", {LR: [0.01, 0.02], CLIP: [0.5, 1.0]}),
        (
            "random",
            {LR: {"loguniform": [1e-3, 1e-1]}, CLIP: [0.5, 1.0]},
        ),
    ):
        extra = {"num_trials": 3, "seed": 5} if method == "random" else {}
        name_template = "r{index}" if method == "random" else "lr{BASE_LR}_clip{CLIP_VALUE}"
        results = {}
        for mode in ("driver", "study"):
            root = tmp_path / f"{method}-{mode}"
            spec = make_spec(
                f"{method}-{mode}.yaml",
                method=method,
                parameters=params,
                output_root=str(root),
                name_template=name_template,
                **extra,
            )
            argv = [str(spec)] + (["--workers", "1"] if mode == "study" else [])
            assert main(argv) == 0
            results[mode] = {
                r["name"]: (r["SOLVER.BASE_LR"], r["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"], r["APs"])
                for r in _csv(root)
            }
        assert results["study"] == results["driver"]  # same names, exact values, same metrics
        assert len(results["study"]) == (4 if method == "grid" else 3)


def test_pruner_stops_a_clearly_bad_trial_at_an_evaluation(make_spec):
    spec = make_spec(
        fixed={"SOLVER.CLIP_GRADIENTS.ENABLED": True, "TEST.EVAL_PERIOD": 5},
        study={"pruner": {"type": "median", "n_startup_trials": 1}},
    )
    assert main([str(spec), "--no-plots"]) == 0
    rows = {r["name"]: r for r in _csv(make_spec.root)}
    # Order: -5 (complete, first), 0 (complete, above the median), then -15 and -10, whose
    # value at the first evaluation (step 5: -3.75, -2.5) is below the median (-0.625).
    assert rows["lr0.01_clip0.5"]["status"] == rows["lr0.01_clip1"]["status"] == "finished"
    for name in ("lr0.02_clip0.5", "lr0.02_clip1"):
        assert rows[name]["status"] == "pruned" and rows[name]["iterations"] == "5"
        assert rows[name]["rank"] == ""
        trial_dir = make_spec.root / name
        assert (trial_dir / "last_checkpoint").read_text() == "model_0000004.pth"
        final = json.loads((trial_dir / "final_metrics.json").read_text())
        assert final["stop_reason"].startswith("pruned")
    study = _study(make_spec.root)
    pruned = [t for t in study.trials if t.state.name == "PRUNED"]
    assert len(pruned) == 2 and all(t.user_attrs["pruned_at"] == 5 for t in pruned)
    assert all(t.value == pytest.approx(t.intermediate_values[5]) for t in pruned)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(sorted(t.intermediate_values) == [5, 10, 15, 20] for t in complete)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    from detlab.sweep.study_trials import process_identity

    return process_identity(pid) is not None


@pytest.mark.parametrize("storage", STORAGES)
def test_a_sigkilled_workers_trial_is_resumed_by_another(make_spec, monkeypatch, storage):
    spec_path = make_spec(parameters={LR: [0.01], CLIP: [0.5, 1.0]}, study={"storage": storage})
    spec = load_spec(spec_path)
    run = StudyRun(spec, opts=[], storage=None, study_name=None, num_gpus=1, grace_s=5)
    from detlab.sweep.plan import plan_sweep
    from detlab.sweep.worker import hook_overrides

    run.prepare(plan_sweep(run.spec, extra=hook_overrides(run.spec)), retry_failed=False)
    cmd = [sys.executable, "-m", "detlab.sweep", str(spec_path), "--run-worker", "0"]
    env = {**os.environ, "FAKE_TRAIN_SLEEP": "60"}  # the first trial sleeps after its checkpoint
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for(lambda: len(make_spec.read_calls()) == 1)
        trainer = make_spec.read_calls()[0]["pid"]
        checkpoint = os.path.join(make_spec.read_calls()[0]["output_dir"], "last_checkpoint")
        _wait_for(lambda: os.path.exists(checkpoint))  # the trial has something to resume
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        _wait_for(lambda: not _alive(trainer), timeout=20)  # the trial died with its worker
    finally:
        if first.poll() is None:
            first.kill()
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0")
    assert main([str(spec_path), "--workers", "1"]) == 0
    runs = _by_dir(make_spec.read_calls())
    killed = os.path.basename(make_spec.read_calls()[0]["output_dir"])
    assert [c["resume"] for c in runs[killed]] == [False, True]  # resumed, not restarted
    assert all(len(v) == 1 for k, v in runs.items() if k != killed)
    rows = {r["name"]: r for r in _csv(make_spec.root)}
    assert {r["status"] for r in rows.values()} == {"finished"}
    study = _study(make_spec.root, storage)
    attempts = [t for t in study.trials if t.user_attrs.get("name") == killed]
    assert [t.state.name for t in attempts] == ["FAIL", "COMPLETE"]
    assert "is gone" in attempts[0].user_attrs["error"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "ending",
    [
        # the OOM killer's SIGKILL on the trial (not the worker)
        "os.kill(os.getpid(), signal.SIGKILL)",
        # train_net's preemption exit (SIGTERM/SIGUSR1 arrived, checkpoint saved)
        "sys.exit(75)",
    ],
)
def test_an_interrupted_trial_resumes_from_its_checkpoint(make_spec, tmp_path, ending):
    """A trial that died by a signal or was preempted, leaving a checkpoint, goes back to the
    study; the next attempt resumes from the checkpoint."""
    wrapper = tmp_path / "interrupted_once.py"
    marker = tmp_path / "interrupted-once"
    wrapper.write_text(
        "import os, runpy, signal, sys\n"
        f"marker = {str(marker)!r}\n"
        "out = sys.argv[sys.argv.index('OUTPUT_DIR') + 1]\n"
        "if not os.path.exists(marker):\n"
        "    open(marker, 'w').close()\n"
        "    os.makedirs(out, exist_ok=True)\n"
        "    open(os.path.join(out, 'last_checkpoint'), 'w').write('model_0000009.pth')\n"
        f"    {ending}\n"
        f"runpy.run_path({FAKE!r}, run_name='__main__')\n"
    )
    spec = make_spec(parameters={LR: [0.01], CLIP: [0.5]}, train_script=str(wrapper), study={})
    assert main([str(spec)]) == 0
    calls = make_spec.read_calls()
    assert [c["resume"] for c in calls] == [True]  # the interrupted attempt never reached it
    assert _csv(make_spec.root)[0]["status"] == "finished"
    states = [t.state.name for t in _study(make_spec.root).trials]
    assert states == ["FAIL", "COMPLETE"]


@pytest.mark.slow
def test_rerun_continues_the_study_and_a_bigger_budget_adds_trials(make_spec, capfd):
    params = {LR: {"loguniform": [1e-3, 1e-1]}, CLIP: [0.5, 1.0]}
    random = {"method": "random", "seed": 2, "name_template": "r{index}", "parameters": params}
    spec = make_spec(num_trials=2, study={}, **random)
    assert main([str(spec), "--no-plots"]) == 0
    assert main([str(spec), "--no-plots"]) == 0  # nothing left to do
    assert len(make_spec.read_calls()) == 2
    spec = make_spec(num_trials=3, study={}, **random)
    assert main([str(spec), "--no-plots"]) == 0
    assert [os.path.basename(c["output_dir"]) for c in make_spec.read_calls()] == ["r0", "r1", "r2"]
    # Another search space or other fixed settings would make another study: refused.
    for change in ({"parameters": {**params, CLIP: [0.5, 2.0]}}, {"fixed": {"SEED": 3}}):
        spec = make_spec(**{**random, "num_trials": 3, "study": {}, **change})
        capfd.readouterr()
        assert main([str(spec)]) == 2
        err = capfd.readouterr().err
        assert "was made with another" in err and err.count("\n") == 1


@pytest.mark.slow
def test_failed_trials_are_kept_and_retried_on_request(make_spec, capfd):
    spec = make_spec(
        parameters={LR: [0.01, 0.9], CLIP: [0.5]},
        study={},
    )
    assert main([str(spec)]) == 1
    out = capfd.readouterr().out
    assert "FAILED (exited with status 1)" in out and "FloatingPointError" in out
    assert main([str(spec)]) == 1
    assert len(make_spec.read_calls()) == 2  # not retried by default
    assert main([str(spec), "--retry-failed"]) == 1
    assert len(make_spec.read_calls()) == 3
    rows = {r["name"]: r["status"] for r in _csv(make_spec.root)}
    assert rows == {"lr0.01_clip0.5": "finished", "lr0.9_clip0.5": "failed"}


@pytest.mark.slow
def test_tpe_search_with_two_workers_runs_exactly_num_trials(make_spec):
    spec = make_spec(
        method="tpe",
        num_trials=5,
        seed=1,
        name_template="t{index:02d}",
        parameters={
            LR: {"loguniform": [1e-3, 1e-1]},
            CLIP: {"uniform": [0.1, 2.0]},
        },
    )
    assert main([str(spec), "--workers", "2"]) == 0
    runs = _by_dir(make_spec.read_calls())
    assert sorted(runs) == [f"t{i:02d}" for i in range(5)]
    assert all(len(v) == 1 for v in runs.values())
    rows = _csv(make_spec.root)
    for r in rows:  # each trial trained with the values the study recorded
        lr, clip = float(r["SOLVER.BASE_LR"]), float(r["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"])
        assert 1e-3 <= lr <= 1e-1 and 0.1 <= clip <= 2.0
        assert float(r["APs"]) == pytest.approx(10 * clip - 1000 * lr, abs=1e-4)
    assert main([str(spec), "--workers", "2"]) == 0  # the budget is spent: nothing new
    assert len(make_spec.read_calls()) == 5


@pytest.mark.slow
def test_multi_objective_marks_the_pareto_front(make_spec):
    spec = make_spec(
        metric=["bbox/AP", "bbox/APs"],
        parameters={LR: [0.01, 0.02], CLIP: [0.5, 1.0]},
        study={},
    )
    assert main([str(spec)]) == 0
    rows = _csv(make_spec.root)
    points = {r["name"]: (float(r["AP"]), float(r["APs"])) for r in rows}

    def dominated(p):
        return any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points.values())

    want = {n for n, p in points.items() if not dominated(p)}
    assert {r["name"] for r in rows if r["pareto"] == "yes"} == want
    assert (make_spec.root / "pareto_front.html").exists()
    assert (make_spec.root / "optimization_history_bbox-APs.png").exists()


def test_dry_run_and_status_create_nothing(make_spec, capfd):
    spec = make_spec(study={"pruner": "asha"}, fixed={"TEST.EVAL_PERIOD": 5})
    assert main([str(spec), "--dry-run", "--workers", "2", "--gpus", "0,1"]) == 0
    out = capfd.readouterr().out
    assert "pruner asha (min_resource=5)" in out
    assert "CUDA_VISIBLE_DEVICES=0" in out and "TRAINER.EXTRA_HOOKS" in out
    assert "SweepPruningHook" in out and out.count(": run") == 4
    assert main([str(spec), "--status"]) == 0
    assert "No study 'spec'" in capfd.readouterr().out
    assert not make_spec.root.exists() or not (make_spec.root / "study.db").exists()
    assert make_spec.read_calls() == []


@pytest.mark.slow
def test_slurm_job_array_of_workers_through_submitits_local_executor(make_spec, capfd):
    """No Slurm here: submitit's local executor runs the same job-array path on this machine."""
    spec = make_spec(study={"storage": "journal"}, slurm={"cpus_per_task": 1, "timeout_min": 5})
    assert main([str(spec), "--launcher", "slurm", "--cluster", "local", "--workers", "2"]) == 0
    out = capfd.readouterr().out
    assert "Submitted 2 worker(s) as a job array" in out
    runs = _by_dir(make_spec.read_calls())
    assert len(runs) == 4 and all(len(v) == 1 for v in runs.values())
    workers = {c[0]["ppid"] for c in runs.values()}
    assert 1 <= len(workers) <= 2  # each task is a worker; a fast one may take every trial
    assert {r["status"] for r in _csv(make_spec.root)} == {"finished"}
    assert list((make_spec.root / ".submitit").iterdir())  # submitit's job folders


@pytest.mark.slow
def test_sigterm_hands_running_trials_back_and_the_rerun_resumes_them(make_spec, monkeypatch):
    """Preemption: the command relays SIGTERM to its workers, which stop their trials and hand
    them back to the study; the next run resumes them from their checkpoints."""
    spec = make_spec(parameters={LR: [0.01], CLIP: [0.5, 1.0]}, study={})
    env = {**os.environ, "FAKE_TRAIN_SLEEP": "60"}
    cmd = [sys.executable, "-m", "detlab.sweep", str(spec), "--workers", "2", "--no-plots"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: len(make_spec.read_calls()) == 2)
        dirs = [c["output_dir"] for c in make_spec.read_calls()]
        _wait_for(lambda: all(os.path.exists(os.path.join(d, "last_checkpoint")) for d in dirs))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(_alive(c["pid"]) for c in make_spec.read_calls())
    assert {r["status"] for r in _csv(make_spec.root)} == {"interrupted"}
    monkeypatch.setenv("FAKE_TRAIN_SLEEP", "0")
    assert main([str(spec), "--no-plots"]) == 0
    calls = make_spec.read_calls()
    assert [c["resume"] for c in calls] == [False, False, True, True]
    assert {r["status"] for r in _csv(make_spec.root)} == {"finished"}


@pytest.mark.slow
def test_two_workers_share_a_study_in_postgresql(make_spec):
    """Against a real server, when one is given: DETLAB_TEST_POSTGRES_URL=postgresql://..."""
    url = os.environ.get("DETLAB_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("no PostgreSQL server (set DETLAB_TEST_POSTGRES_URL to run this test)")
    pytest.importorskip("psycopg2")
    import uuid

    name = f"detlab-test-{uuid.uuid4().hex[:8]}"
    spec = make_spec(parameters={LR: [0.01, 0.02], CLIP: [0.5, 1.0]}, study={"name": name})
    assert main([str(spec), "--workers", "2", "--storage", url, "--no-plots"]) == 0
    runs = _by_dir(make_spec.read_calls())
    assert len(runs) == 4 and all(len(v) == 1 for v in runs.values())
    from detlab.sweep.study import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(resolve_storage(url, "")))
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE"] * 4
    optuna.delete_study(study_name=name, storage=open_storage(resolve_storage(url, "")))
