"""The vectorised IoU matrices equal COCO's own computeIoU, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from detlab.evaluation.coco_io import internal_ids, load_gt, load_predictions_arrays
from detlab.evaluation.fast_iou import iou_matrices


@pytest.mark.parametrize("seed", [0, 1])
def test_iou_matrices_equal_coco_compute_iou(coco_factory, seed):
    from faster_coco_eval.core.coco import COCO
    from faster_coco_eval.core.faster_eval_api import COCOeval_faster

    gt, dets = coco_factory(seed, num_images=20, dets_per_image=40)
    gt = load_gt(gt)
    preds, boxes, scores = load_predictions_arrays(dets, gt)
    gt, preds = internal_ids(gt, preds)
    img = np.array([d["image_id"] for d in preds])
    cat = np.array([d["category_id"] for d in preds])
    cat_ids = sorted(c["id"] for c in gt["categories"])
    max_dets = 7  # small, so that the per-(image, class) cut is exercised
    ours = iou_matrices(gt["annotations"], img, cat, boxes, scores, cat_ids, max_dets)

    coco_gt, coco_dt = COCO(), COCO()
    coco_gt.dataset = gt
    coco_gt.createIndex()
    coco_dt.dataset = {**gt, "annotations": preds}
    coco_dt.createIndex()
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a: None)
    ev.params.maxDets = [1, 3, max_dets]
    ev._prepare()
    n_nonempty = 0
    for image in gt["images"]:
        for c in cat_ids:
            ref = ev.computeIoU(image["id"], c)
            if len(ref) == 0:
                assert (image["id"], c) not in ours
                continue
            n_nonempty += 1
            np.testing.assert_array_equal(ours[(image["id"], c)], np.asarray(ref))
    assert n_nonempty == len(ours) > 20
