"""The event quick start with its real data, model and evaluator: a shortened run learns."""

from __future__ import annotations

import json
import os

import pytest

from detlab.config import load_config
from detlab.engine import Trainer, default_setup

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
QUICKSTART = os.path.join(ROOT, "configs", "quickstart", "events_cpu.yaml")


@pytest.mark.slow
def test_short_event_quickstart_learns(tmp_path):
    out = tmp_path / "qs"
    opts = {
        "SOLVER.MAX_ITER": 100,
        "SOLVER.STEPS": "(90,)",
        "SOLVER.WARMUP_ITERS": 20,
        "SOLVER.CHECKPOINT_PERIOD": 0,
        "TEST.EVAL_PERIOD": 0,
        "OUTPUT_DIR": str(out),
    }
    cfg = load_config(QUICKSTART, [x for k, v in opts.items() for x in (k, str(v))])
    trainer = Trainer(default_setup(cfg))
    trainer.resume_or_load(resume=False)
    final = trainer.train()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["total_loss"] for r in rows if "total_loss" in r]
    assert len(losses) == 100
    assert sum(losses[-10:]) / 10 < 0.75 * sum(losses[:10]) / 10
    assert final["bbox"]["AP50"] > 10.0  # an untrained detector scores about 0
    assert {"APs", "APm", "AP-pedestrian", "AP-car", "AP-bus"} <= set(final["bbox"])
