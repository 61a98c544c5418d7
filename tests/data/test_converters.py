"""Converters: VOC XML and YOLO txt to COCO round-trip on files written here; stratified split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from detlab.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from detlab.data.converters import split_coco, voc_to_coco, yolo_to_coco
from detlab.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

# image stem -> (height, width, [(class, x, y, w, h) in COCO pixels])
TRUTH = {
    "img_a": (40, 60, [("ship", 4.0, 5.0, 10.0, 6.0), ("boat", 30.0, 20.0, 8.0, 12.0)]),
    "img_b": (50, 30, [("ship", 0.0, 0.0, 30.0, 50.0)]),
    "img_c": (32, 32, []),
}


def _write_voc(root: Path) -> None:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, (h, w, objs) in TRUTH.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.zeros((h, w), np.uint8))
        xml = [f"<annotation><filename>{stem}.jpg</filename>"]
        xml.append(f"<size><width>{w}</width><height>{h}</height><depth>1</depth></size>")
        for name, x, y, bw, bh in objs:  # VOC: 1-based inclusive corners
            xml.append(
                f"<object><name>{name}</name><difficult>0</difficult><bndbox>"
                f"<xmin>{x + 1:g}</xmin><ymin>{y + 1:g}</ymin>"
                f"<xmax>{x + bw:g}</xmax><ymax>{y + bh:g}</ymax></bndbox></object>"
            )
        xml.append("</annotation>")
        (root / "Annotations" / f"{stem}.xml").write_text("".join(xml))
    (root / "ImageSets" / "Main" / "train.txt").write_text("img_a\nimg_b\n")


def _boxes_by_file(data: dict) -> dict:
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {im["id"]: im["file_name"] for im in data["images"]}
    out = {Path(f).stem: [] for f in files.values()}
    for a in data["annotations"]:
        out[Path(files[a["image_id"]]).stem].append((names[a["category_id"]], *a["bbox"]))
    return out


def test_voc_round_trip_and_registration(tmp_path):
    _write_voc(tmp_path / "voc")
    data = voc_to_coco(str(tmp_path / "voc"), classes=["ship", "boat"])
    assert _boxes_by_file(data) == {k: v[2] for k, v in TRUTH.items()}
    assert [c["name"] for c in data["categories"]] == ["ship", "boat"]
    train = voc_to_coco(str(tmp_path / "voc"), split="train")
    assert len(train["images"]) == 2
    path = tmp_path / "voc.json"
    path.write_text(json.dumps(data))
    coco = COCO(str(path))  # the independent reader agrees
    assert len(coco.getAnnIds()) == 3 and len(coco.getImgIds()) == 3
    register_coco_instances("t_voc", {}, str(path), str(tmp_path / "voc" / "JPEGImages"))
    try:
        dicts = DatasetCatalog.get("t_voc")
        assert all(Path(d["file_name"]).is_file() for d in dicts)
        assert MetadataCatalog.get("t_voc").thing_classes == ["ship", "boat"]
    finally:
        DatasetCatalog.remove("t_voc")
        MetadataCatalog.remove("t_voc")


def test_yolo_round_trip(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    classes = ["ship", "boat"]
    for stem, (h, w, objs) in TRUTH.items():
        cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), np.zeros((h, w), np.uint16))
        if stem == "img_c":
            continue  # no label file: an image without boxes
        lines = [
            f"{classes.index(n)} {(x + bw / 2) / w:.8f} {(y + bh / 2) / h:.8f} "
            f"{bw / w:.8f} {bh / h:.8f}"
            for n, x, y, bw, bh in objs
        ]
        (tmp_path / "labels" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    data = yolo_to_coco(str(tmp_path / "images"), str(tmp_path / "labels"), classes)
    got = _boxes_by_file(data)
    for stem, (_, _, objs) in TRUTH.items():
        assert [g[0] for g in got[stem]] == [o[0] for o in objs]
        assert np.allclose([g[1:] for g in got[stem]], [o[1:] for o in objs], atol=1e-3) or not objs
    (tmp_path / "labels" / "img_a.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(UserError, match=r"img_a\.txt:1: class id 5 is outside 0\.\.1"):
        yolo_to_coco(str(tmp_path / "images"), str(tmp_path / "labels"), classes)


def test_split_is_deterministic_stratified_and_complete():
    images = [{"id": i, "file_name": f"{i}.png", "height": 8, "width": 8} for i in range(200)]
    anns = []
    for i in range(200):
        cat = 2 if i % 10 == 0 else 1  # class 2 is rare (20 images)
        anns.append({"id": i, "image_id": i, "category_id": cat, "bbox": [0, 0, 2, 2]})
    data = {"images": images, "annotations": anns, "categories": [{"id": 1}, {"id": 2}]}
    a = split_coco(data, [0.7, 0.2, 0.1], seed=3)
    b = split_coco(data, [0.7, 0.2, 0.1], seed=3)
    assert a == b
    ids = [im["id"] for part in a.values() for im in part["images"]]
    assert sorted(ids) == list(range(200))
    rare = {n: sum(x["category_id"] == 2 for x in p["annotations"]) for n, p in a.items()}
    assert rare == {"train": 14, "val": 4, "test": 2}
    assert [len(p["images"]) for p in a.values()] == [140, 40, 20]
    c = split_coco(data, [0.7, 0.2, 0.1], seed=4)
    assert c["val"]["images"] != a["val"]["images"]


def test_scripts_run(tmp_path):
    out = tmp_path / "synth"
    cmd = [
        sys.executable,
        str(ROOT / "datasets" / "make_synthetic_sar.py"),
        "--out",
        str(out),
        "--num-images",
        "3",
        "--size",
        "64",
        "80",
        "--classes",
        "cargo:0.7",
        "fishing:0.3",
        "--ext",
        "tif",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    data = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in data["categories"]] == ["cargo", "fishing"]
    img = cv2.imread(str(out / data["images"][0]["file_name"]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (64, 80)
    split = [
        sys.executable,
        str(ROOT / "datasets" / "split_coco.py"),
        "--json",
        str(out / "annotations.json"),
        "--ratios",
        "2",
        "1",
        "--out-dir",
        str(tmp_path / "s"),
    ]
    bad = subprocess.run(
        [*split[:3], str(tmp_path / "missing.json"), *split[4:]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.json" in bad.stderr


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "datasets" / name), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_prepare_voc_prints_each_quirk_and_writes_what_the_reader_reads(tmp_path, folders):
    folders.build_quirky_voc(tmp_path / "voc")
    out = str(tmp_path / "voc.json")
    voc = _script(
        "prepare_voc.py", "--voc-root", str(tmp_path / "voc"), "--split", "train", "--out", out
    )
    assert voc.returncode == 0, voc.stderr
    assert "voc.json: 12 images, 14 boxes, classes ['boat', 'ship']" in voc.stdout
    for text in (
        "1 annotation files name another image in <filename>",
        "1 boxes have NaN",
        "1 images are byte-identical copies",
        "1 listed images have no annotation file",
    ):
        assert voc.stderr.count(text) == 1, text  # fmt: skip
    data = json.loads((tmp_path / "voc.json").read_text())
    assert len(COCO(str(tmp_path / "voc.json")).getImgIds()) == 12
    assert {im["file_name"] for im in data["images"]} >= {"000002.png", "000014.jpg"}


def test_prepare_yolo_in_process(tmp_path, folders, capsys, caplog):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "prepare_yolo", ROOT / "datasets" / "prepare_yolo.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    folders.build_quirky_yolo(tmp_path / "ships")
    ships, out = str(tmp_path / "ships"), str(tmp_path / "y.json")
    assert tool.main(["--root", ships, "--split", "train", "--out", out]) == 0
    assert "y.json: 6 images, 8 boxes, classes ['ship', 'boat']" in capsys.readouterr().out
    assert "1 label files have no image; ignored" in caplog.text
    assert tool.main(["--root", ships, "--split", "test", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no 'test' entry" in err
