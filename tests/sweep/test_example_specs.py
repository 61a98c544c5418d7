"""The example specs in configs/sweeps/ load, expand and pass the config check."""

from __future__ import annotations

from pathlib import Path

import pytest

from detlab.sweep import load_spec, plan_sweep
from detlab.sweep.cli import main

SWEEPS = Path(__file__).resolve().parents[2] / "configs" / "sweeps"


@pytest.mark.parametrize(
    ("name", "n_trials", "keys", "metric"),
    [
        ("sar_lr_clip.yaml", 6, ["SOLVER.BASE_LR", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE"], "bbox/AP"),
        (
            "fpn_scales_sizeaware.yaml",
            4,
            ["MODEL.FPN.IN_STAGES", "MODEL.SIZE_AWARE_LOSS.ENABLED"],
            "bbox/APs",
        ),
    ],
)
def test_example_spec_plans(tmp_path, name, n_trials, keys, metric):
    spec = load_spec(SWEEPS / name, output_root=str(tmp_path / "out"))
    planned = plan_sweep(spec)  # loads every trial's full config with load_config
    assert len(planned) == n_trials
    assert list(spec.parameters) == keys and spec.metric == metric
    assert len({p.output_dir for p in planned}) == n_trials
    for p in planned:
        assert p.cmd[1].endswith("tools/train_net.py")
        for key in keys:
            assert key in p.cmd


def test_fpn_example_names_and_dry_run(tmp_path, capsys):
    spec = SWEEPS / "fpn_scales_sizeaware.yaml"
    assert main([str(spec), "--dry-run", "--output-root", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    for name in (
        "fpn2-3-4_sizeaware-false",
        "fpn2-3-4_sizeaware-true",
        "fpn1-2-3-4_sizeaware-false",
        "fpn1-2-3-4_sizeaware-true",
    ):
        assert name in out
    assert "MODEL.FPN.IN_STAGES '[1, 2, 3, 4]'" in out  # shell-quoted list value
    assert not (tmp_path / "o").exists()


def test_asha_example_is_a_tpe_study_and_dry_runs_without_a_database(tmp_path, capfd):
    pytest.importorskip("optuna")
    spec = load_spec(SWEEPS / "sar_lr_clip_asha.yaml", output_root=str(tmp_path / "o"))
    assert spec.method == "tpe" and spec.num_trials == 24 and spec.study.pruner_type == "asha"
    from detlab.sweep.study import resolve_pruner

    assert resolve_pruner(spec) == {"type": "asha", "reduction_factor": 3, "min_resource": 1500}
    argv = [
        str(SWEEPS / "sar_lr_clip_asha.yaml"),
        "--dry-run",
        "--output-root",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--workers", "2", "--gpus", "0,1"]) == 0
    out = capfd.readouterr().out
    assert "24 trials (tpe) as an Optuna study, 2 worker(s)" in out
    assert "TRAINER.EXTRA_HOOKS" in out and "SweepPruningHook" in out
    assert not (tmp_path / "o").exists()
