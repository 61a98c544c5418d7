#!/usr/bin/env python
"""Export a trained detector to ONNX (dynamic image size, NMS in the graph), verify it.

python tools/export_onnx.py --config-file CFG.yaml MODEL.WEIGHTS out/model_final.pth \
    --output model.onnx

YOLO, FCOS and FasterRCNN. The ONNX model takes one image 1xCxHxW float32 on the 0..255 scale
(after the test-time resize) and returns boxes (XYXY, input pixels), scores and classes.
onnxruntime checks that detections match eager PyTorch on test images (boxes within
--box-tol px, scores within --score-tol, same classes) and both are timed.
"""

import sys

from detlab.export.cli import main

if __name__ == "__main__":
    sys.exit(main())
