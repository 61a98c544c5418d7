"""Trainer loop on the toy detector: outputs, learning, hooks, EMA, AMP, accumulation, resume."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch

from detlab.engine import HOOK_REGISTRY, HookBase, PreflightError
from detlab.engine.checkpoint import load_checkpoint_file


def _metrics(out_dir) -> list[dict]:
    with open(os.path.join(out_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_run_writes_outputs_and_learns(run_toy, tmp_path):
    out = tmp_path / "run"
    trainer, final = run_toy(out, **{"SOLVER.MAX_ITER": 60, "SOLVER.BASE_LR": 0.02})
    for name in (
        "config.yaml",
        "env.txt",
        "log.txt",
        "metrics.jsonl",
        "last_checkpoint",
        "model_final.pth",
        "model_best.pth",
        "final_metrics.json",
    ):
        assert (out / name).is_file(), name
    assert "torch" in (out / "env.txt").read_text()
    assert (out / "last_checkpoint").read_text().strip() == "model_0000059.pth"
    on_disk = json.loads((out / "final_metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(final))
    assert on_disk["iteration"] == 59 and "AP50" in on_disk["bbox"]
    rows = _metrics(out)
    assert [r["iteration"] for r in rows if "total_loss" in r] == list(range(60))
    assert all("grad_norm" in r and "lr" in r for r in rows if "total_loss" in r)
    evals = [r for r in rows if "bbox/AP" in r]
    assert [r["iteration"] for r in evals] == [9, 19, 29, 39, 49, 59]
    # learning: the evaluation metric improves and the box loss falls
    assert evals[-1]["bbox/AP"] > evals[0]["bbox/AP"] + 10
    first = sum(r["loss_box"] for r in rows[:5]) / 5
    last = sum(r["loss_box"] for r in rows[-5:]) / 5
    assert last < 0.6 * first
    best = max(evals, key=lambda r: r["bbox/AP"])
    assert on_disk["best_iteration"] == best["iteration"]
    ckpt = load_checkpoint_file(str(out / "model_best.pth"))
    assert ckpt["iteration"] == best["iteration"]
    # periodic checkpoints rotate to the newest CHECKPOINT_MAX_KEEP (3)
    periodic = sorted(p.name for p in out.glob("model_0*.pth"))
    assert periodic == ["model_0000039.pth", "model_0000049.pth", "model_0000059.pth"]


def test_same_seed_same_metrics(run_toy, tmp_path):
    _, a = run_toy(tmp_path / "a", **{"SOLVER.MAX_ITER": 15})
    _, b = run_toy(tmp_path / "b", **{"SOLVER.MAX_ITER": 15})
    assert a == b
    la = [r.get("total_loss") for r in _metrics(tmp_path / "a")]
    lb = [r.get("total_loss") for r in _metrics(tmp_path / "b")]
    assert la == lb


def test_random_seed_is_logged_and_saved(toy, tmp_path):
    from detlab.engine import default_setup

    cfg = default_setup(toy.toy_cfg(tmp_path / "s", SEED=-1))
    assert cfg.SEED >= 0
    assert f"random seed {cfg.SEED}" in (tmp_path / "s" / "log.txt").read_text()
    assert f"SEED: {cfg.SEED}" in (tmp_path / "s" / "config.yaml").read_text()


@pytest.mark.parametrize("kind", ["loss", "grad", "input"])
def test_injected_non_finite_steps_are_skipped_and_counted(run_toy, tmp_path, kind):
    out = tmp_path / kind
    value = "inf" if kind == "grad" else "nan"
    trainer, _ = run_toy(
        out,
        **{
            "SOLVER.MAX_ITER": 12,
            "SOLVER.NAN_GUARD.INJECT.ITERS": [3, 7],
            "SOLVER.NAN_GUARD.INJECT.KIND": kind,
            "SOLVER.NAN_GUARD.INJECT.VALUE": value,
        },
    )
    rows = {r["iteration"]: r for r in _metrics(out) if "nan/skipped" in r}
    assert rows[2]["nan/skipped"] == 0
    assert rows[3]["nan/skipped"] == 1 and rows[3]["nan/consecutive"] == 1
    assert rows[4]["nan/consecutive"] == 0
    assert rows[11]["nan/skipped"] == 2 and rows[11]["nan/rollbacks"] == 0
    assert not math.isfinite(float(rows[3]["grad_norm"]))
    log = (out / "log.txt").read_text()
    assert "Non-finite" in log and "iteration 3" in log and "iteration 7" in log
    for p in trainer.model.parameters():
        assert torch.isfinite(p).all()


def test_skipped_step_leaves_weights_unchanged(toy, tmp_path):
    from detlab.engine import default_setup
    from detlab.utils.events import EventStorage

    cfg = default_setup(toy.toy_cfg(tmp_path / "w", **{"SOLVER.NAN_GUARD.INJECT.ITERS": [0]}))
    trainer = toy.ToyTrainer(cfg)
    trainer._data_iter = iter(trainer.build_train_loader(cfg))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_persistent_divergence_rolls_back_and_backs_off(run_toy, tmp_path):
    out = tmp_path / "div"
    trainer, final = run_toy(
        out,
        **{
            "SOLVER.MAX_ITER": 40,
            "SOLVER.NAN_GUARD.INJECT.ITERS": list(range(14, 17)) + list(range(25, 28)),
            "SOLVER.NAN_GUARD.MAX_CONSECUTIVE": 3,
            "SOLVER.NAN_GUARD.LR_BACKOFF": 0.5,
        },
    )
    assert trainer.nan_guard.rollbacks == 2
    assert trainer.scheduler.lr_multiplier == pytest.approx(0.25)
    rows = {r["iteration"]: r for r in _metrics(out) if "lr" in r}
    # iteration 17 runs at half the LR of the schedule: STEPS=(20,), no decay yet
    assert rows[13]["lr"] == pytest.approx(0.1)
    assert rows[17]["lr"] == pytest.approx(0.05)
    assert rows[30]["lr"] == pytest.approx(0.1 * 0.1 * 0.25)
    assert rows[39]["nan/rollbacks"] == 2 and rows[39]["nan/skipped"] == 6
    log = (out / "log.txt").read_text()
    assert "Rolled back to model_0000009.pth" in log
    assert "Rolled back to model_0000019.pth" in log
    for name in ("model_final.pth", "model_0000039.pth"):
        state = load_checkpoint_file(str(out / name))["model"]
        assert all(torch.isfinite(v).all() for v in state.values())
    assert final["iteration"] == 39


def test_rollbacks_exhausted_stop_with_one_message(run_toy, tmp_path):
    from detlab.engine import TrainingDivergedError

    with pytest.raises(TrainingDivergedError) as err:
        run_toy(
            tmp_path / "stop",
            **{
                "SOLVER.MAX_ITER": 40,
                "SOLVER.NAN_GUARD.INJECT.ITERS": list(range(12, 40)),
                "SOLVER.NAN_GUARD.MAX_CONSECUTIVE": 2,
                "SOLVER.NAN_GUARD.MAX_ROLLBACKS": 2,
            },
        )
    msg = str(err.value)
    assert "model_0000009.pth" in msg and "2 rollback" in msg and "\n" not in msg


def test_skip_rate_window_triggers_rollback(run_toy, tmp_path):
    trainer, _ = run_toy(
        tmp_path / "rate",
        **{
            "SOLVER.MAX_ITER": 30,
            "SOLVER.NAN_GUARD.INJECT.ITERS": [12, 14, 16, 18],
            "SOLVER.NAN_GUARD.WINDOW": 10,
            "SOLVER.NAN_GUARD.MAX_SKIP_RATE": 0.3,
        },
    )
    assert trainer.nan_guard.rollbacks == 1


def test_disabled_guard_raises_like_detectron2(run_toy, tmp_path):
    with pytest.raises(FloatingPointError, match="iteration=4"):
        run_toy(
            tmp_path / "raise",
            **{"SOLVER.NAN_GUARD.ENABLED": False, "SOLVER.NAN_GUARD.INJECT.ITERS": [4]},
        )


def test_resume_continues_exactly(run_toy, tmp_path):
    full, _ = run_toy(tmp_path / "full", **{"SOLVER.MAX_ITER": 25})
    part = tmp_path / "part"
    run_toy(part, **{"SOLVER.MAX_ITER": 25, "SOLVER.NAN_GUARD.INJECT.ITERS": []})
    # simulate a run that died after iteration 14: keep the checkpoint of iteration 9
    (part / "last_checkpoint").write_text("model_0000009.pth\n")
    resumed, _ = run_toy(part, resume=True, **{"SOLVER.MAX_ITER": 25})
    assert resumed.start_iter == 10
    a = [(r["iteration"], r.get("total_loss")) for r in _metrics(tmp_path / "full")]
    b = [(r["iteration"], r.get("total_loss")) for r in _metrics(part)]
    assert a == b
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_model_weights_apply_only_without_resume(run_toy, tmp_path):
    src, _ = run_toy(tmp_path / "src", **{"SOLVER.MAX_ITER": 10})
    w = str(tmp_path / "src" / "model_final.pth")
    t, _ = run_toy(tmp_path / "init", **{"SOLVER.MAX_ITER": 0, "MODEL.WEIGHTS": w})
    for k, v in src.model.state_dict().items():
        assert torch.equal(v, t.model.state_dict()[k])


def test_extra_hooks_from_config(run_toy, tmp_path):
    calls = []

    @HOOK_REGISTRY.register()
    class _CountingHook(HookBase):
        def __init__(self, tag: str) -> None:
            self.tag = tag

        @classmethod
        def from_config(cls, cfg):
            return {"tag": cfg.OUTPUT_DIR}

        def before_train(self):
            calls.append("before_train")

        def after_backward(self):
            calls.append("after_backward")

        def after_step(self):
            calls.append("after_step")

        def after_train(self):
            calls.append("after_train")

    try:
        trainer, _ = run_toy(
            tmp_path / "h", **{"SOLVER.MAX_ITER": 3, "TRAINER.EXTRA_HOOKS": ["_CountingHook"]}
        )
    finally:
        HOOK_REGISTRY._obj_map.pop("_CountingHook")
    assert calls == ["before_train"] + ["after_backward", "after_step"] * 3 + ["after_train"]
    assert any(type(h).__name__ == "_CountingHook" for h in trainer.hooks)


def test_early_stopping(run_toy, tmp_path):
    trainer, final = run_toy(
        tmp_path / "es",
        **{
            "SOLVER.MAX_ITER": 200,
            "SOLVER.BASE_LR": 0.0,
            "TEST.EVAL_PERIOD": 5,
            "SOLVER.EARLY_STOPPING.ENABLED": True,
            "SOLVER.EARLY_STOPPING.PATIENCE": 2,
        },
    )
    assert final["iteration"] == 14 and "early stopping" in final["stop_reason"]
    assert (tmp_path / "es" / "model_final.pth").is_file()


def test_ema_amp_and_accumulation(run_toy, tmp_path):
    trainer, final = run_toy(
        tmp_path / "ema",
        **{"SOLVER.MAX_ITER": 10, "SOLVER.EMA.ENABLED": True, "SOLVER.AMP.ENABLED": True},
    )
    assert "ema" in final and "AP" in final["ema"]["bbox"]
    ckpt = load_checkpoint_file(str(tmp_path / "ema" / "model_final.pth"))
    assert ckpt["ema"]["updates"] == 10
    assert not torch.equal(ckpt["ema"]["model"]["head.weight"], ckpt["model"]["head.weight"])


def test_grad_accumulation_matches_full_batch(run_toy, tmp_path):
    common = {"SOLVER.MAX_ITER": 8, "SOLVER.NAN_GUARD.ENABLED": False, "TEST.EVAL_PERIOD": 0}
    big, _ = run_toy(tmp_path / "big", **common, **{"SOLVER.IMS_PER_BATCH": 4})
    acc, _ = run_toy(
        tmp_path / "acc", **common, **{"SOLVER.IMS_PER_BATCH": 2, "SOLVER.GRAD_ACCUM_STEPS": 2}
    )
    for k, v in big.model.state_dict().items():
        torch.testing.assert_close(v, acc.model.state_dict()[k], rtol=1e-4, atol=1e-5)


def test_preflight_fails_in_one_sentence(run_toy, tmp_path):
    with pytest.raises(PreflightError) as err:
        run_toy(tmp_path / "pf", **{"MODEL.PIXEL_MEAN": (1.0, 2.0, 3.0)})
    assert "channels" in str(err.value) and "\n" not in str(err.value)


def test_resuming_a_finished_run_only_reports(run_toy, tmp_path):
    out = tmp_path / "done"
    _, first = run_toy(out, **{"SOLVER.MAX_ITER": 10})
    trainer, again = run_toy(out, resume=True, **{"SOLVER.MAX_ITER": 10})
    assert trainer.start_iter == 10
    assert again["iteration"] == 9 and again["bbox"] == first["bbox"]
    assert len([r for r in _metrics(out) if "total_loss" in r]) == 10


def test_amp_runs_the_forward_in_bfloat16_on_cpu(toy, tmp_path):
    from detlab.engine import default_setup
    from detlab.utils.events import EventStorage

    cfg = default_setup(toy.toy_cfg(tmp_path / "amp", **{"SOLVER.AMP.ENABLED": True}))
    trainer = toy.ToyTrainer(cfg)
    trainer._data_iter = iter(trainer.build_train_loader(cfg))
    seen = []
    trainer.model.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with EventStorage(0):
        trainer.iter = 0
        trainer.run_step()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in trainer.model.parameters())


def test_deterministic_option(toy, tmp_path):
    from detlab.engine import default_setup

    try:
        default_setup(toy.toy_cfg(tmp_path / "det", DETERMINISTIC=True))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
