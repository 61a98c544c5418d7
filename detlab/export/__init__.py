"""Deployment export: ONNX graphs of detlab detectors with post-processing included."""

from detlab.export.onnx import (
    DEFAULT_BOX_TOL,
    DEFAULT_SCORE_TOL,
    SampleCheck,
    compare_detections,
    export_onnx,
    measure_latency,
    run_onnx,
    verify_onnx,
)
from detlab.export.wrappers import FasterRCNNExport, FCOSExport, YOLOExport, build_export_wrapper

__all__ = [
    "DEFAULT_BOX_TOL",
    "DEFAULT_SCORE_TOL",
    "FCOSExport",
    "FasterRCNNExport",
    "SampleCheck",
    "YOLOExport",
    "build_export_wrapper",
    "compare_detections",
    "export_onnx",
    "measure_latency",
    "run_onnx",
    "verify_onnx",
]
