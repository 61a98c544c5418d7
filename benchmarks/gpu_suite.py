"""GPU benchmark suite: train step, peak memory, inference throughput, data pipeline.

Run by ``benchmarks/gpu.sh`` (under 8 minutes on one recent GPU). Sections:

* **train** — one train step (forward with losses, backward, SGD step) of detlab, torchvision
  and Detectron2 (where installed) FCOS / Faster R-CNN / RetinaNet R50-FPN configured alike
  (``benchmarks/step_models.py``) at batch 8, 800×1333: fp32, AMP fp16 (with a gradient
  scaler) and AMP bf16, detlab also with NCHW convolutions (its default is channels-last);
  interleaved round by round; median seconds per step, images/s and peak allocated GPU memory.
* **inference** — images/s of the same models in eval mode (fp32 and fp16 autocast).
* **data** — detlab's training loader (``DatasetMapper``: JPEG decode, shortest-edge resize
  640–800 with long edge ≤ 1333, flip) with ``--workers`` processes feeding the device:
  images/s including the pinned host→device copy, against what the detlab fp32 train step
  consumes.

``--device cpu --quick`` runs every section at toy sizes (the suite's own test).

Usage::

    python benchmarks/gpu_suite.py [--device cuda] [--quick] [--json out.json] [--out out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import describe_machine  # noqa: E402
from step_models import (  # noqa: E402
    available_archs,
    build_steps,
    detectron2_inputs,
    detectron2_model,
    detectron2_version,
    detlab_cfg,
    make_inputs,
    time_interleaved,
    torchvision_model,
)

BASES = ("detlab", "detlab NCHW", "torchvision", "detectron2")
AMPS = ("", " fp16", " bf16")


def _settings(args) -> dict:
    if args.quick:
        return {"batch": 1, "size": (96, 128), "warmup": 0, "iters": 1, "infer_iters": 1}
    return {"batch": 8, "size": (800, 1333), "warmup": 2, "iters": 5, "infer_iters": 5}


def run_train(args, s: dict) -> dict:
    out: dict = {}
    variants = [b + a for b in BASES for a in AMPS]
    for arch in args.arch:
        inputs = make_inputs(s["batch"], s["size"])
        steps, failed = _working(build_steps(arch, variants, inputs, device=args.device), args)
        wall, _, peak = time_interleaved(steps, s["warmup"], s["iters"], args.device)
        out[arch] = {
            v: {
                "step_s": statistics.median(wall[v]),
                "images_per_s": s["batch"] / statistics.median(wall[v]),
                "peak_mem_gb": peak[v] / 2**30 if v in peak else None,
            }
            for v in steps
        }
        out[arch].update({v: {"error": e} for v, e in failed.items()})
        del steps
        _free(args.device)
    return out


def _working(fns: dict, args) -> tuple[dict, dict[str, str]]:
    """Run each once (the first warm-up); keep those that work, note why the others failed.

    A variant that runs out of GPU memory, or a peer whose build lacks an op on this device,
    is reported with the error's first line instead of ending the suite.
    """
    ok, failed = {}, {}
    for name, fn in fns.items():
        try:
            fn()
        except (RuntimeError, NotImplementedError, AssertionError) as e:  # OOM: RuntimeError
            failed[name] = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            print(f"  {name}: skipped ({failed[name]})", flush=True)
            _free(args.device)
        else:
            ok[name] = fn
    return ok, failed


def _free(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _inference_fns(arch: str, inputs, device: str) -> dict:
    """Eval-mode forward of each implementation, fp32 and under fp16/bf16 autocast."""
    from detlab.modeling import build_model

    size = tuple(inputs[0]["image"].shape[-2:])
    torch.manual_seed(0)
    models = {"detlab": build_model(detlab_cfg(arch, device)).eval()}
    models["torchvision"] = torchvision_model(arch, size).to(device).eval()
    if detectron2_version() is not None:
        models["detectron2"] = detectron2_model(arch, device).eval()
    tv_images = [(x["image"] / 255).to(device) for x in inputs]
    d2_inputs = detectron2_inputs(inputs, device) if "detectron2" in models else None
    half = "float16" if torch.device(device).type == "cuda" else "bfloat16"
    fns = {}
    for name, m in models.items():
        arg = {"detlab": inputs, "torchvision": tv_images, "detectron2": d2_inputs}[name]
        for amp in (None, half):

            def run(m=m, arg=arg, amp=amp) -> None:
                with torch.no_grad(), torch.autocast(
                    torch.device(device).type, dtype=getattr(torch, amp or "float32"),
                    enabled=amp is not None,
                ):  # fmt: skip
                    m(arg)

            fns[name + ("" if amp is None else f" {amp}")] = run
    return fns


def run_inference(args, s: dict) -> dict:
    out: dict = {}
    for arch in args.arch:
        inputs = make_inputs(s["batch"], s["size"])
        fns, failed = _working(_inference_fns(arch, inputs, args.device), args)
        wall, _, _ = time_interleaved(fns, s["warmup"], s["infer_iters"], args.device)
        out[arch] = {
            k: {"images_per_s": s["batch"] / statistics.median(v)} for k, v in wall.items()
        }
        out[arch].update({k: {"error": e} for k, e in failed.items()})
        del fns
        _free(args.device)
    return out


def _write_jpegs(folder: str, n: int, size: tuple[int, int]) -> list[dict]:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    h, w = size
    dicts = []
    for i in range(n):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        anns = []
        for _ in range(6):
            x, y = rng.uniform(0, w - 64), rng.uniform(0, h - 64)
            bw, bh = rng.uniform(16, 200), rng.uniform(16, 200)
            anns.append({"bbox": [x, y, bw, bh], "category_id": int(rng.integers(3))})
        path = os.path.join(folder, f"{i:03d}.jpg")
        cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        dicts.append(
            {"file_name": path, "height": h, "width": w, "image_id": i, "annotations": anns}
        )
    return dicts


def run_data(args, s: dict, train: dict) -> dict:
    from detlab.config import get_cfg
    from detlab.data import build_detection_train_loader

    cfg = get_cfg()
    cfg.SOLVER.IMS_PER_BATCH = s["batch"]
    cfg.DATALOADER.NUM_WORKERS = args.workers
    cfg.SEED = 0
    if args.quick:
        cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (96,), 128
    else:
        cfg.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
    n_batches = 3 if args.quick else 40
    pin = torch.device(args.device).type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        dicts = _write_jpegs(tmp, 8 if args.quick else 64, s["size"])
        loader = build_detection_train_loader(cfg, dataset=dicts)
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        t = time.perf_counter()
        images = 0
        for _ in range(n_batches):
            for x in next(it):
                img = x["image"].pin_memory() if pin else x["image"]
                img.to(args.device, non_blocking=True)
                images += 1
        if pin:
            torch.cuda.synchronize(args.device)
        rate = images / (time.perf_counter() - t)
    out = {"images_per_s": rate, "workers": args.workers}
    need = [
        train[a]["detlab"]["images_per_s"]
        for a in train
        if "images_per_s" in train[a].get("detlab", {})
    ]
    if need:
        out["fastest_detlab_fp32_step_images_per_s"] = max(need)
        out["keeps_up"] = rate >= max(need)
    return out


def render(report: dict) -> str:
    """Markdown tables of the suite's results."""
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m.get('gpu', report['args']['device'])} "
        f"(CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}), host {m['host_cpu']}, torch "
        f"{m['torch']}, torchvision {m['torchvision']}, Detectron2 "
        f"{m.get('detectron2') or 'not installed'}; `{m['argv']}`.",
    ]
    s = report["settings"]
    times = ", ".join(f"{k} {v:.0f} s" for k, v in report.get("section_s", {}).items())
    if times:
        lines[0] += f" Section times: {times}."
    for arch, res in report.get("train", {}).items():
        lines += [
            "",
            f"**Train step, {arch}** (batch {s['batch']}, {s['size'][0]}×{s['size'][1]})",
            "",
            "| variant | s/step | images/s | peak memory (GB) |",
            "|---|---|---|---|",
        ]
        for v, r in res.items():
            if "error" in r:
                lines.append(f"| {v} | failed: {r['error']} | | |")
                continue
            mem = "" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.2f}"
            lines.append(f"| {v} | {r['step_s']:.3f} | {r['images_per_s']:.1f} | {mem} |")
    for arch, res in report.get("inference", {}).items():
        lines += ["", f"**Inference, {arch}**", "", "| model | images/s |", "|---|---|"]
        lines += [
            f"| {k} | {r['images_per_s']:.1f} |"
            if "error" not in r
            else f"| {k} | failed: {r['error']} |"
            for k, r in res.items()
        ]
    if "data" in report:
        d = report["data"]
        keeps = d.get("keeps_up")
        lines += [
            "",
            f"**Data pipeline**: {d['images_per_s']:.1f} images/s with {d['workers']} workers"
            + (
                ""
                if keeps is None
                else f"; the fastest detlab fp32 step takes "
                f"{d['fastest_detlab_fp32_step_images_per_s']:.1f} images/s "
                f"({'keeps up' if keeps else 'does not keep up'})"
            )
            + ".",
        ]
    return "\n".join(lines) + "\n"


