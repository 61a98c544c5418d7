"""A real NaN storm (no injection): a linear regressor whose LR warms up past the stability
limit. Losses climb by orders of magnitude while staying finite, then overflow. Checkpoints
written during the climb are finite but diverged; rollbacks must skip them."""

from __future__ import annotations

import re

import pytest
from _run import one_sentence, run, write_cfg

from detlab.engine.checkpoint import all_finite, load_checkpoint_file

pytestmark = pytest.mark.faults


def _max_abs(path) -> float:
    return max(float(v.abs().max()) for v in load_checkpoint_file(str(path))["model"].values())


def test_rollback_targets_are_healthy_not_only_finite(tmp_path):
    cfg = write_cfg(
        tmp_path / "storm.yaml",
        **{
            "MODEL.META_ARCHITECTURE": "LinearToyRegressor",
            "DATASETS.TEST": [],
            "TRAINER.EXTRA_HOOKS": [],
            "SOLVER.MAX_ITER": 120,
            "SOLVER.BASE_LR": 5.0,  # far past the stable LR once the warmup is over
            "SOLVER.MOMENTUM": 0.0,
            "SOLVER.STEPS": [],
            "SOLVER.WARMUP_ITERS": 40,
            "SOLVER.WARMUP_FACTOR": 0.01,
            "SOLVER.CHECKPOINT_PERIOD": 4,
            "SOLVER.CHECKPOINT_MAX_KEEP": 2,
            "SOLVER.NAN_GUARD.MAX_CONSECUTIVE": 2,
            "SOLVER.NAN_GUARD.MAX_ROLLBACKS": 1,
            "SOLVER.NAN_GUARD.HEALTHY.WINDOW": 4,
        },
    )
    out = tmp_path / "run"
    res = run(cfg, out)
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    line = one_sentence(res.stderr)
    found = re.search(r"the last healthy checkpoint is (\S+\.pth);", line)
    assert found, line
    named = found.group(1)
    init = _max_abs(out / "model_init.pth")

    # the checkpoint offered as good is healthy by its own record and not diverged
    data = load_checkpoint_file(named)
    assert data["health"]["healthy"] is True
    assert all_finite(data["model"]) and _max_abs(named) < 10 * init + 1.0
    # every rollback went to a healthy checkpoint (it still exists: protected from rotation)
    targets = re.findall(r"Rolled back to (model_\d{7}\.pth)", res.stdout)
    assert targets, res.stdout[-3000:]
    for name in targets:
        assert load_checkpoint_file(str(out / name))["health"]["healthy"] is True, name
    # the storm did write finite checkpoints with diverged weights; they are marked unhealthy
    periodic = sorted(out.glob("model_0*.pth"))
    storm = [p for p in periodic if not load_checkpoint_file(str(p))["health"]["healthy"]]
    assert storm, [p.name for p in periodic]
    for p in storm:
        ckpt = load_checkpoint_file(str(p))
        assert all_finite(ckpt["model"]) and _max_abs(p) > 1000 * init
        assert "lowest median" in ckpt["health"]["reason"]
    assert any(p.name == named.rsplit("/", 1)[-1] for p in periodic)
