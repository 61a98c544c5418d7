#!/usr/bin/env python
"""Deterministic train/val/test split of a COCO json, stratified by class.

    python datasets/split_coco.py --json all.json --ratios 0.8 0.1 0.1 --seed 0 --out-dir splits/

writes ``splits/train.json``, ``splits/val.json``, ``splits/test.json`` (same categories, same
``file_name`` values, so the image root does not change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from detlab.data.converters import split_coco, write_json
from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", required=True, help="COCO json to split")
    p.add_argument("--ratios", nargs="+", type=float, default=[0.8, 0.1, 0.1])
    p.add_argument("--names", nargs="+", help="split names (default train val test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)

    def run() -> int:
        try:
            with open(args.json, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"Cannot read COCO json {args.json} ({err}).") from None
        for name, part in split_coco(data, args.ratios, args.seed, args.names).items():
            path = os.path.join(args.out_dir, f"{name}.json")
            write_json(part, path)
            print(f"{path}: {len(part['images'])} images, {len(part['annotations'])} boxes")
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
