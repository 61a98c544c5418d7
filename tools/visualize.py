#!/usr/bin/env python
"""Draw ground truth and/or predictions on dataset images and write PNGs.

python tools/visualize.py --config-file CFG.yaml [--dataset NAME] --output vis/
python tools/visualize.py --config-file CFG.yaml --predictions out/coco_instances_results.json
python tools/visualize.py --config-file CFG.yaml --source both MODEL.WEIGHTS out/model_final.pth
python tools/visualize.py --gt annotations.json --image-root images/ --output vis/

Ground truth is drawn solid, predictions dashed with their score; one colour per class.
16-bit / float single-channel images are shown with SAR scaling (dB, percentile stretch).
"""

import sys

from detlab.visualization.cli import main

if __name__ == "__main__":
    sys.exit(main())
