"""Evaluation: COCO box metrics by size and class, matching, reports, plots, leaderboards.

Importing this package does not import torch: the COCO metric core, reports and leaderboards
are torch-free, and the model-facing functions import torch when called.
"""

from detlab.evaluation.coco_metrics import (
    COCO_AREA_RANGES,
    CocoMetrics,
    evaluate_coco,
    parse_area_ranges,
)
from detlab.evaluation.evaluator import (
    COCOEvaluator,
    DatasetEvaluator,
    build_evaluator,
    inference_on_dataset,
)
from detlab.evaluation.leaderboard import leaderboard_rows, to_markdown, write_csv
from detlab.evaluation.matching import MatchResult, match_detections
from detlab.evaluation.report import EvaluationReport, run_evaluation, write_outputs

__all__ = [
    "COCO_AREA_RANGES",
    "COCOEvaluator",
    "CocoMetrics",
    "DatasetEvaluator",
    "EvaluationReport",
    "MatchResult",
    "build_evaluator",
    "evaluate_coco",
    "inference_on_dataset",
    "leaderboard_rows",
    "match_detections",
    "parse_area_ranges",
    "run_evaluation",
    "to_markdown",
    "write_csv",
    "write_outputs",
]
