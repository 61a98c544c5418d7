#!/usr/bin/env python
"""Report what detlab reads from a folder of event recordings (before training on it).

    python datasets/inspect_events.py --root datasets/etram/val --preset etram
    python datasets/inspect_events.py --root data/cam --classes person bike --sensor-size 480 640

Per recording: sensor, events, duration, timestamps repaired, windows, labelled windows,
boxes; then boxes per class and COCO size bucket, and the boxes clipped or dropped.
"""

from __future__ import annotations

import argparse
import sys

from detlab.data.datasets.events_report import event_dataset_report
from detlab.utils.cli import DetlabArgumentParser, run_tool


def main(argv: list[str] | None = None) -> int:
    p = DetlabArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--root", required=True, help="folder of recordings (searched recursively)")
    p.add_argument("--preset", choices=["etram", "gen1", "gen4"], help="classes and sensor size")
    p.add_argument("--classes", nargs="+", help="class names in label class_id order")
    p.add_argument("--class-ids", nargs="+", type=int, help="label class ids to keep, in order")
    p.add_argument("--window-us", type=int, default=50000, help="window length (µs)")
    p.add_argument("--sensor-size", nargs=2, type=int, metavar=("H", "W"))
    p.add_argument("--min-box-side", type=float, default=0.0)
    args = p.parse_args(argv)

    def run() -> int:
        print(
            event_dataset_report(
                args.root,
                preset=args.preset,
                classes=args.classes,
                class_ids=args.class_ids,
                window_us=args.window_us,
                sensor_size=tuple(args.sensor_size) if args.sensor_size else None,
                min_box_side=args.min_box_side,
            )
        )
        return 0

    return run_tool(run)


if __name__ == "__main__":
    sys.exit(main())
