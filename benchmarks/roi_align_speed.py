"""RoIAlign forward + backward on CPU: detlab's pooler against torchvision's kernel, one run.

The setting of the Faster R-CNN train step in ``benchmarks/train_step.py``: batch 2 at
512×512, FPN levels P2–P5 (strides 4–32, 256 channels, channels-last as detlab's default
convolutions leave them), 512 RoIs per image of 16–400 px sides, 7×7 output, sampling ratio 2,
no half-pixel offset. Both poolers are ``detlab.modeling.poolers.build_roi_pooler`` with
``POOLER_KERNEL`` ``auto`` (one sparse bilinear-weight product) or ``torchvision``, timed
alternately on the same inputs; the script first checks they give the same values.

Usage::

    python benchmarks/roi_align_speed.py [--iters 5] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import describe_machine  # noqa: E402

from detlab.modeling.poolers import build_roi_pooler  # noqa: E402


def make_case(batch: int = 2, size: int = 512, rois: int = 512, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    names, strides = ["p2", "p3", "p4", "p5"], [4, 8, 16, 32]
    feats = {
        n: torch.randn(batch, 256, size // s, size // s, generator=g).contiguous(
            memory_format=torch.channels_last
        )
        for n, s in zip(names, strides, strict=True)
    }
    boxes = []
    for _ in range(batch):
        xy = torch.rand(rois, 2, generator=g) * (size - 16)
        wh = 16 + torch.rand(rois, 2, generator=g) * 384
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=size)], 1))
    return names, strides, feats, boxes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    machine = describe_machine()
    names, strides, feats, boxes = make_case()
    poolers = {
        k: build_roi_pooler("ROIAlign", names, strides, 7, 2, kernel=k)
        for k in ("auto", "torchvision")
    }
    leaves = {n: f.requires_grad_(True) for n, f in feats.items()}
    with torch.no_grad():
        a, b = (p(feats, boxes) for p in poolers.values())
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    grad = torch.randn_like(a)
    times: dict[str, list[float]] = {k: [] for k in poolers}
    for i in range(args.iters + 1):
        for k, pool in poolers.items():
            c = time.process_time()
            out = pool(feats, boxes)
            torch.autograd.grad(out, list(leaves.values()), grad)
            if i:  # the first round warms up
                times[k].append(time.process_time() - c)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = statistics.median(
        t / a for a, t in zip(times["auto"], times["torchvision"], strict=True)
    )
    print(
        f"{machine['date']}, load average {machine['load_average']}, {args.threads} thread(s): "
        f"RoIAlign fwd+bwd CPU s, 1024 RoIs on P2-P5: detlab auto {med['auto']:.3f}, "
        f"torchvision kernel {med['torchvision']:.3f}; torchvision / detlab {ratio:.1f}x"
    )
    report = {"machine": machine, "cpu_s": med, "speedup": ratio, "args": vars(args)}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
