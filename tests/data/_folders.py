"""Small VOC and YOLO folders shaped like the ones that circulate, quirks included.

Every image's pixels are seeded by its own name, so a test can tell which file a record really
reads; boxes are written from a truth table so a test can compare what a reader returns.
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import cv2
import numpy as np


def image_pixels(name: str, h: int, w: int, dtype=np.uint8, channels: int = 3) -> np.ndarray:
    """Noise seeded by ``name`` (so two names never share content unless copied)."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    top = 65535 if dtype == np.uint16 else 255
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, top, shape, dtype=dtype)


def write_image(path: Path, h: int, w: int, dtype=np.uint8, channels: int = 3) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = image_pixels(path.stem, h, w, dtype, channels)
    assert cv2.imwrite(str(path), img), path
    return img


def write_exif_rotated_jpeg(path: Path, h: int, w: int, orientation: int = 6) -> None:
    """A JPEG stored as h×w whose EXIF orientation tag tells viewers to rotate it."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(image_pixels(path.stem, h, w)[:, :, ::-1].copy())
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", exif=exif.tobytes(), quality=95)


def voc_xml(
    filename: str | None,
    size: tuple[int, int] | None,
    objects: list[dict],
) -> str:
    """VOC XML text; ``size`` is (width, height); object dicts: name, box (4 strings or None),
    difficult, truncated, pose."""
    out = ["<annotation>", "<folder>VOC2007</folder>"]
    if filename is not None:
        out.append(f"<filename>{filename}</filename>")
    out.append("<source><database>Unknown</database></source>")
    if size is not None:
        out.append(
            f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        )
    out.append("<segmented>0</segmented>")
    for o in objects:
        out.append("<object>")
        if o.get("name") is not None:
            out.append(f"<name>{o['name']}</name>")
        out.append(f"<pose>{o.get('pose', 'Unspecified')}</pose>")
        out.append(f"<truncated>{o.get('truncated', 0)}</truncated>")
        out.append(f"<difficult>{o.get('difficult', 0)}</difficult>")
        if o.get("box") is not None:
            x0, y0, x1, y1 = o["box"]
            out.append(
                f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax>"
                "</bndbox>"
            )
        out.append("</object>")
    out.append("</annotation>")
    return "\n".join(out)


# stem -> (image file or None, (h, w), xml kwargs); boxes are VOC 1-based corners as text.
H, W = 40, 64


def build_quirky_voc(root: Path) -> dict:
    """An SSDD-style folder with one of each quirk; returns what a test should expect."""
    ann, jpg, sets = root / "Annotations", root / "JPEGImages", root / "ImageSets" / "Main"
    for d in (ann, jpg, sets):
        d.mkdir(parents=True, exist_ok=True)
    ship = {"name": "ship", "box": ("5", "6", "20", "15")}  # COCO [4, 5, 16, 10]
    boat = {"name": "boat", "box": ("30", "1", "64", "40")}  # COCO [29, 0, 35, 40]

    def xml(stem: str, text: str) -> None:
        (ann / f"{stem}.xml").write_text(text, encoding="utf-8")

    for stem in ("000001", "000002", "000004", "000005", "000006", "000007", "000009"):
        write_image(jpg / f"{stem}.png", H, W)
    write_image(jpg / "000003.png", H, W)
    xml("000001", voc_xml("000001.png", (W, H), [ship, boat]))
    # stale tag: names another existing image; its own boxes must stay with 000002.png
    xml("000002", voc_xml("000003.png", (W, H), [{"name": "ship", "box": ("1", "1", "10", "10")}]))
    # tag with another extension than the file: same stem, not stale
    xml("000003", voc_xml("000003.jpg", (W, H), [ship]))
    xml("000004", voc_xml("000004.png", (500, 375), [ship]))  # wrong size
    xml("000005", voc_xml("000005.png", None, [ship]))  # no <size>
    floats = {"name": "ship", "box": ("10.5", "3.25", "30.5", "20")}
    xml("000006", voc_xml("000006.png", (W, H), [floats]))
    xml(
        "000007",
        voc_xml(
            "000007.png",
            (W, H),
            [
                {"name": "ship", "box": ("2", "2", "12", "12"), "difficult": 1},
                {"name": "ship", "box": None},  # no box
                {"name": "ship", "box": ("50", "30", "80", "45")},  # reaches outside: clipped
                {"name": "ship", "box": ("nan", "1", "5", "5")},  # NaN: dropped
                {"name": "ship", "box": ("20", "20", "10", "30")},  # xmax < xmin: dropped
            ],
        ),
    )
    shutil.copyfile(jpg / "000001.png", jpg / "000008.png")  # byte-identical copy
    xml("000008", voc_xml("000008.png", (W, H), [ship, boat]))
    xml("000009", voc_xml("000009.png", (W, H), []))  # negative
    xml("000010", voc_xml("000010.png", (W, H), [ship]))  # no image file
    write_image(jpg / "000012.png", H, W, np.uint16, 1)
    xml("000012", voc_xml("000012.png", (W, H), [ship]))
    write_image(jpg / "000013.tif", H, W, np.uint16, 1)
    xml("000013", voc_xml("000013.tif", (W, H), [ship]))
    write_exif_rotated_jpeg(jpg / "000014.jpg", H, W, orientation=6)
    xml("000014", voc_xml("000014.jpg", (H, W), [ship]))  # size of the rotated view
    train = ["000001", "000002.png 1", "000003", "000004", "000005", "000006", "000007"]
    train += ["000008", "000009", "000010", "000011", "000012", "000013", "000014"]
    # CRLF endings and a UTF-8 BOM, as Windows tools write them
    (sets / "train.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(train).encode() + b"\r\n")
    (sets / "test.txt").write_text("000001\n000009\n")
    return {
        "records": [s[:6] for s in train if s[:6] not in ("000010", "000011")],
        "quirks": {
            "stale_filename": 1,
            "size_mismatch": 1,
            "size_missing": 1,
            "rotated_labels": 1,
            "exif_orientation": 1,
            "missing_image": 1,
            "missing_annotation": 1,
            "no_box": 1,
            "nonfinite_box": 1,
            "empty_box": 1,
            "clipped_box": 1,  # 000001 boat ends on the last pixel: inside, not clipped
            "difficult_keep": 1,
            "negative": 1,
            "identical_content": 1,
        },
    }


def yolo_line(cls: int, box: tuple[float, float, float, float], h: int, w: int) -> str:
    """``cls cx cy w h`` of a COCO XYWH pixel box."""
    x, y, bw, bh = box
    return f"{cls} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} {bw / w:.6f} {bh / h:.6f}"


def build_quirky_yolo(root: Path, yaml_text: str | None = None) -> dict:
    """Ultralytics layout (images/{train,val}, labels/{train,val}, data.yaml) with quirks."""
    tr_i, tr_l = root / "images" / "train", root / "labels" / "train"
    va_i, va_l = root / "images" / "val", root / "labels" / "val"
    for d in (tr_i, tr_l, va_i, va_l):
        d.mkdir(parents=True, exist_ok=True)
    boxes = {"a": [(0, (4.0, 5.0, 16.0, 10.0)), (1, (30.0, 0.0, 34.0, 40.0))]}
    write_image(tr_i / "a.png", H, W)
    (tr_l / "a.txt").write_text("\n".join(yolo_line(c, b, H, W) for c, b in boxes["a"]) + "\n")
    write_image(tr_i / "b.png", H, W, np.uint16, 1)  # 16-bit grey
    (tr_l / "b.txt").write_text(yolo_line(0, (10.0, 10.0, 8.0, 8.0), H, W) + "\r\n")  # CRLF
    shutil.copyfile(tr_i / "a.png", tr_i / "c.png")  # identical image under another name
    (tr_l / "c.txt").write_text((tr_l / "a.txt").read_text())
    write_image(tr_i / "d.png", H, W)  # no label file: kept, counted
    write_image(tr_i / "e.png", H, W)
    (tr_l / "e.txt").write_text("")  # empty: a negative
    write_image(tr_i / "f.png", H, W)
    poly = "0 0.1 0.1 0.4 0.1 0.4 0.5 0.1 0.5"  # a polygon: bbox x 6.4..25.6, y 4..20
    line = yolo_line(1, (8.0, 8.0, 8.0, 8.0), H, W)
    (tr_l / "f.txt").write_text(
        f"{poly}\n{line}\n{line}\n0 nan 0.5 0.1 0.1\n0 0.98 0.5 0.1 0.2\n0 0.5 0.5 0 0.1\n"
    )
    (tr_l / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # a label without image
    (tr_l / "classes.txt").write_text("ship\nboat\n")  # LabelImg's names file: not a label
    write_image(va_i / "v1.png", H, W)
    (va_l / "v1.txt").write_text(yolo_line(0, (1.0, 2.0, 10.0, 12.0), H, W) + "\n")
    write_image(va_i / "v2.jpg", H, W)
    (va_l / "v2.txt").write_text("")
    (root / "data.yaml").write_text(
        yaml_text
        if yaml_text is not None
        else "path: /nonexistent/elsewhere/ships\ntrain: images/train\nvalidation: images/val\n"
        "names:\n  0: ship\n  1: boat\n"
    )
    return {
        "train_files": ["a.png", "b.png", "c.png", "d.png", "e.png", "f.png"],
        "quirks": {
            "missing_label": 1,
            "empty_label": 1,
            "orphan_label": 1,
            "polygon": 1,
            "duplicate_box": 1,
            "nonfinite_box": 1,
            "empty_box": 1,
            "clipped_box": 1,
            "identical_content": 1,
        },
    }