def _save(report: dict, path: str) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (tests the suite)")
    archs = available_archs()
    parser.add_argument("--arch", nargs="+", default=archs, choices=archs)
    parser.add_argument(
        "--sections", nargs="+", default=["train", "inference", "data"],
        choices=["train", "inference", "data"],
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--json", default="")
    parser.add_argument("--out", default="", help="also write the Markdown tables here")
    args = parser.parse_args(argv)
    if torch.device(args.device).type == "cuda":
        if not torch.cuda.is_available():
            parser.error("--device cuda but CUDA is not available; use --device cpu --quick")
        torch.backends.cudnn.benchmark = True
    s = _settings(args)
    report: dict = {"args": vars(args), "settings": s, "machine": describe_machine(args.device)}
    print(f"{report['machine']['date']}: {report['machine'].get('gpu', args.device)}", flush=True)
    sections = {
        "train": lambda: run_train(args, s),
        "inference": lambda: run_inference(args, s),
        "data": lambda: run_data(args, s, report.get("train", {})),
    }
    for name, run in sections.items():
        if name in args.sections:
            t = time.perf_counter()
            report[name] = run()
            report.setdefault("section_s", {})[name] = time.perf_counter() - t
            _save(report, args.json)  # what finished survives a later failure or time-out
    report["load_average_after"] = describe_machine(args.device)["load_average"]
    _save(report, args.json)
    text = render(report)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return report


if __name__ == "__main__":
    main()
