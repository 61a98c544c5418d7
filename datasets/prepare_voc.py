#!/usr/bin/env python
"""Pascal VOC XML (e.g. SSDD) → COCO json.

python datasets/prepare_voc.py --voc-root data/SSDD --split train --out data/SSDD/train.json
"""

from __future__ import annotations

import argparse
import sys

from detlab.data.converters import voc_to_coco, write_json
from detlab.utils.cli import DetlabArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--voc-root", required=True, help="folder with Annotations/ and JPEGImages/")
    p.add_argument("--split", help="ImageSets/Main/<split>.txt to use (default: every XML)")
    p.add_argument("--image-dir", default="JPEGImages", help="image folder inside --voc-root")
    p.add_argument("--classes", nargs="+", help="class names in id order (default: sorted)")
    p.add_argument(
        "--difficult",
        choices=("keep", "crowd", "drop"),
        default="keep",
        help="what to do with objects marked difficult",
    )
    p.add_argument("--out", required=True, help="output COCO json")
    args = p.parse_args(argv)

    def run() -> int:
        data = voc_to_coco(args.voc_root, args.split, args.classes, args.image_dir, args.difficult)
        write_json(data, args.out)
        print(
            f"{args.out}: {len(data['images'])} images, {len(data['annotations'])} boxes, "
            f"classes {[c['name'] for c in data['categories']]}; image_root = "
            f"{args.voc_root}/{args.image_dir}"
        )
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
