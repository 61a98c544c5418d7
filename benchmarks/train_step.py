"""Train-step time of detlab detectors against torchvision's and Detectron2's, on CPU, in one run.

Default: batch 2, 512×512 RGB, random init, 80 classes, 8 boxes per image, FCOS, Faster R-CNN
and RetinaNet (where this detlab has it), each ResNet-50-FPN configured alike (see
``benchmarks/step_models.py``). The variants of one architecture run interleaved step by
step, so machine load hits them alike:

* ``detlab`` — detlab's defaults: channels-last convolutions and, for Faster R-CNN, RoIAlign
  as one bilinear-matrix product (``MODEL.ROI_BOX_HEAD.POOLER_KERNEL auto``);
* ``detlab NCHW`` — ``MODEL.CHANNELS_LAST False``;
* ``detlab tv-RoIAlign`` — Faster R-CNN with torchvision's RoIAlign kernel (what the pooler
  saves);
* ``torchvision`` — ``fcos_resnet50_fpn`` / ``fasterrcnn_resnet50_fpn`` /
  ``retinanet_resnet50_fpn``;
* ``detectron2`` — Detectron2's model-zoo FCOS / Faster R-CNN / RetinaNet R50-FPN where it is
  importable (skipped with a note otherwise);
* ``detlab convs`` / ``torchvision backbone+FPN`` — the networks' convolutions (and FC layers)
  alone, for the overhead ratios (full step / convolutions);
* ``detlab bf16`` / ``torchvision bf16`` — forward under bf16 autocast (detlab's
  ``SOLVER.AMP.ENABLED True``), added by ``--bf16`` (default: where the CPU has native bf16).

Ratios are taken per round (variant / torchvision in the same round) and their median
reported, by wall and by process CPU time. ``--profile`` instead prints where one step's time
goes (op categories and top ops, ``torch.profiler``); ``--light`` times light FCOS
configurations for CPU training from scratch (batch 8, 256×256, one channel).

Usage::

    python benchmarks/train_step.py [--arch fcos rcnn retinanet] [--iters 4] [--threads 2]
                                    [--json out.json]
    python benchmarks/train_step.py --profile [--arch rcnn]
    python benchmarks/train_step.py --light [--iters 8]

``benchmarks/publish_figures.sh`` runs it three times and writes the medians for
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_env import describe_machine  # noqa: E402
from step_models import (  # noqa: E402
    available_archs,
    bf16_supported,
    build_steps,
    detectron2_version,
    make_inputs,
    time_interleaved,
)

from detlab.config import get_cfg  # noqa: E402
from detlab.modeling import build_model  # noqa: E402

DEFAULT_VARIANTS = (
    "detlab",
    "detlab NCHW",
    "detlab tv-RoIAlign",
    "torchvision",
    "detectron2",
    "detlab convs",
    "torchvision backbone+FPN",
)
BF16_VARIANTS = ("detlab bf16", "torchvision bf16")
# (numerator, denominator) of the overhead ratios: full step / the same network's convolutions
OVERHEAD = {
    "detlab full / convs": ("detlab", "detlab convs"),
    "torchvision full / backbone+FPN": ("torchvision", "torchvision backbone+FPN"),
}


def _round_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[i] / b[i] (both measured in the same round)."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def summarize(wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> dict:
    """Per-variant medians and per-round ratios against torchvision and the overhead ratios."""
    out: dict = {"steps": {}, "ratios": {}}
    for k in wall:
        out["steps"][k] = {
            "wall_median_s": statistics.median(wall[k]),
            "wall_min_s": min(wall[k]),
            "cpu_median_s": statistics.median(cpu[k]),
            "wall_s": wall[k],
            "cpu_s": cpu[k],
        }
    pairs = {}
    conv_only = {b for _, b in OVERHEAD.values()}
    if "torchvision" in wall:
        peers = [k for k in wall if k != "torchvision" and k not in conv_only]
        pairs.update({f"{k} / torchvision": (k, "torchvision") for k in peers})
    if "torchvision bf16" in wall and "detlab bf16" in wall:
        pairs["detlab bf16 / torchvision bf16"] = ("detlab bf16", "torchvision bf16")
    if "detectron2" in wall and "detlab" in wall:
        pairs["detlab / detectron2"] = ("detlab", "detectron2")
    pairs.update({k: v for k, v in OVERHEAD.items() if v[0] in wall and v[1] in wall})
    for label, (a, b) in pairs.items():
        out["ratios"][label] = {
            "wall": _round_ratio(wall[a], wall[b]),
            "cpu": _round_ratio(cpu[a], cpu[b]),
        }
    return out


def print_arch(arch: str, args, res: dict) -> None:
    print(f"\n{arch}: batch {args.batch}, {args.size}x{args.size}, {args.iters} rounds (s/step)")
    print(f"  {'variant':<28} {'wall med':>9} {'wall min':>9} {'cpu med':>9}")
    for k, r in res["steps"].items():
        wall, low, cpu = r["wall_median_s"], r["wall_min_s"], r["cpu_median_s"]
        print(f"  {k:<28} {wall:>9.3f} {low:>9.3f} {cpu:>9.3f}")
    print("  ratios (median over rounds):  wall   cpu")
    for k, r in res["ratios"].items():
        print(f"  {k:<40} {r['wall']:>5.2f} {r['cpu']:>5.2f}")


def run_arch(arch: str, args, variants: list[str]) -> dict:
    inputs = make_inputs(args.batch, (args.size, args.size))
    steps = build_steps(arch, variants, inputs)
    if args.profile:
        from step_profile import profile_steps

        return profile_steps(steps, warmup=args.warmup, top=args.top)
    wall, cpu, _ = time_interleaved(steps, args.warmup, args.iters)
    res = summarize(wall, cpu)
    print_arch(arch, args, res)
    return res


def light_configs():
    """Light FCOS configurations for CPU training from scratch on 1-channel 256² chips."""
    base = {
        "MODEL.META_ARCHITECTURE": "FCOS",
        "MODEL.BACKBONE.IN_CHANNELS": 1,
        "MODEL.BACKBONE.NORM": "BN",
        "MODEL.PIXEL_MEAN": (128.0,),
        "MODEL.PIXEL_STD": (64.0,),
        "MODEL.FCOS.NUM_CLASSES": 1,
        "MODEL.FPN.IN_STAGES": (2, 3, 4),
        "MODEL.FPN.TOP_BLOCK": "none",
    }
    tiny = {
        "MODEL.BACKBONE.NAME": "tiny_resnet",
        "MODEL.RESNETS.WIDTH_MULT": 0.25,
        "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.FCOS.NUM_CONVS": 1,
    }
    variants = {
        "tiny_resnet x0.25, FPN 32, 1 conv, NCHW": {**tiny, "MODEL.CHANNELS_LAST": False},
        "same, channels-last (default)": tiny,
        "tiny_resnet x0.25, FPN 64, 2 convs": {
            **tiny,
            "MODEL.FPN.OUT_CHANNELS": 64,
            "MODEL.FCOS.NUM_CONVS": 2,
        },
        "tiny_resnet x0.5, FPN 64, 2 convs": {
            **tiny,
            "MODEL.RESNETS.WIDTH_MULT": 0.5,
            "MODEL.FPN.OUT_CHANNELS": 64,
            "MODEL.FCOS.NUM_CONVS": 2,
        },
        "resnet18, FPN 64, 2 convs": {
            "MODEL.BACKBONE.NAME": "resnet18",
            "MODEL.FPN.OUT_CHANNELS": 64,
            "MODEL.FCOS.NUM_CONVS": 2,
        },
    }
    out = {}
    for name, v in variants.items():
        cfg = get_cfg()
        nested: dict = {}
        for key, val in {**base, **v}.items():
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = val
        cfg.merge_from_dict(nested)
        out[name] = cfg
    return out


def run_light(args) -> dict:
    batch, size = 8, 256
    inputs = make_inputs(batch, (size, size), channels=1, boxes_per_image=6)
    for x in inputs:
        x["instances"].classes.zero_()
    steps = {}
    for name, cfg in light_configs().items():
        torch.manual_seed(0)
        model = build_model(cfg).train()
        opt = torch.optim.SGD(model.parameters(), 0.001, 0.9)

        def step(model=model, opt=opt) -> None:
            loss = sum(model(inputs).values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps[name] = step
    wall, cpu, _ = time_interleaved(steps, args.warmup, args.iters)
    print(f"\nLight FCOS, batch {batch}, {size}x{size}, 1 channel: s/iter")
    print(f"  {'config':<42} {'wall med':>9} {'wall min':>9} {'cpu med':>9}")
    results = {}
    for name in steps:
        r = {
            "wall_median_s": statistics.median(wall[name]),
            "wall_min_s": min(wall[name]),
            "cpu_median_s": statistics.median(cpu[name]),
        }
        results[name] = r
        print(
            f"  {name:<42} {r['wall_median_s']:>9.3f} {r['wall_min_s']:>9.3f} "
            f"{r['cpu_median_s']:>9.3f}"
        )
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    archs = available_archs()
    parser.add_argument("--arch", nargs="+", default=archs, choices=archs)
    parser.add_argument("--size", type=int, default=512, help="square image side (pixels)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=4, help="timed rounds after the warm-up")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--variants", nargs="+", default=None, help=f"default: {', '.join(DEFAULT_VARIANTS)}"
    )
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="add the bf16-autocast variants (auto: where the CPU has native bf16)",
    )
    parser.add_argument("--profile", action="store_true", help="where one step's time goes")
    parser.add_argument("--top", type=int, default=12, help="ops listed per model by --profile")
    parser.add_argument("--light", action="store_true", help="time light 1-channel FCOS configs")
    parser.add_argument("--json", default="", help="also write the results to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    before = describe_machine()
    print(
        f"{before['date']}: torch {before['torch']}, torchvision {before['torchvision']}, "
        f"detectron2 {before['detectron2']}, {before['host_cpu']} ({before['cpu_count']} CPUs, "
        f"flags {' '.join(before['cpu_flags'])}), threads={args.threads}, "
        f"load average before={before['load_average']}"
    )
    results: dict = {}
    if args.light:
        results["light"] = run_light(args)
    else:
        variants = list(args.variants or DEFAULT_VARIANTS)
        if args.variants is None and (
            args.bf16 == "on" or (args.bf16 == "auto" and bf16_supported())
        ):
            variants += BF16_VARIANTS
        if any(v.startswith("detectron2") for v in variants) and detectron2_version() is None:
            print("note: Detectron2 is not importable here; its variants are skipped")
        for arch in args.arch:
            results[arch] = run_arch(arch, args, variants)
    after = describe_machine()
    print(f"load average after={after['load_average']}")
    report = {
        "args": vars(args),
        "machine": before,
        "load_average_after": after["load_average"],
        "finished": after["date"],
        "bf16_native": bf16_supported(),
        "results": results,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
