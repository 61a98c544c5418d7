#!/usr/bin/env python
"""Fail CI when the quick start's final bbox AP50 drops below the regression floor.

Reads OUTPUT_DIR/final_metrics.json of configs/quickstart/sar_ships_cpu.yaml (written by the
README's main-job command, run from the repository root just before this script), or the
final_metrics.json given as the only argument.
"""

from __future__ import annotations

import json
import math
import os
import sys

CONFIG = "configs/quickstart/sar_ships_cpu.yaml"
# Regression floor on bbox AP50 (percent): the recipe's 85 target. Measured: 95.4 on
# 2026-11-22 (2-core shared VM); the margin absorbs machine-to-machine float differences.
# Raise it as the recipe improves.
FLOOR_AP50 = 85.0


def main(argv: list[str]) -> int:
    if argv:
        path = argv[0]
    else:
        os.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from detlab.config import load_config

        path = os.path.join(load_config(CONFIG).OUTPUT_DIR, "final_metrics.json")
    if not os.path.isfile(path):
        print(f"quick start check FAILED: {path} does not exist (did the main job run?)")
        return 1
    with open(path, encoding="utf-8") as f:
        metrics = json.load(f)
    bbox = metrics.get("bbox") or {}
    ap50 = bbox.get("AP50")
    if not isinstance(ap50, (int, float)) or not math.isfinite(ap50):
        print(f"quick start check FAILED: {path} has no finite bbox AP50")
        return 1
    summary = f"bbox AP50 {ap50:.2f}, AP {bbox.get('AP', float('nan')):.2f}, APs " + (
        f"{bbox['APs']:.2f}" if isinstance(bbox.get("APs"), (int, float)) else "n/a"
    )
    if ap50 < FLOOR_AP50:
        print(f"quick start check FAILED: {summary} is below the floor of AP50 {FLOOR_AP50:g}")
        return 1
    print(f"quick start check passed: {summary} (floor AP50 {FLOOR_AP50:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
