"""A 2×2 grid with the real tools/train_net.py: tiny FCOS, tiny COCO set, CPU, a few iterations."""

from __future__ import annotations

import csv
import json
import math
import os
import sys

import numpy as np
import pytest
import yaml

from detlab.sweep.cli import main


def _tiny_coco(root, n: int = 4, size: int = 64) -> str:
    """``n`` noisy ``size``² BGR images with one or two bright boxes each, as a COCO json."""
    import cv2

    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(n):
        img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
        for _ in range(1 + i % 2):
            w, h = (int(v) for v in rng.integers(8, 24, 2))
            x, y = (int(v) for v in rng.integers(0, size - 24, 2))
            img[y : y + h, x : x + w] = 220
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        cv2.imwrite(str(root / f"{i}.png"), img)
        images.append({"id": i + 1, "file_name": f"{i}.png", "height": size, "width": size})
    coco = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "ship"}]}
    (root / "tiny.json").write_text(json.dumps(coco))
    return "tiny.json"


def _tiny_base(tmp_path, name: str, **sections) -> None:
    """``tmp_path/tiny.yaml``: a tiny FCOS on the tiny COCO set (registered as ``name``), CPU,
    3 iterations; ``sections`` update the config's sections (``SOLVER={"MAX_ITER": 6}``)."""
    data = tmp_path / "data"
    data.mkdir()
    _tiny_coco(data)
    base = {
        "DATASETS": {
            "REGISTER": [{"name": name, "json_file": "data/tiny.json", "image_root": "data"}],
            "TRAIN": [name],
            "TEST": [name],
        },
        "DATALOADER": {"NUM_WORKERS": 0},
        "INPUT": {
            "MIN_SIZE_TRAIN": [64],
            "MAX_SIZE_TRAIN": 64,
            "MIN_SIZE_TEST": 64,
            "MAX_SIZE_TEST": 64,
        },
        "MODEL": {
            "META_ARCHITECTURE": "FCOS",
            "BACKBONE": {"NAME": "tiny_resnet", "NORM": "BN"},
            "RESNETS": {"WIDTH_MULT": 0.25},
            "FPN": {"OUT_CHANNELS": 16, "IN_STAGES": [2, 3, 4], "TOP_BLOCK": "none"},
            "FCOS": {"NUM_CLASSES": 1, "NUM_CONVS": 1},
        },
        "SOLVER": {
            "MAX_ITER": 3,
            "IMS_PER_BATCH": 2,
            "WARMUP_ITERS": 1,
            "STEPS": [],
            "CHECKPOINT_PERIOD": 1000,
        },
        "LOGGING": {"TENSORBOARD": False},
        "SEED": 1,
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(base))


@pytest.mark.slow
def test_grid_with_real_train_net_on_cpu(tmp_path, capsys):
    _tiny_base(tmp_path, "sweep_tiny")
    spec = {
        "base_config": "tiny.yaml",
        "parameters": {
            "SOLVER.BASE_LR": [0.01, 0.001],
            "MODEL.SIZE_AWARE_LOSS.ENABLED": [False, True],
        },
        "metric": "bbox/AP50",
        "mode": "max",
        "output_root": str(tmp_path / "sweep"),
        "python": sys.executable,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))

    code = main([str(tmp_path / "spec.yaml"), "--parallel", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    with open(tmp_path / "sweep" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}
    for r in rows:  # the leaderboard carries what each trainer wrote, in the metric's order
        trial = tmp_path / "sweep" / r["name"]
        final = json.loads((trial / "final_metrics.json").read_text())
        assert float(r["AP50"]) == pytest.approx(final["bbox"]["AP50"], abs=1e-5)
        assert int(r["best_iteration"]) == final["best_iteration"]
        cfg = yaml.safe_load((trial / "config.yaml").read_text())
        assert cfg["OUTPUT_DIR"] == str(trial)
        assert math.isclose(cfg["SOLVER"]["BASE_LR"], float(r["SOLVER.BASE_LR"]))
        assert (
            str(cfg["MODEL"]["SIZE_AWARE_LOSS"]["ENABLED"]).lower()
            == r["MODEL.SIZE_AWARE_LOSS.ENABLED"]
        )
    ap50 = [float(r["AP50"]) for r in rows]
    assert ap50 == sorted(ap50, reverse=True)
    best = tmp_path / "sweep" / rows[0]["name"] / "config.yaml"
    assert f"config: {best}" in out
    assert os.path.isfile(best)


@pytest.mark.slow
def test_real_trainer_is_pruned_at_its_first_evaluation(tmp_path, capfd):
    """tools/train_net.py + SweepPruningHook + an Optuna study: a trial far below an earlier
    one (a reference trial put into the study) stops at its first evaluation, resumable."""
    optuna = pytest.importorskip("optuna")
    from detlab.sweep.plan import plan_sweep
    from detlab.sweep.spec import load_spec
    from detlab.sweep.study import search_space
    from detlab.sweep.study_run import StudyRun
    from detlab.sweep.worker import hook_overrides

    _tiny_base(tmp_path, "prune_tiny", SOLVER={"MAX_ITER": 6}, TEST={"EVAL_PERIOD": 2})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "base_config": "tiny.yaml",
                "parameters": {"SOLVER.BASE_LR": [0.01]},
                "metric": "bbox/AP50",
                "output_root": str(tmp_path / "sweep"),
                "python": sys.executable,
                "study": {"pruner": {"type": "median", "n_startup_trials": 1}},
            }
        )
    )
    spec = load_spec(spec_path)
    run = StudyRun(spec, opts=[], storage=None, study_name=None, num_gpus=1, grace_s=5)
    study = run.prepare(plan_sweep(run.spec, extra=hook_overrides(run.spec)), retry_failed=False)
    study.add_trial(
        optuna.trial.create_trial(
            value=100.0,
            params={"SOLVER.BASE_LR": 0.01},
            distributions=search_space(spec),
            intermediate_values={2: 100.0, 4: 100.0, 6: 100.0},
        )
    )
    assert main([str(spec_path), "--no-plots"]) == 0
    with open(tmp_path / "sweep" / "leaderboard.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["status"] == "pruned" and row["iterations"] == "2"
    trial = tmp_path / "sweep" / row["name"]
    assert (trial / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    assert (trial / "model_0000001.pth").is_file()
    final = json.loads((trial / "final_metrics.json").read_text())
    assert final["iteration"] == 1 and final["stop_reason"].startswith("pruned by the sweep")
    assert "Stopping: pruned by the sweep after 2 iterations" in (trial / "log.txt").read_text()
