"""End to end: a config with ``format: voc`` and one with ``format: yolo`` train 20 iterations
with tools/train_net.py and evaluate; the data counters reach metrics.jsonl and TensorBoard."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")

_MODEL = """
MODEL:
  META_ARCHITECTURE: FCOS
  BACKBONE: {{NAME: tiny_resnet, NORM: BN}}
  RESNETS: {{WIDTH_MULT: 0.125}}
  FPN: {{OUT_CHANNELS: 16, TOP_BLOCK: none}}
  FCOS: {{NUM_CLASSES: 2, NUM_CONVS: 1}}
DATASETS:
  REGISTER:
{register}
  TRAIN: [train_set]
  TEST: [val_set]
DATALOADER: {{NUM_WORKERS: 0}}
INPUT: {{MIN_SIZE_TRAIN: [64], MAX_SIZE_TRAIN: 96, MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 96}}
SOLVER: {{MAX_ITER: 20, IMS_PER_BATCH: 2, WARMUP_ITERS: 2, CHECKPOINT_PERIOD: 20, STEPS: [15]}}
TEST: {{EVAL_PERIOD: 20}}
LOGGING: {{TENSORBOARD: true}}
SEED: 5
"""

REGISTER = {
    "voc": (
        "    - {name: train_set, format: voc, root: ../data/voc, split: train}\n"
        "    - {name: val_set, format: voc, root: ../data/voc, split: test}"
    ),
    "yolo": (
        "    - {name: train_set, format: yolo, root: ../data/ships, split: train}\n"
        "    - {name: val_set, format: yolo, root: ../data/ships/data.yaml, split: val}"
    ),
}
# What the readers of the quirky folders skip / drop / clip (see _folders.py).
READER_COUNTS = {
    "voc": {"skipped_images": 2, "dropped_boxes": 3, "clipped_boxes": 1},
    "yolo": {"skipped_images": 0, "dropped_boxes": 3, "clipped_boxes": 1},
}


def _truncate(path) -> None:
    """Keep the header, lose the pixels: the reader accepts it, decoding fails in training."""
    data = path.read_bytes()
    path.write_bytes(data[:80])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["voc", "yolo"])
def test_train_20_iterations_and_evaluate(tmp_path, folders, fmt):
    data = tmp_path / "data"
    if fmt == "voc":
        folders.build_quirky_voc(data / "voc")
        _truncate(data / "voc" / "JPEGImages" / "000006.png")
    else:
        folders.build_quirky_yolo(data / "ships")
        _truncate(data / "ships" / "images" / "train" / "b.png")
    cfg = tmp_path / "cfg" / f"{fmt}.yaml"
    cfg.parent.mkdir()
    cfg.write_text(_MODEL.format(register=REGISTER[fmt]))
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", str(cfg), "OUTPUT_DIR", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["iteration"] == 19 and "AP" in final["bbox"] and "AP50" in final["bbox"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "data/dropped_boxes" in r]
    assert train_rows and any("bbox/AP" in r for r in rows)
    last = train_rows[-1]
    for key, n in READER_COUNTS[fmt].items():
        if key != "skipped_images":
            assert last[f"data/{key}"] >= n  # the reader's, plus any the mapper met
    # the truncated image is skipped each time it is drawn, on top of the reader's skips
    assert last["data/skipped_images"] >= READER_COUNTS[fmt]["skipped_images"] + 1
    values = [r["data/skipped_images"] for r in train_rows]
    assert values == sorted(values)  # running totals
    log = (out / "log.txt").read_text()
    assert "byte-identical copies" in log  # the reader's report reaches the run's log

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = glob.glob(str(out / "**" / "events.out.tfevents.*"), recursive=True)
    acc = EventAccumulator(events[0])
    acc.Reload()
    tags = acc.Tags()["scalars"]
    for key in ("skipped_images", "dropped_boxes", "clipped_boxes"):
        assert f"data/{key}" in tags
    assert acc.Scalars("data/skipped_images")[-1].value == last["data/skipped_images"]
