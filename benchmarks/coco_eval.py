#!/usr/bin/env python
"""COCO box evaluation speed: detlab's full ``tools/eval.py`` run against pycocotools.

Synthetic data (default 2000 images, 10 classes, 100 detections per image, crowd boxes and
empty images included) is written to a temporary folder. Each repeat times, in the same run:

* **detlab**: ``python tools/eval.py --gt GT --pred PRED --out DIR`` as a command (with
  ``--workers 2``, its default when a CPU is idle, and with ``--workers 1``), wall time
  from process start to exit: interpreter start-up, reading both json files, the 12 COCO
  numbers, size buckets, per-class tables, P/R/F1, the confusion matrix, every file in ``DIR``
  (metrics.json, per_class.csv, report.md, three PNG figures).
* **pycocotools**: ``COCOeval.evaluate() + accumulate() + summarize()`` alone, in this process,
  with the ground truth and results already loaded (loading is not counted).

The variants run in rotating order within each repeat; reports medians and the median of the
per-repeat ratios (target: detlab <= 0.35x pycocotools).

    python benchmarks/coco_eval.py [--images 2000] [--classes 10] [--dets 100] [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(num_images: int, num_classes: int, dets: int, seed: int = 0):
    """COCO GT and results: ~0-15 boxes per image, 30% of detections near a GT box."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 640, "height": 480, "file_name": f"{i}.jpg"}
              for i in range(num_images)]  # fmt: skip
    cats = [{"id": 3 * k + 1, "name": f"class{k}"} for k in range(num_classes)]
    anns, results = [], []
    for img in images:
        gts = []
        for _ in range(int(rng.integers(0, 16))):
            w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
            x, y = rng.uniform(0, 600, 2)
            ann = {"id": len(anns) + 1, "image_id": img["id"],
                   "category_id": cats[int(rng.integers(num_classes))]["id"],
                   "bbox": [round(float(v), 2) for v in (x, y, w, h)], "area": float(w * h),
                   "iscrowd": int(rng.random() < 0.02)}  # fmt: skip
            anns.append(ann)
            gts.append(ann)
        for _ in range(dets):
            if gts and rng.random() < 0.3:
                g = gts[int(rng.integers(len(gts)))]
                b = np.asarray(g["bbox"]) * rng.normal(1, 0.08, 4)
                cat = (
                    g["category_id"]
                    if rng.random() < 0.8
                    else cats[rng.integers(num_classes)]["id"]
                )
            else:
                w, h = np.exp(rng.uniform(np.log(4), np.log(300), 2))
                b = np.array([*rng.uniform(0, 600, 2), w, h])
                cat = cats[int(rng.integers(num_classes))]["id"]
            results.append({"image_id": img["id"], "category_id": int(cat),
                            "bbox": [round(float(v), 2) for v in np.abs(b)],
                            "score": round(float(rng.random()), 4)})  # fmt: skip
    return {"images": images, "annotations": anns, "categories": cats}, results


def time_pycocotools(gt_path: str, pred_path: str) -> tuple[float, float]:
    """Wall and CPU seconds of evaluate + accumulate + summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        coco_dt = coco_gt.loadRes(pred_path)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        start, cpu = time.perf_counter(), time.process_time()
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return time.perf_counter() - start, time.process_time() - cpu


def time_detlab(gt_path: str, pred_path: str, out_dir: str, workers: int) -> tuple[float, float]:
    """Wall and CPU seconds (the command and all its processes) of one tools/eval.py run."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "eval.py"), "--gt", gt_path,
           "--pred", pred_path, "--out", out_dir, "--workers", str(workers)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"tools/eval.py failed:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gt, results = make_data(args.images, args.classes, args.dets)
        gt_path, pred_path = os.path.join(tmp, "gt.json"), os.path.join(tmp, "pred.json")
        with open(gt_path, "w") as f:
            json.dump(gt, f)
        with open(pred_path, "w") as f:
            json.dump(results, f)
        runs: dict[str, list[tuple[float, float]]] = {"pyc": [], "w1": [], "w2": []}
        for r in range(args.repeats):
            # Rotate the order so that no variant always runs first (load drifts over time).
            for name in (["pyc", "w1", "w2"] * 2)[r % 3 : r % 3 + 3]:
                if name == "pyc":
                    runs[name].append(time_pycocotools(gt_path, pred_path))
                else:
                    out = os.path.join(tmp, f"{name}_{r}")
                    runs[name].append(time_detlab(gt_path, pred_path, out, int(name[1])))
        files = sorted(os.listdir(os.path.join(tmp, "w1_0")))

    def listed(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print(f"data: {args.images} images, {args.classes} classes, {len(results)} detections, "
          f"{len(gt['annotations'])} ground-truth boxes")  # fmt: skip
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")  # fmt: skip
    try:
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        load = "n/a"
    print(f"load average at the end (1/5/15 min): {load}")
    pyc_wall = [w for w, _ in runs["pyc"]]
    pyc_cpu = [c for _, c in runs["pyc"]]
    print(f"pycocotools evaluate+accumulate+summarize: wall median "
          f"{statistics.median(pyc_wall):.2f} s [{listed(pyc_wall)}], CPU median "
          f"{statistics.median(pyc_cpu):.2f} s")  # fmt: skip
    for name, label in (("w1", "--workers 1"), ("w2", "--workers 2")):
        wall = [w for w, _ in runs[name]]
        cpu = [c for _, c in runs[name]]
        wall_ratio = [a / b for a, b in zip(wall, pyc_wall, strict=True)]
        cpu_ratio = [a / b for a, b in zip(cpu, pyc_cpu, strict=True)]
        print(f"detlab tools/eval.py --gt --pred --out {label} (whole command): wall median "
              f"{statistics.median(wall):.2f} s [{listed(wall)}], CPU median "
              f"{statistics.median(cpu):.2f} s")  # fmt: skip
        print(f"  ratio to pycocotools in the same repeat (median): wall "
              f"{statistics.median(wall_ratio):.2f}x [{listed(wall_ratio)}], CPU "
              f"{statistics.median(cpu_ratio):.2f}x (target <= 0.35x)")  # fmt: skip
    print(f"detlab outputs: {', '.join(files)}")


if __name__ == "__main__":
    main()
