"""``TEST.*`` defaults: evaluation period, detections per image, COCO backend, size buckets."""

from detlab.config.config import CfgNode as CN

__all__ = ["add_test_defaults"]


def add_test_defaults(cfg: CN) -> None:
    cfg.TEST = CN()
    cfg.TEST.EVAL_PERIOD = 0  # 0 = evaluate only at the end of training
    cfg.TEST.DETECTIONS_PER_IMAGE = 100  # most detections kept per image after NMS
    cfg.TEST.COCO_BACKEND = "faster_coco_eval"  # "faster_coco_eval" | "pycocotools"
    # Named object-size buckets, "NAME:MIN_AREA:MAX_AREA" in px² of the original image; any
    # number of them, each reported overall and per class as AP<name>/AR<name> (APtiny), with
    # COCO's short APs/APm/APl for small/medium/large. Example with a tiny bucket:
    # ["tiny:0:256", "small:256:1024", "medium:1024:9216", "large:9216:1e10"].
    cfg.TEST.AREA_RANGES = ["small:0:1024", "medium:1024:9216", "large:9216:1e10"]
    # Per-class precision/recall/F1 and the confusion matrix count detections with
    # score >= MATCH_SCORE_THRESH matched to ground truth at IoU >= MATCH_IOU_THRESH.
    cfg.TEST.MATCH_SCORE_THRESH = 0.5
    cfg.TEST.MATCH_IOU_THRESH = 0.5  # IoU for a true positive in P/R/F1 and the confusion matrix
    cfg.TEST.WORST_K = 5  # classes with the lowest AP, listed first in the printed report
    # With an output directory, also draw pr_curves.png, size_ap.png, confusion_matrix.png.
    cfg.TEST.PLOTS = True
