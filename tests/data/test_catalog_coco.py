"""Catalog, COCO loading/registration, config registration and id mapping."""

from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from detlab.config import get_cfg
from detlab.data import (
    DatasetCatalog,
    MetadataCatalog,
    load_coco_json,
    register_coco_instances,
    register_from_config,
)
from detlab.utils.errors import UserError


def _write_coco(path, images, anns, cats):
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def _sample(tmp_path):
    images = [
        {"id": 10, "file_name": "a.png", "height": 50, "width": 60},
        {"id": 11, "file_name": "b.png", "height": 50, "width": 60},
    ]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 7, "bbox": [1, 2, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 3, "bbox": [55, 40, 20, 20], "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 7, "bbox": [5, 5, 0, 4], "iscrowd": 0},
        {"id": 4, "image_id": 11, "category_id": 3, "bbox": [5, 5, 4, 4], "iscrowd": 1},
    ]
    cats = [{"id": 7, "name": "tanker"}, {"id": 3, "name": "cargo"}]
    return _write_coco(tmp_path / "ann.json", images, anns, cats)


def test_contiguous_ids_clipping_and_metadata(tmp_path):
    path = _sample(tmp_path)
    register_coco_instances("t_coco_a", {}, path, str(tmp_path))
    try:
        meta = MetadataCatalog.get("t_coco_a")
        # ids sorted ascending: 3 -> 0, 7 -> 1
        assert meta.thing_classes == ["cargo", "tanker"]
        assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 7: 1}
        assert meta.evaluator_type == "coco" and meta.json_file == path
        dicts = DatasetCatalog.get("t_coco_a")
        by_id = {d["image_id"]: d for d in dicts}
        a = by_id[10]["annotations"]
        assert [x["category_id"] for x in a] == [1, 0]
        assert a[1]["bbox"] == [55.0, 40.0, 5.0, 10.0]  # clipped to the 60x50 image
        # the zero-width box is dropped; the crowd box stays (with its flag)
        assert [x["iscrowd"] for x in by_id[11]["annotations"]] == [1]
        assert by_id[10]["file_name"] == str(tmp_path / "a.png")
        # same images/annotation count as pycocotools sees (minus the dropped box)
        coco = COCO(path)
        assert len(coco.getImgIds()) == len(dicts)
        assert len(coco.getAnnIds()) - 1 == sum(len(d["annotations"]) for d in dicts)
        assert "t_coco_a" in DatasetCatalog.list()
    finally:
        DatasetCatalog.remove("t_coco_a")
        MetadataCatalog.remove("t_coco_a")


def test_unknown_category_and_duplicate_image_fail_at_registration(tmp_path):
    imgs = [{"id": 1, "file_name": "a.png", "height": 5, "width": 5}]
    bad = _write_coco(
        tmp_path / "bad.json",
        imgs,
        [{"id": 9, "image_id": 1, "category_id": 42, "bbox": [0, 0, 1, 1]}],
        [{"id": 1, "name": "ship"}],
    )
    with pytest.raises(UserError, match=r"bad\.json.*42"):
        register_coco_instances("t_bad_cat", {}, bad, str(tmp_path))
    dup = _write_coco(tmp_path / "dup.json", imgs * 2, [], [{"id": 1, "name": "ship"}])
    with pytest.raises(UserError, match=r"dup\.json.*duplicate image id 1"):
        load_coco_json(dup, str(tmp_path))
    for n in ("t_bad_cat",):
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


def test_register_from_config_relative_paths(tmp_path):
    _sample(tmp_path)
    cfg_file = tmp_path / "my.yaml"
    cfg_file.write_text(
        "DATASETS:\n  REGISTER:\n    - {name: t_cfg_set, json_file: ann.json, image_root: .}\n"
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(cfg_file))
    try:
        assert register_from_config(cfg) == ["t_cfg_set"]
        assert register_from_config(cfg) == []  # idempotent
        assert len(DatasetCatalog.get("t_cfg_set")) == 2
        assert MetadataCatalog.get("t_cfg_set").image_root == str(tmp_path)
    finally:
        DatasetCatalog.remove("t_cfg_set")
        MetadataCatalog.remove("t_cfg_set")
    cfg.DATASETS.REGISTER = [{"name": "t_missing", "json_file": str(tmp_path / "nope.json")}]
    with pytest.raises(UserError, match="nope.json does not exist"):
        register_from_config(cfg)


def test_unknown_dataset_name_suggests():
    with pytest.raises(UserError, match="sar_ships_synth_train"):
        DatasetCatalog.get("sar_ships_synth_trian")


def test_nan_and_infinite_boxes_are_dropped_and_counted(tmp_path):
    """json accepts NaN and Infinity literals; such boxes never reach the dataset."""
    from detlab.data.datasets.coco import load_stats

    images = [{"id": 1, "file_name": "a.png", "height": 50, "width": 60}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 5]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [float("nan"), 2, 10, 5]},
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [1, 2, float("nan"), 5]},
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [1, 2, float("inf"), 5]},
    ]
    path = _write_coco(tmp_path / "nan.json", images, anns, [{"id": 1, "name": "ship"}])
    assert "NaN" in (tmp_path / "nan.json").read_text()
    register_coco_instances("t_coco_nan", {}, path, str(tmp_path))
    try:
        (d,) = DatasetCatalog.get("t_coco_nan")
        assert [a["bbox"] for a in d["annotations"]] == [[1.0, 2.0, 10.0, 5.0]]
        assert load_stats(path)["dropped_boxes"] == 3
    finally:
        DatasetCatalog.remove("t_coco_nan")
        MetadataCatalog.remove("t_coco_nan")
