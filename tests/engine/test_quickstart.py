"""The quick starts (FCOS, YOLO) with the real data, model and evaluator: a shortened run
learns, and a resumed run continues exactly (same losses, same weights) — for YOLO across the
mosaic closing."""

from __future__ import annotations

import json
import os

import pytest
import torch

from detlab.config import load_config
from detlab.engine import Trainer, default_setup

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "sar_ships_cpu.yaml")
YOLO_QUICK = os.path.join(ROOT, "configs", "yolo", "yolo_n_sar_ships_cpu.yaml")


def _losses(out) -> list[tuple[int, float]]:
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(x) for x in f]
    return [(r["iteration"], r["total_loss"]) for r in rows if "total_loss" in r]


def _train(out, resume=False, config=QUICKSTART, **overrides):
    opts = [x for k, v in overrides.items() for x in (k, str(v))]
    cfg = default_setup(load_config(config, [*opts, "OUTPUT_DIR", str(out)]))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer, trainer.train()


@pytest.mark.slow
def test_short_quickstart_learns(tmp_path):
    out = tmp_path / "qs"
    _, final = _train(
        out,
        **{
            "SOLVER.MAX_ITER": 80,
            "SOLVER.STEPS": "(70,)",
            "SOLVER.WARMUP_ITERS": 20,
            "SOLVER.CHECKPOINT_PERIOD": 0,
            "TEST.EVAL_PERIOD": 0,
        },
    )
    losses = [v for _, v in _losses(out)]
    assert len(losses) == 80
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert final["bbox"]["AP50"] > 10.0  # an untrained detector scores about 1
    assert "APs" in final["bbox"]
    assert json.loads((out / "final_metrics.json").read_text())["iteration"] == 79


@pytest.mark.slow
def test_short_yolo_quick_config_learns(tmp_path):
    out = tmp_path / "yolo"
    _, final = _train(
        out,
        config=YOLO_QUICK,
        **{
            "SOLVER.MAX_ITER": 120,
            "SOLVER.WARMUP_ITERS": 20,
            "INPUT.MOSAIC.CLOSE_ITERS": 20,
            "SOLVER.CHECKPOINT_PERIOD": 0,
            "TEST.EVAL_PERIOD": 0,
        },
    )
    losses = [v for _, v in _losses(out)]
    assert len(losses) == 120
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert final["bbox"]["AP50"] > 5.0  # an untrained detector scores about 0
    assert "APs" in final["bbox"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "config, extra",
    [(QUICKSTART, {}), (YOLO_QUICK, {"INPUT.MOSAIC.CLOSE_ITERS": 2})],  # YOLO closes at 4
    ids=["fcos", "yolo"],
)
def test_quickstart_resume_is_exact(tmp_path, config, extra):
    common = {
        "SOLVER.MAX_ITER": 6,
        "SOLVER.CHECKPOINT_PERIOD": 3,
        "SOLVER.IMS_PER_BATCH": 2,
        "DATASETS.TEST": "()",
        "DATALOADER.NUM_WORKERS": 1,
        **extra,
    }
    full, _ = _train(tmp_path / "full", config=config, **common)
    part = tmp_path / "part"
    _train(part, config=config, **common)
    (part / "last_checkpoint").write_text("model_0000002.pth\n")  # as if killed at iteration 4
    resumed, _ = _train(part, resume=True, config=config, **common)
    assert resumed.start_iter == 3
    assert _losses(tmp_path / "full") == _losses(part)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
