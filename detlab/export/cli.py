"""``tools/export_onnx.py``: export a trained detector to ONNX, verify it, time it."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from detlab.utils.cli import DetlabArgumentParser, parse_with_overrides, run_tool
from detlab.utils.errors import UserError

__all__ = ["main", "sample_images"]


def build_parser() -> DetlabArgumentParser:
    from detlab.export.onnx import DEFAULT_BOX_TOL, DEFAULT_SCORE_TOL

    p = DetlabArgumentParser(
        description="Export a detector (YOLO, FCOS or FasterRCNN) to ONNX with NMS in the graph, "
        "verify it against PyTorch with onnxruntime and print the latency of both.",
        epilog="Config overrides (KEY VALUE) may appear anywhere: MODEL.WEIGHTS out/model.pth",
    )
    p.add_argument("--config-file", metavar="FILE", required=True, help="config YAML")
    p.add_argument("--output", default="model.onnx", help="ONNX file to write")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")
    p.add_argument("--num-samples", type=int, default=3, help="test-set images to verify on")
    p.add_argument("--repeats", type=int, default=10, help="timed runs per image (0 = no timing)")
    p.add_argument("--box-tol", type=float, default=DEFAULT_BOX_TOL, help="px per coordinate")
    p.add_argument("--score-tol", type=float, default=DEFAULT_SCORE_TOL, help="score tolerance")
    p.add_argument("--no-verify", action="store_true", help="export only")
    p.add_argument("--json", action="store_true", help="print the verification as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def sample_images(cfg: Any, num: int) -> tuple[list[torch.Tensor], str]:
    """``num`` images of ``DATASETS.TEST[0]`` through the inference mapper, plus a crop of
    the first at another size (checks the dynamic size). Random images if none load."""
    from detlab.data import build_mapper, get_detection_dataset_dicts, register_from_config

    images: list[torch.Tensor] = []
    source = "random"
    try:
        register_from_config(cfg)
        names = list(cfg.DATASETS.TEST) or list(cfg.DATASETS.TRAIN)
        dicts = get_detection_dataset_dicts(names[:1])
        mapper = build_mapper(cfg, is_train=False)
        for d in dicts:
            if len(images) >= num:
                break
            out = mapper(d, np.random.default_rng(0))
            if out is not None:
                images.append(out["image"])
        source = names[0]
    except UserError as err:
        print(f"note: no dataset images ({err}); verifying on random images.", file=sys.stderr)
    if not images:
        c = len(cfg.MODEL.PIXEL_MEAN)
        s = int(cfg.INPUT.MIN_SIZE_TEST) or 256
        gen = torch.Generator().manual_seed(0)
        images = [torch.rand(c, s, s, generator=gen) * 255 for _ in range(max(num, 1))]
    first = images[0]
    h, w = first.shape[-2:]
    images.append(first[:, : max(h * 3 // 4, 8), : max(w * 7 // 8, 8)].contiguous())
    return images, source


def _run(args: Any) -> int:
    from detlab.config import load_config
    from detlab.export.onnx import checks_to_dicts, export_onnx, verify_onnx
    from detlab.modeling import build_inference_model

    cfg = load_config(args.config_file, args.opts)
    threads = int(getattr(getattr(cfg, "TRAINER", None), "CPU_THREADS", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    model = build_inference_model(cfg)
    images, source = sample_images(cfg, args.num_samples)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    export_onnx(model, args.output, images[0], opset=args.opset)
    size_mb = os.path.getsize(args.output) / 2**20
    c = images[0].shape[0]
    summary = {"output": args.output, "arch": type(model).__name__, "size_mb": size_mb}
    if args.json and args.no_verify:
        print(json.dumps({"ok": True, **summary}))
        return 0
    if not args.json:
        print(
            f"Exported {summary['arch']} to {args.output} ({size_mb:.1f} MB, opset "
            f"{args.opset}): "
            f"input image 1x{c}xHxW float32 (0..255, after the test resize), outputs boxes "
            "(XYXY input pixels), scores, classes after NMS."
        )
    if args.no_verify:
        return 0
    checks = verify_onnx(
        model,
        args.output,
        images,
        box_tol=args.box_tol,
        score_tol=args.score_tol,
        repeats=args.repeats,
    )
    ok = all(c.ok for c in checks)
    if args.json:
        out = {"ok": ok, **summary, "source": source, "samples": checks_to_dicts(checks)}
        print(json.dumps(out))
        return 0 if ok else 1
    print(
        f"Verification on {len(checks)} images of {source} with onnxruntime (CPU): boxes "
        f"within {args.box_tol:g} px per coordinate, scores within {args.score_tol:g}, classes "
        "equal."
    )
    print(
        "| image | size | eager dets | onnx dets | matched | max box diff (px) "
        "| max score diff | eager ms | onnx ms | ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for i, ch in enumerate(checks):
        timing = f"{ch.eager_ms:.1f} | {ch.onnx_ms:.1f}" if args.repeats > 0 else "- | -"
        print(
            f"| {i} | {ch.height}x{ch.width} | {ch.eager_detections} | {ch.onnx_detections} | "
            f"{ch.matched} | {ch.max_box_diff:.4f} | {ch.max_score_diff:.2e} | {timing} | "
            f"{'yes' if ch.ok else 'NO'} |"
        )
    if args.repeats > 0:
        print(
            f"(latency: median of {args.repeats} single-image runs, CPU, batch 1, "
            f"{torch.get_num_threads()} torch threads, onnxruntime default threads)"
        )
    if not ok:
        bad = sum(not c.ok for c in checks)
        print(f"FAILED: {bad} of {len(checks)} images differ beyond the tolerance.")
        return 1
    print("OK: ONNX detections match PyTorch on every image.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/export_onnx.py``; returns the exit status."""
    args = parse_with_overrides(build_parser(), argv)
    return run_tool(lambda: _run(args), debug=args.debug)
