"""Pascal VOC reader on folders shaped like SSDD copies: pairing, sizes, quirks, duplicates."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from detlab.data.datasets.voc import read_voc
from detlab.utils.errors import UserError


def test_each_record_pairs_with_its_own_image_and_every_quirk_is_counted(tmp_path, folders, caplog):
    expect = folders.build_quirky_voc(tmp_path / "voc")
    with caplog.at_level(logging.INFO):
        res = read_voc(str(tmp_path / "voc"), "train")
    stems = [Path(r["file_name"]).stem for r in res.records]
    assert stems == expect["records"]
    assert len({r["file_name"] for r in res.records}) == len(res.records)  # nothing used twice
    for rec in res.records:
        img = cv2.imread(rec["file_name"], cv2.IMREAD_UNCHANGED)
        assert img.shape[:2] == (rec["height"], rec["width"])  # sizes match the files
        if rec["file_name"].endswith(".png"):  # lossless: the pixels are this stem's own
            name = Path(rec["file_name"]).stem
            ref = folders.image_pixels(name, *img.shape[:2], img.dtype, 1 if img.ndim == 2 else 3)
            if name == "000008":  # the byte-identical copy of 000001
                ref = folders.image_pixels("000001", *img.shape[:2])
            assert np.array_equal(img, ref), name
    assert dict(res.quirks.counts) == expect["quirks"]
    assert res.quirks.counters() == {"skipped_images": 2, "dropped_boxes": 3, "clipped_boxes": 1}
    for kind, n in expect["quirks"].items():  # one line per quirk, with its count
        line = res.quirks.line(kind)
        assert line.split(": ", 1)[1].startswith(f"{n} ") and caplog.text.count(line) == 1
    assert "000002.xml says 000003.png" in res.quirks.line("stale_filename")


def test_boxes_sizes_and_classes(tmp_path, folders):
    folders.build_quirky_voc(tmp_path / "voc")
    res = read_voc(str(tmp_path / "voc"), "train")
    by = {Path(r["file_name"]).stem: r for r in res.records}
    assert res.classes == ["boat", "ship"]  # sorted names of the whole folder
    boxes = {s: [(a["category_id"], a["bbox"]) for a in r["annotations"]] for s, r in by.items()}
    # the stale tag of 000002 names 000003.png; 000002 keeps its own box, 000003 its own
    assert boxes["000002"] == [(1, [0.0, 0.0, 10.0, 10.0])]
    assert boxes["000003"] == [(1, [4.0, 5.0, 16.0, 10.0])]
    assert boxes["000001"] == [(1, [4.0, 5.0, 16.0, 10.0]), (0, [29.0, 0.0, 35.0, 40.0])]
    assert boxes["000006"] == [(1, [9.5, 2.25, 21.0, 17.75])]  # float corners, same shift
    # 000007: difficult kept, no-box / NaN / inverted dropped, the outside one clipped
    assert boxes["000007"] == [(1, [1.0, 1.0, 11.0, 11.0]), (1, [49.0, 29.0, 15.0, 11.0])]
    assert (by["000004"]["height"], by["000004"]["width"]) == (40, 64)  # header, not <size>
    assert (by["000012"]["height"], by["000013"]["width"]) == (40, 64)  # 16-bit PNG and TIFF
    assert (by["000014"]["height"], by["000014"]["width"]) == (40, 64)  # stored, not rotated
    assert by["000009"]["annotations"] == []  # negative kept
    crowd = read_voc(str(tmp_path / "voc"), "train", difficult="crowd")
    seven = next(r for r in crowd.records if r["file_name"].endswith("000007.png"))
    assert [a["iscrowd"] for a in seven["annotations"]] == [1, 0]
    drop = read_voc(str(tmp_path / "voc"), "train", difficult="drop")
    seven = next(r for r in drop.records if r["file_name"].endswith("000007.png"))
    assert len(seven["annotations"]) == 1 and drop.quirks["difficult_drop"] == 1
    zero = read_voc(str(tmp_path / "voc"), "train", one_based=False)
    six = next(r for r in zero.records if r["file_name"].endswith("000006.png"))
    assert six["annotations"][0]["bbox"] == [10.5, 3.25, 20.0, 16.75]


def test_test_split_shares_the_class_list_of_the_folder(tmp_path, folders):
    folders.build_quirky_voc(tmp_path / "voc")
    (tmp_path / "voc" / "ImageSets" / "Main" / "ships_only.txt").write_text("000003\n")
    res = read_voc(str(tmp_path / "voc"), "ships_only")
    assert res.classes == ["boat", "ship"] and res.records[0]["annotations"][0]["category_id"] == 1
    lists = tmp_path / "lists"  # a list of image paths instead of stems, outside the folder
    lists.mkdir()
    (lists / "paths.txt").write_text(f"{tmp_path}/voc/JPEGImages/000003.png\n")
    res = read_voc(str(tmp_path / "voc"), str(lists / "paths.txt"))
    assert [r["file_name"] for r in res.records] == [str(tmp_path / "voc/JPEGImages/000003.png")]
    with pytest.raises(UserError, match=r"class 'boat' in Annotations/000001\.xml.*\['ship'\]"):
        read_voc(str(tmp_path / "voc"), "train", classes=["ship"])
    with pytest.raises(UserError, match=r"VOC split 'tset' not found.*available: test, train"):
        read_voc(str(tmp_path / "voc"), "tset")


def test_agrees_with_detectron2_on_a_clean_folder(tmp_path, folders):
    d2 = pytest.importorskip("detectron2.data.datasets.pascal_voc")
    root = tmp_path / "clean"
    rng = np.random.default_rng(0)
    stems = [f"{i:06d}" for i in range(6)]
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    for stem in stems:
        folders.write_image(root / "JPEGImages" / f"{stem}.jpg", 50, 70)
        objs = []
        for _ in range(3):
            x0, y0 = (int(v) for v in rng.integers(1, 30, 2))
            x1, y1 = x0 + int(rng.integers(1, 30)), y0 + int(rng.integers(1, 15))
            objs.append({"name": ["ship", "boat"][int(rng.integers(2))], "box": (x0, y0, x1, y1)})
        xml = folders.voc_xml(f"{stem}.jpg", (70, 50), objs)
        (root / "Annotations" / f"{stem}.xml").write_text(xml)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(stems) + "\n")
    ref = d2.load_voc_instances(str(root), "train", ("ship", "boat"))
    ours = read_voc(str(root), "train", ["ship", "boat"])
    assert [r["file_name"] for r in ours.records] == [r["file_name"] for r in ref]
    for mine, theirs in zip(ours.records, ref, strict=True):
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in mine["annotations"])]
        assert np.allclose(xyxy, [a["bbox"] for a in theirs["annotations"]])
        assert [a["category_id"] for a in mine["annotations"]] == [
            a["category_id"] for a in theirs["annotations"]
        ]
        assert (mine["height"], mine["width"]) == (theirs["height"], theirs["width"])


def test_no_image_is_used_twice(tmp_path, folders):
    folders.build_quirky_voc(tmp_path / "voc")
    sets = tmp_path / "voc" / "ImageSets" / "Main"
    (sets / "dup.txt").write_text("000001\n000002\n000001.jpg\n")
    with pytest.raises(UserError, match=r"dup\.txt lists '000001' twice \(lines 1 and 3\)"):
        read_voc(str(tmp_path / "voc"), "dup")
    jpg = tmp_path / "voc" / "JPEGImages"
    os.remove(jpg / "000005.png")
    os.symlink(jpg / "000004.png", jpg / "000005.png")  # two names, one file
    (sets / "pair.txt").write_text("000004\n000005\n")
    with pytest.raises(UserError, match=r"000004\.xml and .*000005\.xml both use the image"):
        read_voc(str(tmp_path / "voc"), "pair")
    folders.write_image(jpg / "000006.jpg", 40, 64)  # 000006.png and .jpg: which one?
    (sets / "amb.txt").write_text("000006\n")
    res = read_voc(str(tmp_path / "voc"), "amb")  # its <filename> picks the .png
    assert res.records[0]["file_name"].endswith("000006.png")
    (tmp_path / "voc" / "Annotations" / "000006.xml").write_text(
        folders.voc_xml("other.png", (64, 40), [])
    )
    with pytest.raises(UserError, match=r"several images are named like it"):
        read_voc(str(tmp_path / "voc"), "amb")


def test_labelimg_folder_and_errors(tmp_path, folders):
    root = tmp_path / "labelimg"  # XMLs next to the images, no ImageSets
    folders.write_image(root / "a.jpg", 30, 40)
    (root / "a.xml").write_text(
        folders.voc_xml("a.jpg", (40, 30), [{"name": "car", "box": (1, 1, 5, 5)}])
    )
    res = read_voc(str(root))
    assert len(res.records) == 1 and res.classes == ["car"] and res.image_root == str(root)
    other = tmp_path / "raccoon_style"  # lower-case annotations/ and images/
    folders.write_image(other / "images" / "r-1.jpg", 30, 40)
    (other / "annotations").mkdir()
    (other / "annotations" / "r-1.xml").write_text((root / "a.xml").read_text())
    res = read_voc(str(other))
    assert res.records[0]["file_name"] == str(other / "images" / "r-1.jpg")
    assert res.quirks["stale_filename"] == 1  # its tag says a.jpg
    (root / "a.xml").write_text("<annotation><object>")
    with pytest.raises(UserError, match=r"a\.xml is not valid XML"):
        read_voc(str(root))
    with pytest.raises(UserError, match="is not a folder"):
        read_voc(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no Annotations/ folder"):
        read_voc(str(empty))
