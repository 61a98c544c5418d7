"""All per-(image, category) box IoU matrices of a COCO evaluation, computed in one pass.

COCO's ``computeIoU(imgId, catId)`` is called once per image and category from Python; for
large result files that loop is a noticeable share of faster-coco-eval's run time. This module
computes the same matrices vectorised over all pairs, with COCO's exact arithmetic (same
operations in float64, so the values are bit-identical) and COCO's ordering: detections of an
(image, category) sorted by descending score with a stable sort and cut to ``max_dets``;
ground truth in dataset order; crowd boxes scored as intersection over the detection's area.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["iou_matrices"]


def _pairs(det_group: np.ndarray, gt_group: np.ndarray, n_groups: int):
    """All (det, gt) index pairs of the same group; both inputs sorted by group."""
    g_start = np.searchsorted(gt_group, np.arange(n_groups), side="left")
    g_count = np.bincount(gt_group, minlength=n_groups)
    per_det = g_count[det_group]
    total = int(per_det.sum())
    d_idx = np.repeat(np.arange(len(det_group)), per_det)
    offsets = np.arange(total) - np.repeat(np.cumsum(per_det) - per_det, per_det)
    return d_idx, g_start[det_group][d_idx] + offsets


def iou_matrices(
    gt_anns: Sequence[dict[str, Any]],
    det_image: np.ndarray,
    det_category: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    cat_ids: Sequence[int],
    max_dets: int,
) -> dict[tuple[int, int], np.ndarray]:
    """``{(image_id, category_id): D×G IoU}`` for every pair with detections and ground truth.

    ``gt_anns`` are COCO annotations (integer ``image_id``); detections are given as arrays
    (image ids, category ids, XYWH boxes N×4, scores) in results-file order.
    """
    cats = np.asarray(sorted(cat_ids), dtype=np.int64)
    if not len(gt_anns) or not len(det_image) or not len(cats):
        return {}
    g_img = np.fromiter((a["image_id"] for a in gt_anns), np.int64, len(gt_anns))
    g_cat = np.fromiter((a["category_id"] for a in gt_anns), np.int64, len(gt_anns))
    g_box = np.asarray([a["bbox"] for a in gt_anns], dtype=np.float64).reshape(-1, 4)
    g_crowd = np.fromiter((bool(a.get("iscrowd", 0)) for a in gt_anns), bool, len(gt_anns))
    keep_g = np.isin(g_cat, cats)
    keep_d = np.isin(det_category, cats)
    images = np.unique(np.concatenate([g_img[keep_g], det_image[keep_d]]))
    n_groups = len(images) * len(cats)

    def group(img: np.ndarray, cat: np.ndarray) -> np.ndarray:
        return np.searchsorted(images, img) * len(cats) + np.searchsorted(cats, cat)

    gi = np.where(keep_g)[0]
    gg = group(g_img[gi], g_cat[gi])
    order = np.argsort(gg, kind="stable")  # dataset order inside a group
    gi, gg = gi[order], gg[order]

    di = np.where(keep_d)[0]
    dg = group(det_image[di], det_category[di])
    order = np.lexsort((-det_scores[di], dg))  # stable: ties keep results-file order
    di, dg = di[order], dg[order]
    start = np.searchsorted(dg, dg, side="left")
    rank = np.arange(len(dg)) - start
    di, dg = di[rank < max_dets], dg[rank < max_dets]

    pd, pg = _pairs(dg, gg, n_groups)
    d, g = det_boxes[di[pd]], g_box[gi[pg]]
    # COCO's bbox IoU, operation for operation (maskApi bbIou).
    w = np.minimum(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.maximum(d[:, 0], g[:, 0])
    h = np.minimum(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.maximum(d[:, 1], g[:, 1])
    inter = w * h
    da = d[:, 2] * d[:, 3]
    union = np.where(g_crowd[gi[pg]], da, da + g[:, 2] * g[:, 3] - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where((w > 0) & (h > 0), inter / union, 0.0)

    d_count = np.bincount(dg, minlength=n_groups)
    g_count = np.bincount(gg, minlength=n_groups)
    sizes = d_count * g_count
    nonempty = np.nonzero(sizes)[0]
    bounds = np.cumsum(sizes)
    out: dict[tuple[int, int], np.ndarray] = {}
    img_list, cat_list = images.tolist(), cats.tolist()
    n_cat = len(cats)
    for k in nonempty.tolist():
        block = iou[bounds[k] - sizes[k] : bounds[k]].reshape(d_count[k], g_count[k])
        out[(img_list[k // n_cat], cat_list[k % n_cat])] = block
    return out
