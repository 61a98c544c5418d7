#!/usr/bin/env python
"""Write a synthetic SAR ship set (16-bit amplitude images + COCO json) of any size and mix.

    python datasets/make_synthetic_sar.py --out data/synth --num-images 500 --size 512 512 \
        --classes cargo:0.7 tanker:0.2 fishing:0.1 --seed 3

A class is ``name:frequency[:type+type...]`` with ship types cargo, tanker, fishing, generic
(default: the type of the same name, else all types). Register the result from a config:
``DATASETS.REGISTER: [{name: synth, json_file: data/synth/annotations.json,
image_root: data/synth}]``.
"""

from __future__ import annotations

import argparse
import sys
import time

from detlab.data.datasets import SyntheticSARSpec, generate_synthetic_sar
from detlab.data.datasets.synthetic_sar import SHIP_TYPES
from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError


def parse_classes(items: list[str]) -> dict[str, tuple[float, tuple[str, ...]]]:
    """``["cargo:0.7", "boat:0.3:fishing+generic"]`` → spec classes."""
    out = {}
    for item in items:
        parts = item.split(":")
        try:
            name, freq = parts[0], float(parts[1]) if len(parts) > 1 else 1.0
        except ValueError:
            raise UserError(f"--classes item '{item}' must be name:frequency[:types].") from None
        if len(parts) > 2:
            kinds = tuple(parts[2].split("+"))
        else:
            kinds = (name,) if name in SHIP_TYPES else tuple(SHIP_TYPES)
        bad = [k for k in kinds if k not in SHIP_TYPES]
        if bad or freq <= 0:
            raise UserError(
                f"--classes item '{item}': frequency must be > 0 and types among "
                f"{sorted(SHIP_TYPES)}."
            )
        out[name] = (freq, kinds)
    return out


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (must not hold another set)")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", default=["ship:1"])
    p.add_argument("--looks", type=int, nargs=2, default=[1, 4], metavar=("MIN", "MAX"))
    p.add_argument("--scr-db", type=float, nargs=2, default=[3.0, 20.0], metavar=("MIN", "MAX"))
    p.add_argument(
        "--ships",
        type=int,
        nargs=2,
        default=[0, 7],
        metavar=("MIN", "MAX"),
        help="ships per image (inclusive range)",
    )
    p.add_argument(
        "--short-fraction", type=float, default=0.4, help="fraction of short hulls (<= 24 px long)"
    )
    p.add_argument("--hard-negative-prob", type=float, default=0.45)
    p.add_argument("--ext", choices=("png", "tif"), default="png")
    args = p.parse_args(argv)

    def run() -> int:
        spec = SyntheticSARSpec(
            num_images=args.num_images,
            height=args.size[0],
            width=args.size[1],
            seed=args.seed,
            classes=parse_classes(args.classes),
            looks=tuple(args.looks),
            scr_db=tuple(args.scr_db),
            ships_per_image=tuple(args.ships),
            short_fraction=args.short_fraction,
            hard_negative_prob=args.hard_negative_prob,
            ext=args.ext,
        )
        if min(spec.height, spec.width) < 32 or spec.num_images < 1:
            raise UserError("--size must be at least 32x32 and --num-images at least 1.")
        t0 = time.time()
        path = generate_synthetic_sar(args.out, spec)
        print(f"{path}: {spec.num_images} images in {time.time() - t0:.1f} s")
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
