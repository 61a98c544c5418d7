#!/usr/bin/env python
"""Evaluate detections: a COCO results file, a trained model, or a leaderboard of runs.

python tools/eval.py --gt GT.json --pred PRED.json [--out DIR] [--area-ranges tiny:0:256,...]
python tools/eval.py --config-file CFG.yaml MODEL.WEIGHTS model_final.pth [KEY VALUE ...]
python tools/eval.py --compare runs/a runs/b [--baseline a] [--baselines refs.yaml] [--out DIR]
"""

import sys

from detlab.evaluation.cli import main

if __name__ == "__main__":
    sys.exit(main())
