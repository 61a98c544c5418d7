#!/usr/bin/env python
"""YOLO txt labels → COCO json.

    python datasets/prepare_yolo.py --images data/ships/images/train \
        --labels data/ships/labels/train --classes ship --out data/ships/train.json

Classes come from --classes or from the ``names`` of a YOLO ``data.yaml`` (--data-yaml).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from detlab.data.converters import write_json, yolo_to_coco
from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError


def _names_from_yaml(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        names = (yaml.safe_load(f) or {}).get("names")
    if isinstance(names, dict):  # {0: ship, 1: boat}
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise UserError(f"{path} has no 'names' list of classes.")


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", required=True, help="image folder (searched recursively)")
    p.add_argument("--labels", required=True, help="label folder mirroring --images")
    p.add_argument("--classes", nargs="+", help="class names in index order")
    p.add_argument("--data-yaml", help="YOLO data.yaml holding the class names")
    p.add_argument("--out", required=True, help="output COCO json")
    args = p.parse_args(argv)

    def run() -> int:
        if args.classes:
            classes = args.classes
        elif args.data_yaml:
            classes = _names_from_yaml(args.data_yaml)
        else:
            raise UserError("Give the class names with --classes or --data-yaml.")
        data = yolo_to_coco(args.images, args.labels, classes)
        write_json(data, args.out)
        print(
            f"{args.out}: {len(data['images'])} images, {len(data['annotations'])} boxes; "
            f"image_root = {args.images}"
        )
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
