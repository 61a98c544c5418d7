"""Detection matching at one IoU and one score threshold: per-class P/R/F1 and a confusion matrix.

Torch-free and vectorised over all images. Only detections with ``score >= score_thresh`` take
part. Matching, per image:

1. **Same class** (COCO's greedy rule): detections in descending score order each take the
   not-yet-matched non-crowd ground-truth box of their class with the highest IoU
   ``>= iou_thresh``. These are the true positives.
2. **Crowd**: an unmatched detection covered by a crowd box of its class (intersection over
   the detection's area ``>= iou_thresh``, COCO's crowd rule) is ignored.
3. **Other class**: remaining detections, in score order, take the unmatched ground-truth box
   of another class with the highest IoU ``>= iou_thresh``: a class confusion.
4. Left-over detections are false positives on background; left-over ground truth is missed.

The confusion matrix is (K+1)×(K+1): rows are ground-truth classes then ``background``,
columns predicted classes then ``background``. Its diagonal holds the true positives of step 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["DetectionArrays", "MatchResult", "match_detections"]


@dataclass
class DetectionArrays:
    """Detections as arrays: image index (into ``gt["images"]``), class index (into
    ``cat_ids``), XYWH boxes (N×4, px) and scores (N)."""

    image_index: np.ndarray
    class_index: np.ndarray
    boxes_xywh: np.ndarray
    scores: np.ndarray


@dataclass
class MatchResult:
    """Counts from :func:`match_detections` (index k follows ``cat_ids``)."""

    cat_ids: list[int]
    iou_thresh: float
    score_thresh: float
    tp: np.ndarray  # K, true positives
    fp: np.ndarray  # K, detections above the threshold that are not TP (crowd-ignored excluded)
    num_gt: np.ndarray  # K, non-crowd ground-truth boxes
    num_det: np.ndarray  # K, detections above the threshold (crowd-ignored excluded)
    confusion: np.ndarray  # (K+1)×(K+1), rows GT (+background), columns predicted (+background)

    def per_class(self) -> list[dict[str, float | None]]:
        """Precision, recall, F1 per class in percent; None where undefined (0/0)."""
        rows = []
        for k in range(len(self.cat_ids)):
            tp, nd, ng = float(self.tp[k]), float(self.num_det[k]), float(self.num_gt[k])
            p = tp / nd * 100.0 if nd > 0 else None
            r = tp / ng * 100.0 if ng > 0 else None
            if ng == 0:
                f1 = None
            elif p is None or p + r == 0:
                f1 = 0.0
            else:
                f1 = 2 * p * r / (p + r)
            rows.append({"precision": p, "recall": r, "F1": f1})
        return rows

    def macro_f1(self) -> float | None:
        """Mean F1 over classes that have ground truth (percent), or None if none has."""
        f1 = [row["F1"] for row in self.per_class() if row["F1"] is not None]
        return float(np.mean(f1)) if f1 else None


def _boxes(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    if not records:
        return np.zeros((0, 4), dtype=np.float64)
    xywh = np.asarray([r["bbox"] for r in records], dtype=np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)


def _pairs(det_img: np.ndarray, gt_img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (det, gt) index pairs within the same image; both inputs sorted by image index."""
    n_img = int(max(det_img.max(initial=-1), gt_img.max(initial=-1))) + 1
    g_start = np.searchsorted(gt_img, np.arange(n_img), side="left")
    g_count = np.bincount(gt_img, minlength=n_img)
    per_det = g_count[det_img]
    total = int(per_det.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    d_idx = np.repeat(np.arange(len(det_img)), per_det)
    offsets = np.arange(total) - np.repeat(np.cumsum(per_det) - per_det, per_det)
    g_idx = g_start[det_img][d_idx] + offsets
    return d_idx, g_idx


def _overlap(db: np.ndarray, gb: np.ndarray, crowd: bool) -> np.ndarray:
    """IoU of paired boxes (rows of db and gb); intersection over det area when ``crowd``."""
    iw = np.clip(np.minimum(db[:, 2], gb[:, 2]) - np.maximum(db[:, 0], gb[:, 0]), 0, None)
    ih = np.clip(np.minimum(db[:, 3], gb[:, 3]) - np.maximum(db[:, 1], gb[:, 1]), 0, None)
    inter = iw * ih
    area_d = (db[:, 2] - db[:, 0]) * (db[:, 3] - db[:, 1])
    area_g = (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1])
    union = area_d if crowd else area_d + area_g - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _greedy(d: np.ndarray, g: np.ndarray, iou: np.ndarray, det_free, gt_free) -> list:
    """Greedy matching of candidate pairs: det order first, then IoU descending."""
    order = np.lexsort((-iou, d))
    matches = []
    for di, gi in zip(d[order].tolist(), g[order].tolist(), strict=True):
        if det_free[di] and gt_free[gi]:
            det_free[di] = False
            gt_free[gi] = False
            matches.append((di, gi))
    return matches


