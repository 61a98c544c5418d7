#!/usr/bin/env python
"""Deterministic, leak-free train/val/test split of a COCO json, stratified by class.

    python datasets/split_coco.py --json all.json --image-root images/ --ratios 0.8 0.1 0.1 \
        --seed 0 --out-dir splits/ [--group-field video_id | --group-pattern '^(seq\\d+)_']

writes ``splits/train.json``, ``splits/val.json``, ``splits/test.json`` (same categories, same
``file_name`` values, so the image root does not change). A file_name listed twice is refused;
byte-identical images (compared by content under --image-root, default the json's folder) stay
in one split; with a group key, all images of one sequence/video stay in one split.
"""

from __future__ import annotations

import argparse
import os
import sys

from detlab.data.converters import write_json
from detlab.data.split import split_coco
from detlab.evaluation.coco_io import load_json_file
from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", required=True, help="COCO json to split")
    p.add_argument("--image-root", help="folder the file_names are relative to (default: json's)")
    p.add_argument(
        "--no-content-check",
        action="store_true",
        help="do not compare image contents (when the images are not at hand)",
    )
    p.add_argument("--ratios", nargs="+", type=float, default=[0.8, 0.1, 0.1])
    p.add_argument("--names", nargs="+", help="split names (default train val test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-field", help="image field that keeps a group together (video_id)")
    p.add_argument("--group-pattern", help="regex over file_name; its first group is the key")
    p.add_argument("--out-dir", required=True)
    args = p.parse_args(argv)

    def run() -> int:
        data = load_json_file(args.json, "COCO json")
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise UserError(f"COCO json {args.json} has no 'images' list; is it a COCO file?")
        root = None
        if not args.no_content_check:
            root = args.image_root or os.path.dirname(os.path.abspath(args.json))
        plans: list = []
        parts = split_coco(
            data,
            args.ratios,
            args.seed,
            args.names,
            image_root=root,
            group_field=args.group_field,
            group_pattern=args.group_pattern,
            plan=plans,
        )
        plan = plans[0]
        if root is not None:
            print(
                f"kept {plan.identical_groups} groups of byte-identical images "
                f"({plan.identical_images} images) within one split each"
            )
        if args.group_field or args.group_pattern:
            print(
                f"kept {plan.key_groups} groups sharing a group key within one split each "
                f"({plan.unmatched} images without a key)"
            )
        for name, part in parts.items():
            path = os.path.join(args.out_dir, f"{name}.json")
            write_json(part, path)
            print(f"{path}: {len(part['images'])} images, {len(part['annotations'])} boxes")
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
