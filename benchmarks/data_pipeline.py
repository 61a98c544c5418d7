#!/usr/bin/env python
"""Throughput of the SAR training mapper against an equivalent torchvision.transforms.v2 pipeline.

Both pipelines run in this one process on the same 800×800 single-channel 16-bit PNG files
(synthetic SAR scenes written to a temporary folder) and do the same work per image: decode the
16-bit file, linear → dB, stretch between the 1st and 99.8th percentile, shortest-edge resize to
a size drawn from (640, ..., 800) with the long edge capped at 1333, horizontal and vertical
flips (p = 0.5 each), a random multiple of 90° (p = 0.5), brightness/contrast ±10 % (p = 0.5),
boxes carried along, 3-channel float32 C×H×W tensor on a 0..255 scale.

    python benchmarks/data_pipeline.py [--images 16] [--iters 120] [--rounds 3] [--threads 1]

Within a round the pipelines alternate image by image; the figure is the median over rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

SIZES = (640, 672, 704, 736, 768, 800)
MAX_SIZE = 1333


def make_images(folder: str, n: int) -> list[dict]:
    from detlab.data.datasets.synthetic_sar import SyntheticSARSpec, render_scene

    spec = SyntheticSARSpec(num_images=n, height=800, width=800, seed=11, ships_per_image=(3, 8))
    dicts = []
    for i in range(n):
        img, anns, _ = render_scene(spec, i)
        path = os.path.join(folder, f"{i:03d}.png")
        cv2.imwrite(path, img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        dicts.append(
            {
                "file_name": path,
                "height": 800,
                "width": 800,
                "image_id": i,
                "annotations": [{"bbox": a["bbox"], "category_id": 0, "iscrowd": 0} for a in anns],
            }
        )
    return dicts


def detlab_pipeline():
    from detlab.data import ShipSARMapper

    mapper = ShipSARMapper(
        True,
        min_size=SIZES,
        max_size=MAX_SIZE,
        out_channels=3,
        scaling="db",
        clip_percentiles=(1.0, 99.8),
    )
    rng = np.random.default_rng(0)
    return lambda d: mapper(d, rng)


def torchvision_pipeline():
    from torchvision import tv_tensors
    from torchvision.io import ImageReadMode, decode_image, read_file
    from torchvision.transforms import v2

    rot = v2.RandomChoice([v2.RandomRotation((a, a), expand=True) for a in (90, 180, 270)])
    transforms = v2.Compose(
        [
            v2.RandomChoice([v2.Resize(s, max_size=MAX_SIZE, antialias=True) for s in SIZES]),
            v2.RandomHorizontalFlip(0.5),
            v2.RandomVerticalFlip(0.5),
            v2.RandomApply([rot], p=0.5),
            v2.RandomApply([v2.ColorJitter(brightness=0.1, contrast=0.1)], p=0.5),
            v2.ClampBoundingBoxes(),
            v2.SanitizeBoundingBoxes(),
        ]
    )
    q = torch.tensor([0.01, 0.998])

    def run(d: dict) -> dict:
        raw = decode_image(read_file(d["file_name"]), mode=ImageReadMode.UNCHANGED)
        db = 10.0 * torch.log10(raw.to(torch.float32).clamp_min(1e-3))
        lo, hi = torch.quantile(db.flatten(), q)
        img = ((db - lo) / (hi - lo).clamp_min(1e-6)).clamp_(0, 1)
        xywh = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
        boxes = tv_tensors.BoundingBoxes(
            torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            format="XYXY",
            canvas_size=img.shape[-2:],
        )
        labels = torch.tensor([a["category_id"] for a in d["annotations"]])
        out = transforms({"image": tv_tensors.Image(img), "boxes": boxes, "labels": labels})
        image = (out["image"].expand(3, -1, -1) * 255.0).contiguous()
        return {"image": image, "boxes": out["boxes"], "labels": out["labels"]}

    return run


def measure(pipes: dict, dicts: list[dict], iters: int) -> dict[str, float]:
    """Images per second of each pipeline over ``iters`` images, interleaved image by image
    (so both see the same machine load)."""
    spent = dict.fromkeys(pipes, 0.0)
    for i in range(iters):
        d = dicts[i % len(dicts)]
        for name, fn in pipes.items():
            t0 = time.perf_counter()
            out = fn(d)
            spent[name] += time.perf_counter() - t0
            assert out is not None and out["image"].shape[0] == 3
    return {name: iters / t for name, t in spent.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=16, help="distinct 800x800 files")
    p.add_argument("--iters", type=int, default=120, help="images per round and pipeline")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        dicts = make_images(folder, args.images)
        pipes = {
            "detlab ShipSARMapper": detlab_pipeline(),
            "torchvision v2": torchvision_pipeline(),
        }
        measure(pipes, dicts, min(8, args.iters))  # warm-up
        rates: dict[str, list[float]] = {k: [] for k in pipes}
        for _ in range(args.rounds):
            for name, rate in measure(pipes, dicts, args.iters).items():
                rates[name].append(rate)
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = med["detlab ShipSARMapper"] / med["torchvision v2"]
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, threads={args.threads}, torch {torch.__version__}"
    )
    print("| pipeline | images/s (median) | rounds |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.1f} | {', '.join(f'{r:.1f}' for r in rates[k])} |")
    print(f"speed-up: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"images_per_s": med, "rounds": rates, "speedup": ratio}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
