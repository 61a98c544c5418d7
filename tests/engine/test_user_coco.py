"""tools/train_net.py end to end on a user's COCO dataset declared in the config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def _write_coco(root, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i in range(n):
        img = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
        x, y, w, h = (int(v) for v in (rng.integers(4, 40), rng.integers(4, 30), 20, 16))
        img[y : y + h, x : x + w] = 220
        name = f"img_{seed}_{i}.png"
        cv2.imwrite(str(root / "images" / name), img)
        images.append({"id": i + 1, "file_name": name, "height": 64, "width": 80})
        anns.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 7,
                "bbox": [x, y, w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "tank"}]}
    path = root / f"ann_{seed}.json"
    path.write_text(json.dumps(coco))
    return path.name


def test_train_net_on_a_registered_coco_dataset(tmp_path):
    data = tmp_path / "data"
    train_json = _write_coco(data, 6, 0)
    val_json = _write_coco(data, 3, 1)
    cfg = tmp_path / "cfg" / "mine.yaml"
    cfg.parent.mkdir()
    cfg.write_text(
        f"""
MODEL:
  META_ARCHITECTURE: FCOS
  BACKBONE: {{NAME: tiny_resnet, NORM: BN}}
  RESNETS: {{WIDTH_MULT: 0.125}}
  FPN: {{OUT_CHANNELS: 16, TOP_BLOCK: none}}
  FCOS: {{NUM_CLASSES: 1, NUM_CONVS: 1}}
DATASETS:
  REGISTER:
    - {{name: mine_train, json_file: ../data/{train_json}, image_root: ../data/images}}
    - {{name: mine_val, json_file: ../data/{val_json}, image_root: ../data/images}}
  TRAIN: [mine_train]
  TEST: [mine_val]
DATALOADER: {{NUM_WORKERS: 0}}
INPUT: {{MIN_SIZE_TRAIN: [64], MAX_SIZE_TRAIN: 80, MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 80}}
SOLVER: {{MAX_ITER: 3, IMS_PER_BATCH: 2, WARMUP_ITERS: 1, CHECKPOINT_PERIOD: 2, STEPS: [2]}}
TEST: {{EVAL_PERIOD: 2}}
LOGGING: {{TENSORBOARD: false}}
SEED: 3
"""
    )
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", str(cfg), "OUTPUT_DIR", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["iteration"] == 2 and "AP50" in final["bbox"] and "AP-tank" in final["bbox"]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if "bbox/AP" in r] == [1, 2]
    for name in ("model_final.pth", "model_best.pth", "last_checkpoint", "config.yaml", "env.txt"):
        assert (out / name).exists(), name
    # --eval-only on the saved weights gives the final evaluation again
    res = subprocess.run(
        [
            sys.executable,
            "tools/train_net.py",
            "--config-file",
            str(cfg),
            "--eval-only",
            "MODEL.WEIGHTS",
            str(out / "model_final.pth"),
            "OUTPUT_DIR",
            str(tmp_path / "ev"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env=env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    ev = json.loads((tmp_path / "ev" / "final_metrics.json").read_text())
    assert ev["bbox"]["AP"] == final["bbox"]["AP"]
