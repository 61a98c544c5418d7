"""COCO metric core against pycocotools on randomised data."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest

from detlab.evaluation.coco_metrics import evaluate_coco, parse_area_ranges
from detlab.utils.errors import UserError

STANDARD = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def pycocotools_eval(gt: dict, dets: list[dict], area_rng=None, labels=None):
    """The reference: pycocotools' own loadRes/evaluate/accumulate/summarize."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if area_rng is not None:
            ev.params.areaRng = area_rng
            ev.params.areaRngLbl = labels
        ev.evaluate()
        ev.accumulate()
        if area_rng is None:
            ev.summarize()
    return ev


def ref_mean(a: np.ndarray) -> float | None:
    v = a[a > -1]
    return float(v.mean()) * 100 if v.size else None


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_standard_numbers_and_per_class_match_pycocotools(coco_factory, backend, seed):
    gt, dets = coco_factory(seed)
    assert any(a["iscrowd"] for a in gt["annotations"])
    ev = pycocotools_eval(gt, dets)
    m = evaluate_coco(gt, dets, backend=backend)
    res = m.results()
    for key, ref in zip(STANDARD, ev.stats, strict=True):
        if ref < 0:
            assert key not in res
        else:
            assert res[key] == pytest.approx(ref * 100, abs=1e-6), key
    # per class: AP over all IoUs, AP50, AP75, AP per size bucket
    p = ev.eval["precision"]
    t50, t75 = 0, 5
    cats = sorted(c["id"] for c in gt["categories"])
    names = {c["id"]: c["name"] for c in gt["categories"]}
    n_without_gt = 0
    for k, cid in enumerate(cats):
        name = names[cid]
        refs = {
            "AP": ref_mean(p[:, :, k, 0, -1]),
            "AP50": ref_mean(p[t50, :, k, 0, -1]),
            "AP75": ref_mean(p[t75, :, k, 0, -1]),
            "APs": ref_mean(p[:, :, k, 1, -1]),
            "APm": ref_mean(p[:, :, k, 2, -1]),
            "APl": ref_mean(p[:, :, k, 3, -1]),
        }
        for metric, ref in refs.items():
            key = f"{metric}-{name}"
            if ref is None:
                assert key not in res
            else:
                assert res[key] == pytest.approx(ref, abs=1e-6), key
        n_without_gt += refs["AP"] is None
    assert n_without_gt >= 1  # the data has a class without ground truth
    assert all(isinstance(v, float) and math.isfinite(v) for v in res.values())


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_custom_buckets_match_pycocotools_area_rng(coco_factory, backend):
    gt, dets = coco_factory(3, num_images=30)
    spec = "tiny:0:64,small:64:1024,mid:1024:9216,big:9216:inf"
    ranges = parse_area_ranges(spec)
    assert list(ranges) == ["tiny", "small", "mid", "big"]
    area_rng = [[0, 1e10]] + [list(v) for v in ranges.values()]
    ev = pycocotools_eval(gt, dets, area_rng, ["all", *ranges])
    m = evaluate_coco(gt, dets, area_ranges=spec, backend=backend)
    res = m.results()
    p, r = ev.eval["precision"], ev.eval["recall"]
    for a, suffix in enumerate(["tiny", "s", "mid", "big"], start=1):
        assert res[f"AP{suffix}"] == pytest.approx(ref_mean(p[:, :, :, a, -1]), abs=1e-6)
        assert res[f"AR{suffix}"] == pytest.approx(ref_mean(r[:, :, a, -1]), abs=1e-6)
    assert res["AP"] == pytest.approx(ref_mean(p[:, :, :, 0, -1]), abs=1e-6)
    assert res["AR100"] == pytest.approx(ref_mean(r[:, :, 0, -1]), abs=1e-6)


def test_bucket_without_gt_is_absent(coco_factory):
    gt, dets = coco_factory(4, num_images=10)
    res = evaluate_coco(gt, dets, area_ranges="huge:1e9:inf,rest:0:1e9").results()
    assert "APhuge" not in res and "ARhuge" not in res
    assert "APrest" in res and "ARrest" in res


def test_inputs_are_not_modified_and_files_work(coco_factory, tmp_path):
    gt, dets = coco_factory(5, num_images=10)
    gt_copy, dets_copy = copy.deepcopy(gt), copy.deepcopy(dets)
    in_memory = evaluate_coco(gt, dets).results()
    assert gt == gt_copy and dets == dets_copy
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(dets))
    from_files = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "pred.json")).results()
    assert from_files == pytest.approx(in_memory)


def test_empty_predictions_give_zeros_and_a_warning(coco_factory):
    gt, _ = coco_factory(6, num_images=10)
    with pytest.warns(UserWarning, match="no detections"):
        res = evaluate_coco(gt, []).results()
    assert res["AP"] == 0.0 and res["AR100"] == 0.0
    assert all(v == 0.0 for v in res.values())
    assert "AP-cls3" not in res  # class without ground truth stays absent


def test_perfect_predictions_give_100(coco_factory):
    gt, _ = coco_factory(7, num_images=10, crowd_rate=0.0)
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in gt["annotations"]
    ]
    res = evaluate_coco(gt, dets).results()
    assert res["AP"] == pytest.approx(100.0) and res["AR100"] == pytest.approx(100.0)


@pytest.mark.parametrize(
    "spec, match",
    [
        ("tiny:0", "NAME:MIN:MAX"),
        ("tiny:a:b", "must be numbers"),
        ("tiny:5:1", "0 <= min < max"),
        ("a:0:10,a:10:20", "used twice"),
        ("a:0:10,b:0:10", "duplicates"),
    ],
)
def test_bad_area_ranges(spec, match):
    with pytest.raises(UserError, match=match):
        parse_area_ranges(spec)


def test_area_range_forms_agree():
    a = parse_area_ranges("tiny:0:256,rest:256:inf")
    b = parse_area_ranges([["tiny", 0, 256], ["rest", 256, 1e10]])
    c = parse_area_ranges({"tiny": [0, 256], "rest": [256, float("inf")]})
    assert a == b == c
    assert list(parse_area_ranges(None)) == ["small", "medium", "large"]


def test_bad_backend(coco_factory):
    gt, dets = coco_factory(0, num_images=2)
    with pytest.raises(UserError, match="COCO_BACKEND"):
        evaluate_coco(gt, dets, backend="detectron")


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_string_image_ids_and_annotation_id_zero(coco_factory, backend):
    gt, dets = coco_factory(8, num_images=12)
    ref = pycocotools_eval(gt, dets)
    odd = copy.deepcopy(gt)
    names = {img["id"]: f"scene_{img['id']}.tif" for img in odd["images"]}
    for img in odd["images"]:
        img["id"] = names[img["id"]]
    for i, ann in enumerate(odd["annotations"]):
        ann["image_id"] = names[ann["image_id"]]
        ann["id"] = i  # starts at 0, which COCO tools read as "unmatched"
    odd_dets = [{**d, "image_id": names[d["image_id"]]} for d in dets]
    res = evaluate_coco(odd, odd_dets, backend=backend).results()
    for key, value in zip(STANDARD, ref.stats, strict=True):
        if value >= 0:
            assert res[key] == pytest.approx(value * 100, abs=1e-6), key


def test_duplicate_image_ids_are_refused(coco_factory):
    gt, dets = coco_factory(9, num_images=3)
    gt["images"].append(dict(gt["images"][0]))
    with pytest.raises(UserError, match="more than once"):
        evaluate_coco(gt, dets)
