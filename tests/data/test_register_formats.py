"""DATASETS.REGISTER with format coco / voc / yolo; COCO json checks; counts reach the loader."""

from __future__ import annotations

import json
import math
import os

import pytest

from detlab.config import get_cfg
from detlab.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_detection_train_loader,
    dataset_quirks,
    get_detection_dataset_dicts,
    load_coco_json,
    register_from_config,
)
from detlab.utils.errors import UserError


def test_voc_and_yolo_entries_with_paths_relative_to_the_config(tmp_path, folders, forget):
    folders.build_quirky_voc(tmp_path / "data" / "voc")
    folders.build_quirky_yolo(tmp_path / "data" / "ships")
    (tmp_path / "data" / "names.txt").write_text("ship\nboat\n")
    cfg_file = tmp_path / "cfg" / "mine.yaml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(
        "DATASETS:\n  REGISTER:\n"
        "    - {name: t_voc_tr, format: voc, root: ../data/voc, split: train, difficult: crowd}\n"
        "    - {name: t_yolo_va, format: yolo, root: ../data/ships, split: val,"
        " names: ../data/names.txt, thing_colors: [[255, 0, 0], [0, 255, 0]]}\n"
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(cfg_file))
    forget(["t_voc_tr", "t_yolo_va"])
    assert register_from_config(cfg) == ["t_voc_tr", "t_yolo_va"]
    assert register_from_config(cfg) == []
    voc = MetadataCatalog.get("t_voc_tr")
    assert voc.thing_classes == ["boat", "ship"] and voc.dataset_format == "voc"
    assert voc.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1} and voc.evaluator_type == "coco"
    dicts = DatasetCatalog.get("t_voc_tr")
    assert len(dicts) == 12 and sum(a["iscrowd"] for d in dicts for a in d["annotations"]) == 1
    assert dataset_quirks("t_voc_tr")["stale_filename"] == 1
    yolo = MetadataCatalog.get("t_yolo_va")
    assert yolo.thing_classes == ["ship", "boat"] and yolo.thing_colors == [
        [255, 0, 0],
        [0, 255, 0],
    ]
    assert len(DatasetCatalog.get("t_yolo_va")) == 2


@pytest.mark.parametrize(
    "entry, match",
    [
        (
            {"format": "voc", "root": ".", "spilt": "train"},
            "unknown field 'spilt'; did you mean 'split'",
        ),
        ({"format": "voc", "root": ".", "names": "x.txt"}, "'names' is not a field of format voc"),
        ({"format": "pascal", "root": "."}, "format must be one of coco, voc, yolo"),
        ({"format": "voc"}, "needs root, the VOC folder"),
        ({"format": "yolo"}, r"needs root \(folder or data.yaml\) or images"),
        ({"json_file": "nope.json"}, "nope.json does not exist"),
        ({"format": "voc", "root": ".", "split_ratios": {"a": -1}}, "must be non-negative"),
        ({"format": "voc", "root": ".", "split_ratios": {"a": 1}, "group_pattern": "("}, "group_p"),
    ],
)
def test_bad_entries_say_what_is_wrong(tmp_path, entry, match):
    cfg = get_cfg()
    cfg.DATASETS.REGISTER = [{"name": "t_bad_entry", **entry}]
    with pytest.raises(UserError, match=match):
        register_from_config(cfg)
    assert "t_bad_entry" not in DatasetCatalog


def _coco(tmp_path, folders, images, anns):
    for im in images:
        if not (tmp_path / im["file_name"]).exists():
            folders.write_image(tmp_path / im["file_name"], 20, 30)
    path = tmp_path / "ann.json"
    cats = [{"id": 1, "name": "ship"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return str(path)


def test_coco_duplicates_are_errors(tmp_path, folders):
    img = {"height": 20, "width": 30}
    path = _coco(
        tmp_path,
        folders,
        [{"id": 1, "file_name": "a.png", **img}, {"id": 2, "file_name": "./a.png", **img}],
        [],
    )
    with pytest.raises(UserError, match=r"images 1 and 2 have the same file_name"):
        load_coco_json(path, str(tmp_path))
    os.symlink(tmp_path / "a.png", tmp_path / "b.png")
    path = _coco(
        tmp_path,
        folders,
        [{"id": 1, "file_name": "a.png", **img}, {"id": 2, "file_name": "b.png", **img}],
        [],
    )
    with pytest.raises(UserError, match=r"images 1 and 2 have the same file \("):
        load_coco_json(path, str(tmp_path))


def test_coco_bad_boxes_and_orphans_are_dropped_and_counted(tmp_path, folders, forget):
    from detlab.data import register_coco_instances

    images = [
        {"id": 1, "file_name": "a.png", "height": 20, "width": 30},
        {"id": 2, "file_name": "b.png"},
    ]
    boxes = [
        [1, 1, 5, 5],
        [math.nan, 1, 5, 5],
        [1, 1, math.inf, 5],
        [1, 1, -4, 5],
        [20, 10, 20, 5],
        [1, 1, 3],
    ]
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(boxes)]
    anns.append({"id": 99, "image_id": 7, "category_id": 1, "bbox": [1, 1, 2, 2]})
    path = _coco(tmp_path, folders, images, anns)
    forget(["t_coco_q"])
    register_coco_instances("t_coco_q", {}, path, str(tmp_path))
    dicts = {d["image_id"]: d for d in DatasetCatalog.get("t_coco_q")}
    assert [a["bbox"] for a in dicts[1]["annotations"]] == [
        [1.0, 1.0, 5.0, 5.0],
        [20.0, 10.0, 10.0, 5.0],
    ]
    assert (dicts[2]["height"], dicts[2]["width"]) == (20, 30)  # from the image header
    q = dataset_quirks("t_coco_q")
    assert (q["nonfinite_box"], q["empty_box"], q["no_box"], q["orphan_annotation"]) == (2, 1, 1, 1)
    assert q["clipped_box"] == 1 and q["size_missing"] == 1
    assert q.counters() == {"skipped_images": 0, "dropped_boxes": 5, "clipped_boxes": 1}


def test_reader_counts_reach_the_loader_and_concatenation_refuses_shared_images(
    tmp_path, folders, forget
):
    folders.build_quirky_voc(tmp_path / "voc")
    cfg = get_cfg()
    root = str(tmp_path / "voc")
    cfg.DATASETS.REGISTER = [
        {"name": "t_cnt_tr", "format": "voc", "root": root, "split": "train"},
        {"name": "t_cnt_te", "format": "voc", "root": root, "split": "test"},
    ]
    cfg.DATASETS.TRAIN = ("t_cnt_tr",)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    forget(["t_cnt_tr", "t_cnt_te"])
    loader = build_detection_train_loader(cfg)
    assert loader.base_stats == {"skipped_images": 2, "dropped_boxes": 3, "clipped_boxes": 1}
    assert {k: loader.stats()[k] for k in loader.base_stats} == loader.base_stats
    with pytest.raises(UserError, match=r"dataset 't_cnt_tr' and dataset 't_cnt_te' both use"):
        get_detection_dataset_dicts(["t_cnt_tr", "t_cnt_te"])
