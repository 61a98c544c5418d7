"""Detection matching: a hand-checked confusion matrix and TP counts against pycocotools."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from detlab.evaluation.matching import match_detections

A, B = 1, 2


def _gt():
    images = [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": A, "bbox": [0, 0, 10, 10], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": B, "bbox": [20, 0, 10, 10], "iscrowd": 0},
        {"id": 3, "image_id": 1, "category_id": A, "bbox": [50, 50, 40, 40], "iscrowd": 1},
        {"id": 4, "image_id": 2, "category_id": B, "bbox": [0, 0, 10, 10], "iscrowd": 0},
    ]
    for a in anns:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    cats = [{"id": A, "name": "a"}, {"id": B, "name": "b"}]
    return {"images": images, "annotations": anns, "categories": cats}


def _det(img, cat, box, score):
    return {"image_id": img, "category_id": cat, "bbox": box, "score": score}


def test_hand_checked_confusion_matrix():
    dets = [
        _det(1, A, [0, 0, 10, 10], 0.9),  # true positive for a
        _det(1, A, [1, 0, 10, 10], 0.8),  # duplicate: its a-box is taken -> background FP
        _det(1, A, [20, 0, 10, 10], 0.7),  # on the b box: b confused as a
        _det(1, B, [55, 55, 10, 10], 0.9),  # inside an a-crowd, but class b -> background FP
        _det(1, A, [55, 55, 10, 10], 0.6),  # inside the a-crowd -> ignored
        _det(1, A, [0, 0, 10, 10], 0.3),  # below the score threshold
    ]  # image 2: its b box is missed
    r = match_detections(_gt(), dets, [A, B], iou_thresh=0.5, score_thresh=0.5)
    expected = np.array(
        [
            [1, 0, 0],  # gt a: found once
            [1, 0, 1],  # gt b: taken for a once, missed once
            [1, 1, 0],  # background: one a and one b false positive
        ]
    )
    np.testing.assert_array_equal(r.confusion, expected)
    assert r.tp.tolist() == [1, 0] and r.num_det.tolist() == [3, 1]
    assert r.num_gt.tolist() == [1, 2] and r.fp.tolist() == [2, 1]
    pc = r.per_class()
    assert pc[0]["precision"] == pytest.approx(100 / 3) and pc[0]["recall"] == 100.0
    assert pc[0]["F1"] == pytest.approx(50.0)
    assert pc[1] == {"precision": 0.0, "recall": 0.0, "F1": 0.0}
    assert r.macro_f1() == pytest.approx(25.0)


def test_thresholds_change_the_counts():
    dets = [_det(1, A, [0, 0, 10, 10], 0.9), _det(1, A, [20, 0, 10, 10], 0.4)]
    low = match_detections(_gt(), dets, [A, B], score_thresh=0.3)
    assert low.confusion[1, 0] == 1  # the 0.4 detection now confuses b for a
    shifted = [_det(1, A, [3, 0, 10, 10], 0.9)]  # IoU 70/130 = 0.54 with the a box
    assert match_detections(_gt(), shifted, [A, B], iou_thresh=0.5).tp[0] == 1
    assert match_detections(_gt(), shifted, [A, B], iou_thresh=0.6).tp[0] == 0


def test_no_detections_and_class_without_gt():
    r = match_detections(_gt(), [], [A, B, 3])
    assert r.confusion[:, 3].tolist() == [1, 2, 0, 0]
    pc = r.per_class()
    assert pc[0] == {"precision": None, "recall": 0.0, "F1": 0.0}
    assert pc[2] == {"precision": None, "recall": None, "F1": None}
    assert r.macro_f1() == 0.0


@pytest.mark.parametrize("seed", [0, 1])
def test_true_positives_equal_pycocotools_matching(coco_factory, seed):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = coco_factory(seed)
    thr = 0.5
    kept = [d for d in dets if d["score"] >= thr]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(kept)), "bbox")
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]
        ev.params.maxDets = [1000]
        ev.evaluate()
    cats = sorted(c["id"] for c in gt["categories"])
    tp = dict.fromkeys(cats, 0)
    n_det = dict.fromkeys(cats, 0)
    for e in ev.evalImgs:
        if e is None:
            continue
        matched = e["dtMatches"][0] > 0
        ignored = e["dtIgnore"][0].astype(bool)
        tp[e["category_id"]] += int(np.sum(matched & ~ignored))
        n_det[e["category_id"]] += int(np.sum(~ignored))
    r = match_detections(gt, dets, cats, iou_thresh=thr, score_thresh=thr)
    assert r.tp.tolist() == [tp[c] for c in cats]
    assert r.num_det.tolist() == [n_det[c] for c in cats]
    # every detection and every non-crowd box lands in exactly one cell
    n_gt = sum(1 for a in gt["annotations"] if not a["iscrowd"])
    assert r.confusion[:-1].sum() == n_gt
    assert r.confusion[:, :-1].sum() == r.num_det.sum()


def test_array_input_equals_record_input(coco_factory):
    from detlab.evaluation.coco_metrics import evaluate_coco

    gt, dets = coco_factory(5)
    m = evaluate_coco(gt, dets)  # renumbered records plus their arrays
    from_arrays = match_detections(m.gt, m.det_arrays, m.cat_ids, 0.5, 0.3)
    from_records = match_detections(gt, dets, m.cat_ids, 0.5, 0.3)
    np.testing.assert_array_equal(from_arrays.confusion, from_records.confusion)
    np.testing.assert_array_equal(from_arrays.tp, from_records.tp)
