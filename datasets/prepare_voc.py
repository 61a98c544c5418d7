#!/usr/bin/env python
"""Pascal VOC folder (e.g. SSDD) → COCO json, through the same reader training uses.

    python datasets/prepare_voc.py --voc-root data/SSDD --split train --out data/SSDD/train.json

Not needed for training (``DATASETS.REGISTER`` takes ``format: voc`` directly); use it to get a
json for other tools. Every irregularity found (stale <filename> tags, sizes that disagree with
the image file, boxes dropped or clipped, ...) is printed on stderr with a count and examples.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from detlab.data.converters import to_coco, write_json
from detlab.data.datasets.voc import read_voc
from detlab.utils.cli import DetlabArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--voc-root", required=True, help="folder with Annotations/ and JPEGImages/")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt or a list file (default: every XML)")
    p.add_argument("--image-dir", help="image folder inside --voc-root (default: JPEGImages/)")
    p.add_argument("--annotation-dir", help="XML folder inside --voc-root (default: Annotations/)")
    p.add_argument("--classes", nargs="+", help="class names in id order, or one names file")
    p.add_argument(
        "--difficult",
        choices=("keep", "crowd", "drop"),
        default="keep",
        help="what to do with objects marked difficult",
    )
    p.add_argument(
        "--zero-based", action="store_true", help="corners are 0-based, not VOC's 1-based"
    )
    p.add_argument("--out", required=True, help="output COCO json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def run() -> int:
        classes = args.classes
        if classes and len(classes) == 1 and os.path.isfile(classes[0]):
            classes = classes[0]  # a names file
        result = read_voc(
            args.voc_root,
            args.split,
            classes,
            image_dir=args.image_dir,
            annotation_dir=args.annotation_dir,
            difficult=args.difficult,
            one_based=not args.zero_based,
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
