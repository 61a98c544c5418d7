"""``TEST.*`` defaults: evaluation period, detections per image, COCO backend, size buckets."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_test_defaults"]


def add_test_defaults(cfg: CN) -> None:
    cfg.TEST = CN()
    cfg.TEST.EVAL_PERIOD = 0  # 0 = evaluate only at the end of training
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    cfg.TEST.COCO_BACKEND = "faster_coco_eval"  # "faster_coco_eval" | "pycocotools"
