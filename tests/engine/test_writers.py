"""metrics.jsonl, TensorBoard events (scalars, config text, images) and wandb offline runs."""

from __future__ import annotations

import glob
import json
import os


def test_tensorboard_events_are_readable(run_toy, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    run_toy(out, **{"SOLVER.MAX_ITER": 10, "LOGGING.TENSORBOARD": True})
    files = glob.glob(str(out / "events.out.tfevents.*"))
    assert files
    acc = EventAccumulator(str(out), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"total_loss", "lr", "grad_norm", "bbox/AP", "nan/skipped"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("total_loss")] == list(range(10))
    assert [e.step for e in acc.Scalars("bbox/AP")] == [9]
    text_tags = [t for t in tags["tensors"] if t.startswith("config")]
    assert text_tags
    text = acc.Tensors(text_tags[0])[0].tensor_proto.string_val[0].decode()
    assert "BASE_LR" in text and "ToyDetector" in text
    # validation images with ground truth and predictions, at the evaluation
    images = [t for t in tags["images"] if t.startswith("val/")]
    assert len(images) == 4
    img = acc.Images(images[0])[0]
    assert img.step == 9 and (img.width, img.height) == (32, 32)


def test_metrics_jsonl_one_object_per_line(run_toy, tmp_path):
    out = tmp_path / "js"
    run_toy(out, **{"SOLVER.MAX_ITER": 5, "SOLVER.NAN_GUARD.INJECT.ITERS": [2]})
    lines = (out / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(x) for x in lines]
    assert all("iteration" in r for r in rows)
    assert rows[2]["loss_box"] == "nan" or rows[2]["loss_cls"] == "nan"
    assert rows[4]["bbox/AP50"] >= 0


def test_wandb_offline_run_folder(run_toy, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "wb"
    run_toy(out, **{"SOLVER.MAX_ITER": 4, "LOGGING.WANDB.ENABLED": True})
    runs = glob.glob(str(out / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    logs = glob.glob(os.path.join(runs[0], "*.wandb"))
    assert logs and os.path.getsize(logs[0]) > 0
    assert f"wandb sync {runs[0]}" in (out / "log.txt").read_text()


def test_wandb_failure_only_warns(run_toy, tmp_path, monkeypatch):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("no network")

    monkeypatch.setattr(wandb, "init", boom)
    _, final = run_toy(tmp_path / "wf", **{"SOLVER.MAX_ITER": 3, "LOGGING.WANDB.ENABLED": True})
    assert final["iteration"] == 2
    assert "wandb could not start (no network)" in (tmp_path / "wf" / "log.txt").read_text()


def test_smoothed_losses_ignore_skipped_non_finite_steps():
    import math

    from detlab.utils.events import EventStorage

    storage = EventStorage()
    for value in (1.0, float("nan"), 3.0, float("inf"), 2.0):
        storage.put_scalar("total_loss", value)
        storage.step()
    assert storage.median("total_loss", window=5) == 2.0
    assert storage.median("total_loss", window=2) == 2.0  # only the finite one in the window
    storage.put_scalar("only_nan", float("nan"))
    assert math.isnan(storage.median("only_nan"))
