"""YOLO reader on Ultralytics, Roboflow and LabelImg layouts: pairing, boxes, quirks, errors."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_convert

from detlab.data.datasets.yolo import read_yolo
from detlab.utils.errors import UserError


def _boxes(rec: dict) -> list:
    return [(a["category_id"], [round(v, 4) for v in a["bbox"]]) for a in rec["annotations"]]


def test_ultralytics_layout_quirks_and_boxes(tmp_path, folders, caplog):
    expect = folders.build_quirky_yolo(tmp_path / "ships")
    with caplog.at_level(logging.INFO):
        res = read_yolo(str(tmp_path / "ships"), "train")  # stale absolute 'path' in data.yaml
    assert res.classes == ["ship", "boat"]  # names: {0: ship, 1: boat}
    assert [Path(r["file_name"]).name for r in res.records] == expect["train_files"]
    assert dict(res.quirks.counts) == expect["quirks"]
    assert res.quirks.counters() == {"skipped_images": 0, "dropped_boxes": 3, "clipped_boxes": 1}
    for kind in expect["quirks"]:
        assert caplog.text.count(res.quirks.line(kind)) == 1
    by = {Path(r["file_name"]).stem: r for r in res.records}
    assert all((r["height"], r["width"]) == (40, 64) for r in res.records)  # 8- and 16-bit
    assert _boxes(by["a"]) == [(0, [4.0, 5.0, 16.0, 10.0]), (1, [30.0, 0.0, 34.0, 40.0])]
    assert _boxes(by["d"]) == [] and _boxes(by["e"]) == []  # no label file / empty file
    # f.txt: polygon -> its bbox, a line and its repeat -> once, NaN and empty -> dropped,
    # a box reaching over the right edge -> clipped
    assert _boxes(by["f"]) == [
        (0, [6.4, 4.0, 19.2, 16.0]),
        (1, [8.0, 8.0, 8.0, 8.0]),
        (0, [59.52, 16.0, 4.48, 8.0]),
    ]
    assert "labels/train/orphan.txt" in res.quirks.line("orphan_label")


def test_boxes_match_torchvision_conversion(tmp_path, folders):
    rng = np.random.default_rng(3)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    truth = {}
    for i in range(5):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        folders.write_image(tmp_path / "images" / f"im{i}.png", h, w)
        cxcywh = np.column_stack([rng.uniform(0.3, 0.7, (4, 2)), rng.uniform(0.05, 0.3, (4, 2))])
        lines = [f"{k % 2} " + " ".join(f"{v:.6f}" for v in row) for k, row in enumerate(cxcywh)]
        (tmp_path / "labels" / f"im{i}.txt").write_text("\n".join(lines))
        xyxy = box_convert(torch.tensor(cxcywh) * torch.tensor([w, h, w, h]), "cxcywh", "xyxy")
        truth[f"im{i}"] = box_convert(xyxy, "xyxy", "xywh").numpy()
    res = read_yolo(str(tmp_path), names=["a", "b"])
    for rec in res.records:
        got = np.array([a["bbox"] for a in rec["annotations"]])
        assert np.allclose(got, truth[Path(rec["file_name"]).stem], atol=1e-3)


def test_validation_alias_and_roboflow_layout(tmp_path, folders):
    folders.build_quirky_yolo(tmp_path / "ships")
    val = read_yolo(str(tmp_path / "ships" / "data.yaml"), "val")  # 'validation' key
    assert [Path(r["file_name"]).name for r in val.records] == ["v1.png", "v2.jpg"]
    rf = tmp_path / "roboflow"  # train/images, valid/images, yaml paths with a leading ../
    for split in ("train", "valid"):
        folders.write_image(rf / split / "images" / f"{split}0.jpg", 30, 30)
        (rf / split / "labels").mkdir(parents=True)
        (rf / split / "labels" / f"{split}0.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (rf / "data.yaml").write_text(
        "train: ../train/images\nval: ../valid/images\nnc: 2\nnames: ['boat', 'ship']\n"
    )
    res = read_yolo(str(rf), "val")
    assert [Path(r["file_name"]).name for r in res.records] == ["valid0.jpg"]
    assert res.classes == ["boat", "ship"] and _boxes(res.records[0]) == [
        (1, [12.0, 12.0, 6.0, 6.0])
    ]
    (rf / "data.yaml").write_text("train: ../train/images\nnames: [a, b, c]\nnc: 2\n")
    with pytest.raises(UserError, match="'nc' is 2 but 'names' lists 3"):
        read_yolo(str(rf), "train")


def test_list_files_and_classes_txt(tmp_path, folders):
    root = tmp_path / "set"
    folders.build_quirky_yolo(root, yaml_text="train: train.txt\nnames: [ship, boat]\n")
    (root / "train.txt").write_bytes(b"./images/train/a.png\r\n./images/train/b.png\r\n")
    res = read_yolo(str(root), "train")
    assert [Path(r["file_name"]).name for r in res.records] == ["a.png", "b.png"]
    (root / "train.txt").write_text(
        "./images/train/a.png\nimages/train/b.png\n./images/train/a.png\n"
    )
    with pytest.raises(UserError, match=r"train\.txt:1 and train\.txt:3 both use the image"):
        read_yolo(str(root), "train")
    flat = tmp_path / "labelimg"  # images and txt side by side, classes.txt from LabelImg
    folders.write_image(flat / "x.jpg", 20, 20)
    (flat / "x.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (flat / "classes.txt").write_text("person\r\ncar\r\n")
    res = read_yolo(str(flat))
    assert res.classes == ["person", "car"] and _boxes(res.records[0]) == [
        (0, [5.0, 5.0, 10.0, 10.0])
    ]


@pytest.mark.parametrize(
    "line, match",
    [
        ("2 0.5 0.5 0.1 0.1", r"a\.txt:2: class id 2 is outside 0\.\.1"),
        ("-1 0.5 0.5 0.1 0.1", r"a\.txt:2: class id -1 is outside"),
        ("0 320 240 20 10", r"a\.txt:2: coordinates 320 240 20 10 are not fractions"),
        ("ship 0.5 0.5 0.1 0.1", r"a\.txt:2: expected 'class cx cy w h' numbers"),
        ("0 0.5 0.5 0.1", r"a\.txt:2: expected 'class cx cy w h' .* got 4 values"),
    ],
)
def test_bad_label_lines_fail_with_file_and_line(tmp_path, folders, line, match):
    folders.build_quirky_yolo(tmp_path / "ships")
    label = tmp_path / "ships" / "labels" / "train" / "a.txt"
    label.write_text(label.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(UserError, match=match):
        read_yolo(str(tmp_path / "ships"), "train")


def test_shared_label_files_missing_labels_and_exif(tmp_path, folders):
    root = tmp_path / "ships"
    folders.build_quirky_yolo(root)
    shutil.copyfile(root / "images" / "val" / "v1.png", root / "images" / "val" / "v2.png")
    with pytest.raises(UserError, match=r"images .*v2\.jpg and .*v2\.png both take their labels"):
        read_yolo(str(root), "val")
    (root / "images" / "val" / "v2.png").unlink()
    folders.write_exif_rotated_jpeg(root / "images" / "val" / "v3.jpg", 40, 64, orientation=8)
    res = read_yolo(str(root), "val")
    assert res.quirks["exif_orientation"] == 1 and res.quirks["missing_label"] == 1
    assert (res.records[-1]["height"], res.records[-1]["width"]) == (40, 64)
    shutil.rmtree(root / "labels" / "val")
    with pytest.raises(UserError, match="none of the 3 images has a label file"):
        read_yolo(str(root), "val")
    with pytest.raises(UserError, match=r"has no 'test' entry; it lists train, validation"):
        read_yolo(str(root), "test")


def test_out_of_range_ids_are_counted_over_the_whole_set(tmp_path, folders):
    folders.build_quirky_yolo(tmp_path / "ships")
    labels = tmp_path / "ships" / "labels" / "train"
    (labels / "b.txt").write_text("0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n")
    (labels / "a.txt").write_text("3 0.5 0.5 0.1 0.1\n3 0.4 0.5 0.1 0.1\n")
    with pytest.raises(
        UserError, match=r"a\.txt:1: class id 3 .* 3 lines in 2 label files .*\(3, 7\)"
    ):
        read_yolo(str(tmp_path / "ships"), "train")


def test_pose_sets_keep_the_box_and_ignore_keypoints(tmp_path, folders):
    root = tmp_path / "pose"
    folders.write_image(root / "images" / "train" / "p.png", 40, 80)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "p.txt").write_text("0 0.5 0.5 0.25 0.5 0.1 0.1 2 0.2 0.2 2\n")
    (root / "data.yaml").write_text("train: images/train\nkpt_shape: [2, 3]\nnames: [person]\n")
    res = read_yolo(str(root), "train")
    assert _boxes(res.records[0]) == [(0, [30.0, 10.0, 20.0, 20.0])]
    assert res.quirks["polygon"] == 0
