#!/usr/bin/env python
"""Single-image inference latency: exported ONNX model on onnxruntime vs eager PyTorch.

For each detector (FCOS and Faster R-CNN, the quick-start sizes by default: tiny ResNet,
1-channel 256×256 input), builds the model with seeded random weights, exports it with
``detlab.export.export_onnx`` (NMS in the graph), checks that the detections match, then
times both on the same images, alternating, with the same number of threads. Post-processing
(score threshold, top-k, NMS) is included on both sides; the eager side also includes
detlab's pre-processing (normalisation, padding) and box rescaling, as ``model(inputs)`` does.

    python benchmarks/onnx_latency.py [--config configs/quickstart/sar_ships_cpu.yaml]
        [--size 256] [--repeats 30] [--threads 1] [KEY VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def bench(cfg_file: str, arch: str, size: int, repeats: int, threads: int, opts: list[str]):
    import onnxruntime as ort

    from detlab.config import load_config
    from detlab.export import export_onnx, run_onnx, verify_onnx
    from detlab.modeling import build_model

    overrides = ["MODEL.META_ARCHITECTURE", arch, "MODEL.DEVICE", "cpu", *opts]
    if arch == "FasterRCNN":
        overrides += ["MODEL.ROI_HEADS.NUM_CLASSES", "1"]
    cfg = load_config(cfg_file, overrides)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    c = len(cfg.MODEL.PIXEL_MEAN)
    gen = torch.Generator().manual_seed(1)
    images = [torch.rand(c, size, size, generator=gen) * 255 for _ in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        export_onnx(model, path, images[0])
        checks = verify_onnx(model, path, images)
        opts_ort = ort.SessionOptions()
        opts_ort.intra_op_num_threads = threads
        opts_ort.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts_ort, providers=["CPUExecutionProvider"])
        inputs = [{"image": img, "height": size, "width": size} for img in images]

        def eager():
            with torch.no_grad():
                for x in inputs:
                    model([x])

        def onnx_run():
            for img in images:
                run_onnx(sess, img)

        eager(), onnx_run()  # warm-up
        e, o = [], []
        for _ in range(repeats):  # alternate so load changes hit both alike
            e += _time(eager, 1)
            o += _time(onnx_run, 1)
    per = len(images)
    return {
        "arch": arch,
        "match": all(ch.ok for ch in checks),
        "dets": sum(ch.eager_detections for ch in checks),
        "eager_ms": statistics.median(e) / per,
        "onnx_ms": statistics.median(o) / per,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(ROOT, "configs/quickstart/sar_ships_cpu.yaml"))
    p.add_argument("--size", type=int, default=256, help="square input size in pixels")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds of 4 images")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--arch", nargs="+", default=["FCOS", "FasterRCNN"])
    p.add_argument("opts", nargs="*", help="config overrides")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {time.strftime('%Y-%m-%d')} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
        f"threads {args.threads}, input 1x{args.size}x{args.size}"
    )
    print("| detector | detections match | eager PyTorch ms/image | onnxruntime ms/image | ratio |")
    print("|---|---|---|---|---|")
    ok = True
    for arch in args.arch:
        r = bench(args.config, arch, args.size, args.repeats, args.threads, args.opts)
        ok &= r["match"]
        print(
            f"| {arch} | {'yes' if r['match'] else 'NO'} ({r['dets']} dets) | "
            f"{r['eager_ms']:.2f} | {r['onnx_ms']:.2f} | {r['eager_ms'] / r['onnx_ms']:.2f}x |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