def match_detections(
    gt: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]] | DetectionArrays,
    cat_ids: Sequence[int],
    iou_thresh: float = 0.5,
    score_thresh: float = 0.5,
) -> MatchResult:
    """Match ``predictions`` (COCO results list, or :class:`DetectionArrays`) to ``gt`` (COCO
    dict); see the module doc."""
    k_of = {c: k for k, c in enumerate(cat_ids)}
    n_cls = len(cat_ids)
    img_of = {img["id"]: i for i, img in enumerate(gt["images"])}

    if not isinstance(predictions, DetectionArrays):
        predictions = DetectionArrays(
            image_index=np.asarray([img_of[p["image_id"]] for p in predictions], dtype=np.int64),
            class_index=np.asarray([k_of[p["category_id"]] for p in predictions], dtype=np.int64),
            boxes_xywh=np.asarray([p["bbox"] for p in predictions], dtype=np.float64),
            scores=np.asarray([p.get("score", 1.0) for p in predictions], dtype=np.float64),
        )
    keep = np.where(predictions.scores >= score_thresh)[0]
    d_score = predictions.scores[keep]
    d_img = predictions.image_index[keep]
    # Sort by image, then by descending score (stable for ties, like COCO's mergesort).
    order = keep[np.lexsort((-d_score, d_img))]
    d_img = predictions.image_index[order]
    d_cls = predictions.class_index[order]
    xywh = predictions.boxes_xywh.reshape(-1, 4)[order]
    d_box = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)

    anns = gt.get("annotations") or []
    crowd_mask = np.asarray([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    a_img = np.asarray([img_of[a["image_id"]] for a in anns], dtype=np.int64)
    a_cls = np.asarray([k_of[a["category_id"]] for a in anns], dtype=np.int64)
    a_box = _boxes(anns)
    g_sel = np.where(~crowd_mask)[0]
    g_sel = g_sel[np.argsort(a_img[g_sel], kind="stable")]
    g_img, g_cls, g_box = a_img[g_sel], a_cls[g_sel], a_box[g_sel]
    c_sel = np.where(crowd_mask)[0]
    c_sel = c_sel[np.argsort(a_img[c_sel], kind="stable")]
    c_img, c_cls, c_box = a_img[c_sel], a_cls[c_sel], a_box[c_sel]

    det_free = [True] * len(d_img)
    gt_free = [True] * len(g_img)
    confusion = np.zeros((n_cls + 1, n_cls + 1), dtype=np.int64)
    tp = np.zeros(n_cls, dtype=np.int64)

    pd, pg = _pairs(d_img, g_img)
    piou = _overlap(d_box[pd], g_box[pg], crowd=False) if len(pd) else np.zeros(0)
    keep = piou >= iou_thresh
    pd, pg, piou = pd[keep], pg[keep], piou[keep]
    same = d_cls[pd] == g_cls[pg]
    # 1. same class
    for di, _gi in _greedy(pd[same], pg[same], piou[same], det_free, gt_free):
        tp[d_cls[di]] += 1
        confusion[d_cls[di], d_cls[di]] += 1
    # 2. crowd regions of the same class
    ignored = np.zeros(len(d_img), dtype=bool)
    cd, cg = _pairs(d_img, c_img)
    if len(cd):
        cov = _overlap(d_box[cd], c_box[cg], crowd=True)
        hit = (cov >= iou_thresh) & (d_cls[cd] == c_cls[cg])
        free = np.asarray(det_free, dtype=bool)
        ignored[cd[hit & free[cd]]] = True
        for di in np.where(ignored)[0].tolist():
            det_free[di] = False
    # 3. other classes
    other = ~same
    for di, gi in _greedy(pd[other], pg[other], piou[other], det_free, gt_free):
        confusion[g_cls[gi], d_cls[di]] += 1
    # 4. background
    free_d = np.asarray(det_free, dtype=bool)
    np.add.at(confusion[n_cls], d_cls[free_d], 1)
    free_g = np.asarray(gt_free, dtype=bool)
    np.add.at(confusion[:, n_cls], g_cls[free_g], 1)

    num_det = np.bincount(d_cls[~ignored], minlength=n_cls)
    num_gt = np.bincount(g_cls, minlength=n_cls)
    return MatchResult(
        cat_ids=list(cat_ids),
        iou_thresh=float(iou_thresh),
        score_thresh=float(score_thresh),
        tp=tp,
        fp=num_det - tp,
        num_gt=num_gt,
        num_det=num_det,
        confusion=confusion,
    )
