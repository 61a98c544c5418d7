"""Sweep specs: parsing, grid/random expansion, names, override tokens, one-sentence errors."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from detlab.config import get_cfg
from detlab.sweep.spec import load_spec
from detlab.sweep.trials import expand_trials, override_tokens, short_keys
from detlab.utils.errors import UserError


def _write(tmp_path, spec: dict, name: str = "spec.yaml"):
    (tmp_path / "base.yaml").write_text("SOLVER: {MAX_ITER: 10}\n")
    spec = {"base_config": "base.yaml", **spec}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


RANDOM = {
    "method": "random",
    "num_trials": 12,
    "seed": 7,
    "parameters": {
        "SOLVER.BASE_LR": {"loguniform": [1.0e-5, 1.0e-2]},
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": {"uniform": [0.5, 2.0]},
        "SOLVER.MAX_ITER": {"randint": [10, 20]},
        "MODEL.FPN.IN_STAGES": {"choice": [[2, 3, 4], [1, 2, 3, 4]]},
    },
}


def test_random_search_is_reproducible_from_its_seed(tmp_path):
    a = expand_trials(load_spec(_write(tmp_path, RANDOM, "a.yaml")))
    b = expand_trials(load_spec(_write(tmp_path, RANDOM, "b.yaml")))
    assert [(t.name, t.params) for t in a] == [(t.name, t.params) for t in b]
    c = expand_trials(load_spec(_write(tmp_path, {**RANDOM, "seed": 8}, "c.yaml")))
    assert [t.params for t in a] != [t.params for t in c]

    assert len(a) == 12
    for t in a:
        lr = t.params["SOLVER.BASE_LR"]
        assert 1e-5 <= lr <= 1e-2
        assert 0.5 <= t.params["SOLVER.CLIP_GRADIENTS.CLIP_VALUE"] <= 2.0
        assert t.params["SOLVER.MAX_ITER"] in range(10, 21)
        assert t.params["MODEL.FPN.IN_STAGES"] in ([2, 3, 4], [1, 2, 3, 4])
    # loguniform spreads over decades: the log-midpoint splits the draws, not the linear one.
    logs = [math.log10(t.params["SOLVER.BASE_LR"]) for t in a]
    assert min(logs) < -3.5 < max(logs)
    assert len({t.params["MODEL.FPN.IN_STAGES"][0] for t in a}) == 2


def test_grid_is_the_product_in_spec_order(tmp_path):
    spec = load_spec(
        _write(tmp_path, {"parameters": {"SOLVER.BASE_LR": [1, 2, 3], "SOLVER.MAX_ITER": [5, 6]}})
    )
    trials = expand_trials(spec)
    assert [(t.params["SOLVER.BASE_LR"], t.params["SOLVER.MAX_ITER"]) for t in trials] == [
        (1, 5),
        (1, 6),
        (2, 5),
        (2, 6),
        (3, 5),
        (3, 6),
    ]
    assert [t.index for t in trials] == list(range(6))
    assert trials[0].name == "t000_BASE_LR=1_MAX_ITER=5"


def test_names_are_safe_for_file_names(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            {
                "parameters": {
                    "DATASETS.TRAIN": [["a/b", "c d"], ["x"]],
                    "MODEL.FPN.IN_STAGES": [[2, 3, 4], [1, 2, 3, 4]],
                },
                "name_template": "{index:02d}/{TRAIN}:{IN_STAGES} *",
            },
        )
    )
    names = [t.name for t in expand_trials(spec)]
    assert names[0] == "00_a_b-c_d_2-3-4"
    for n in names:
        assert "/" not in n and " " not in n and ":" not in n and "*" not in n


def test_short_keys_are_unique_suffixes():
    keys = ["SOLVER.CLIP_GRADIENTS.ENABLED", "MODEL.SIZE_AWARE_LOSS.ENABLED", "SOLVER.BASE_LR"]
    assert short_keys(keys) == {
        "SOLVER.CLIP_GRADIENTS.ENABLED": "CLIP_GRADIENTS.ENABLED",
        "MODEL.SIZE_AWARE_LOSS.ENABLED": "SIZE_AWARE_LOSS.ENABLED",
        "SOLVER.BASE_LR": "BASE_LR",
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SOLVER.BASE_LR", 1e-4),
        ("SOLVER.BASE_LR", 0.1 + 0.2),
        ("SOLVER.MAX_ITER", 7),
        ("SOLVER.CLIP_GRADIENTS.ENABLED", True),
        ("SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "norm"),
        ("OUTPUT_DIR", "1e-4"),  # text that looks like a number stays text
        ("OUTPUT_DIR", "runs/a b"),
        ("MODEL.FPN.IN_STAGES", [1, 2, 3, 4]),
        ("DATASETS.TRAIN", ["a", "b"]),
        ("INPUT.MIN_SIZE_TRAIN", (640, 800)),
    ],
)
def test_override_tokens_round_trip_through_the_config(key, value):
    cfg = get_cfg()
    cfg.merge_from_list(override_tokens({key: value}))
    got = cfg
    for part in key.split("."):
        got = got[part]
    if isinstance(value, (list, tuple)):
        assert list(got) == list(value)
    else:
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"parameter": {"SOLVER.BASE_LR": [1]}}, ["unknown key 'parameter'", "parameters"]),
        ({"parameters": {"SOLVER.BASE_LR": 0.1}}, ["SOLVER.BASE_LR", "non-empty list"]),
        ({"parameters": {"SOLVER.BASE_LR": []}}, ["SOLVER.BASE_LR", "non-empty list"]),
        (
            {
                "method": "random",
                "num_trials": 2,
                "parameters": {"SOLVER.BASE_LR": {"logunifrom": [1e-4, 1e-2]}},
            },
            ["logunifrom", "did you mean loguniform"],
        ),
        (
            {
                "method": "random",
                "num_trials": 2,
                "parameters": {"SOLVER.BASE_LR": {"loguniform": [0, 1]}},
            },
            ["positive"],
        ),
        (
            {
                "method": "random",
                "num_trials": 2,
                "parameters": {"SOLVER.BASE_LR": {"uniform": [2, 1]}},
            },
            ["above high"],
        ),
        (
            {"method": "random", "parameters": {"SOLVER.BASE_LR": {"uniform": [1, 2]}}},
            ["num_trials"],
        ),
        ({"method": "bayes", "parameters": {"SOLVER.BASE_LR": [1]}}, ["grid, random, tpe, cmaes"]),
        ({"mode": "maximum", "parameters": {"SOLVER.BASE_LR": [1]}}, ["'max' or 'min'"]),
        ({"parameters": {"OUTPUT_DIR": ["a"]}}, ["output_root"]),
        (
            {"fixed": {"SOLVER.BASE_LR": 1}, "parameters": {"SOLVER.BASE_LR": [1]}},
            ["both fixed and a parameter"],
        ),
        ({"parameters": {"SOLVER.BASE_LR": [1, 2]}, "name_template": "same"}, ["both named"]),
        ({"parameters": {"SOLVER.BASE_LR": [1]}, "name_template": "{LR}"}, ["{LR}", "BASE_LR"]),
        (
            {"parameters": {"SOLVER.BASE_LR": [1]}, "slurm": {"partiton": "gpu"}},
            ["did you mean partition"],
        ),
        (
            {"parameters": {"SOLVER.BASE_LR": [1]}, "slurm": {"timeout_min": "2h"}},
            ["slurm timeout_min", "number"],
        ),
        (
            {"parameters": {"SOLVER.BASE_LR": [1]}, "slurm": {"gpus_per_node": 1.5}},
            ["slurm gpus_per_node", "whole number"],
        ),
        (
            {"base_config": "missing.yaml", "parameters": {"SOLVER.BASE_LR": [1]}},
            ["missing.yaml", "does not exist"],
        ),
    ],
)
def test_spec_mistakes_fail_in_one_sentence(tmp_path, spec, words):
    with pytest.raises(UserError) as info:
        expand_trials(load_spec(_write(tmp_path, spec)))
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_paths_resolve_against_the_spec_and_cwd(tmp_path, monkeypatch):
    sub = tmp_path / "specs"
    sub.mkdir()
    (tmp_path / "base.yaml").write_text("SOLVER: {MAX_ITER: 10}\n")
    path = sub / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "base_config": "../base.yaml",
                "train_script": "t.py",
                "parameters": {"SOLVER.BASE_LR": [1]},
                "output_root": "runs/x",
            }
        )
    )
    monkeypatch.chdir(tmp_path)
    spec = load_spec(path)
    assert spec.base_config == str(tmp_path / "base.yaml")
    assert spec.train_script == str(sub / "t.py")
    assert spec.output_root == str(tmp_path / "runs" / "x")
    assert load_spec(path, output_root="elsewhere").output_root == str(tmp_path / "elsewhere")
    assert spec.metric_key == ("bbox", "AP")


def test_planning_a_sweep_does_not_import_torch(tmp_path):
    import subprocess
    import sys

    path = _write(tmp_path, {"parameters": {"SOLVER.BASE_LR": [1, 2]}, "train_script": "t.py"})
    (tmp_path / "t.py").write_text("")
    code = (
        "import sys; from detlab.sweep import load_spec, plan_sweep; "
        f"plan_sweep(load_spec({str(path)!r})); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@settings(max_examples=150, deadline=None)
@given(
    lr=st.floats(min_value=1e-12, max_value=1e6, allow_nan=False, allow_infinity=False),
    it=st.integers(min_value=0, max_value=10**9),
    text=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")),
)
def test_override_tokens_round_trip_any_value(lr, it, text):
    cfg = get_cfg()
    values = {"SOLVER.BASE_LR": lr, "SOLVER.MAX_ITER": it, "MODEL.WEIGHTS": text}
    cfg.merge_from_list(override_tokens(values))
    assert cfg.SOLVER.BASE_LR == lr
    assert cfg.SOLVER.MAX_ITER == it
    assert cfg.MODEL.WEIGHTS == text


def test_nested_parameter_groups_are_flattened(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            {
                "method": "random",
                "num_trials": 2,
                "parameters": {
                    "SOLVER": {
                        "BASE_LR": {"loguniform": [1e-4, 1e-2]},
                        "CLIP_GRADIENTS": {"CLIP_VALUE": [0.5, 1.0]},
                    }
                },
            },
        )
    )
    assert spec.parameters == {
        "SOLVER.BASE_LR": {"loguniform": [1e-4, 1e-2]},
        "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": {"choice": [0.5, 1.0]},
    }


def test_retry_resumes_a_killed_trial_from_its_checkpoint_and_reruns_a_failed_one(tmp_path):
    from detlab.sweep.plan import PlannedTrial, trial_action
    from detlab.sweep.trials import Trial

    out = tmp_path / "t"
    out.mkdir()
    p = PlannedTrial(
        Trial(0, "t", {"SEED": 1}),
        str(out),
        str(out / "run.log"),
        ["t.py", "--config-file", "b.yaml"],
    )
    killed = {"status": "failed", "returncode": -9}
    errored = {"status": "failed", "returncode": 1}
    assert trial_action(killed, p, retry_failed=False) == ("skip", False)
    assert trial_action(killed, p, retry_failed=True) == ("retry", False)  # no checkpoint yet
    (out / "last_checkpoint").write_text("model_0000009.pth\n")
    assert trial_action(killed, p, retry_failed=True) == ("resume", True)
    assert trial_action({**killed, "returncode": 137}, p, retry_failed=True) == ("resume", True)
    assert trial_action(errored, p, retry_failed=True) == ("retry", False)
    assert trial_action({"status": "interrupted", "returncode": 75}, p, False) == ("resume", True)


def test_slurm_trials_ask_submitit_to_requeue_the_same_command(tmp_path):
    from detlab.sweep.job import RequeueableCommand

    job = RequeueableCommand()
    again = job.checkpoint(["python", "train_net.py"], str(tmp_path / "run.log"), None, None)
    assert again.function is job
    assert again.args == (["python", "train_net.py"], str(tmp_path / "run.log"), None, None)
