#!/usr/bin/env python
"""YOLO txt dataset → COCO json, through the same reader training uses.

    python datasets/prepare_yolo.py --root data/ships --split val --out data/ships/val.json
    python datasets/prepare_yolo.py --images data/ships/images/train \
        --labels data/ships/labels/train --names ship boat --out data/ships/train.json

``--root`` is a folder (with a data.yaml, or images/<split> + labels/<split>) or a data.yaml.
Class names come from --names (names, or one classes.txt / data.yaml), else the data.yaml or a
classes.txt. Not needed for training (``DATASETS.REGISTER`` takes ``format: yolo`` directly).
Every irregularity found is printed on stderr with a count and examples.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from detlab.data.converters import to_coco, write_json
from detlab.data.datasets.yolo import read_yolo
from detlab.utils.cli import DetlabArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", help="dataset folder or data.yaml")
    p.add_argument("--split", help="train, val, test, ... (a data.yaml key or images/<split>)")
    p.add_argument("--images", help="image folder (searched recursively) or a .txt list")
    p.add_argument("--labels", help="label folder mirroring --images")
    p.add_argument("--names", "--classes", nargs="+", help="class names in id order, or a file")
    p.add_argument("--data-yaml", help="(old option) a data.yaml holding the class names")
    p.add_argument("--out", required=True, help="output COCO json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def run() -> int:
        names = args.names
        if names and len(names) == 1 and os.path.isfile(names[0]):
            names = names[0]
        result = read_yolo(
            args.root,
            args.split,
            images=args.images,
            labels=args.labels,
            names=names or args.data_yaml,
        )
        data = to_coco(result)
        write_json(data, args.out)
        print(
            f"{args.out}: {len(data['images'])} images, {len(data['annotations'])} boxes, "
            f"classes {result.classes}; image_root = {result.image_root}"
        )
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
