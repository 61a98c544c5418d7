"""Converters to COCO json: Pascal VOC XML (as SSDD ships it), YOLO txt, and a stratified split.

Used by ``datasets/prepare_voc.py``, ``datasets/prepare_yolo.py`` and ``datasets/split_coco.py``;
see ``datasets/README.md`` for the folder layouts. Boxes are written as COCO XYWH in absolute
pixels with ``area = w * h``; categories get ids ``1..K`` in the given (or sorted) class order.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence

import numpy as np

from detlab.utils.errors import UserError

__all__ = ["split_coco", "voc_to_coco", "write_json", "yolo_to_coco"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def write_json(data: dict, path: str) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def _categories(names: Sequence[str]) -> list[dict]:
    return [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(names)]


def _find_image(folder: str, stem: str) -> str | None:
    for ext in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
        if os.path.isfile(os.path.join(folder, stem + ext)):
            return stem + ext
    return None


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception:  # PIL cannot read some TIFF variants; OpenCV can
        import cv2

        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise UserError(f"Image {path} cannot be read; check the file.") from None
        return img.shape[0], img.shape[1]


def voc_to_coco(
    voc_root: str,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    image_dir: str = "JPEGImages",
    difficult: str = "keep",
) -> dict:
    """COCO dict from ``voc_root/Annotations/*.xml`` (images in ``voc_root/<image_dir>``).

    ``split`` names ``ImageSets/Main/<split>.txt`` (one stem per line); without it every XML is
    used. VOC boxes are 1-based inclusive: ``x = xmin - 1``, ``w = xmax - xmin + 1``.
    ``difficult``: "keep" (plain box), "crowd" (``iscrowd=1``, ignored by COCO evaluation) or
    "drop". ``file_name`` values are relative to ``voc_root/<image_dir>``.
    """
    if difficult not in ("keep", "crowd", "drop"):
        raise UserError(f"difficult must be keep, crowd or drop, got '{difficult}'.")
    ann_dir = os.path.join(voc_root, "Annotations")
    if not os.path.isdir(ann_dir):
        raise UserError(f"{ann_dir} does not exist; a VOC folder holds Annotations/*.xml.")
    if split:
        list_file = os.path.join(voc_root, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise UserError(f"Split list {list_file} does not exist.")
        with open(list_file, encoding="utf-8") as f:
            stems = [line.split()[0] for line in f if line.strip()]
    else:
        stems = sorted(os.path.splitext(n)[0] for n in os.listdir(ann_dir) if n.endswith(".xml"))
    records = []
    for stem in stems:
        path = os.path.join(ann_dir, stem + ".xml")
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as err:
            raise UserError(f"VOC annotation {path} cannot be parsed ({err}).") from None
        fname = root.findtext("filename") or ""
        if not fname or not os.path.isfile(os.path.join(voc_root, image_dir, fname)):
            fname = _find_image(os.path.join(voc_root, image_dir), stem) or fname
        size = root.find("size")
        h = int(float(size.findtext("height"))) if size is not None else 0
        w = int(float(size.findtext("width"))) if size is not None else 0
        if h <= 0 or w <= 0:
            h, w = _image_size(os.path.join(voc_root, image_dir, fname))
        objs = []
        for obj in root.findall("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if bb is None or not name:
                continue
            x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            diff = int(float(obj.findtext("difficult") or 0))
            if diff and difficult == "drop":
                continue
            box = [x0 - 1.0, y0 - 1.0, x1 - x0 + 1.0, y1 - y0 + 1.0]
            objs.append((name, box, int(bool(diff and difficult == "crowd"))))
        records.append((fname, h, w, objs))
    names = list(classes) if classes else sorted({o[0] for r in records for o in r[3]})
    return _assemble(records, names, source=voc_root)


def _assemble(records, names: Sequence[str], source: str) -> dict:
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images, anns = [], []
    for i, (fname, h, w, objs) in enumerate(records):
        images.append({"id": i + 1, "file_name": fname, "height": h, "width": w})
        for name, box, crowd in objs:
            if name not in cat_id:
                raise UserError(
                    f"{source}: object class '{name}' in {fname} is not among the classes "
                    f"{list(names)}; add it or leave --classes out."
                )
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat_id[name],
                    "bbox": [round(v, 4) for v in box],
                    "area": round(box[2] * box[3], 4),
                    "iscrowd": crowd,
                }
            )
    return {"images": images, "annotations": anns, "categories": _categories(names)}


def yolo_to_coco(images_dir: str, labels_dir: str, classes: Sequence[str]) -> dict:
    """COCO dict from YOLO labels: one ``<stem>.txt`` per image, lines ``cls cx cy w h``.

    Coordinates are normalised to 0..1 by the image width/height (read from the image
    header). Images without a label file are kept as images without boxes.
    ``file_name`` values are relative to ``images_dir``.
    """
    if not os.path.isdir(images_dir):
        raise UserError(f"Image folder {images_dir} does not exist.")
    names = list(classes)
    files = sorted(
        os.path.relpath(os.path.join(dp, f), images_dir)
        for dp, _, fs in os.walk(images_dir)
        for f in fs
        if f.lower().endswith(IMAGE_EXTS)
    )
    records = []
    for rel in files:
        h, w = _image_size(os.path.join(images_dir, rel))
        label = os.path.join(labels_dir, os.path.splitext(rel)[0] + ".txt")
        objs = []
        if os.path.isfile(label):
            with open(label, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    parts = line.split()
                    if not parts:
                        continue
                    try:
                        k = int(parts[0])
                        cx, cy, bw, bh = (float(v) for v in parts[1:5])
                    except (ValueError, IndexError):
                        raise UserError(
                            f"{label}:{n}: expected 'class cx cy w h', got '{line.strip()}'."
                        ) from None
                    if not 0 <= k < len(names):
                        raise UserError(
                            f"{label}:{n}: class index {k} is outside 0..{len(names) - 1}."
                        )
                    box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
                    objs.append((names[k], box, 0))
        records.append((rel, h, w, objs))
    return _assemble(records, names, source=labels_dir)


def split_coco(
    data: dict, ratios: Sequence[float], seed: int = 0, names: Sequence[str] | None = None
) -> dict[str, dict]:
    """Deterministic split of a COCO dict by ``ratios``, stratified by class.

    Each image is put in the stratum of its rarest category (images without boxes form their
    own stratum); each stratum is shuffled with ``seed`` and cut by the ratios with
    largest-remainder rounding. Returns ``{name: coco dict}`` (default names train/val/test).
    """
    ratios = [float(r) for r in ratios]
    if not ratios or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise UserError(f"Split ratios must be non-negative and not all zero, got {ratios}.")
    names = list(names or ["train", "val", "test"][: len(ratios)])
    if len(names) != len(ratios):
        raise UserError(f"{len(ratios)} ratios need {len(ratios)} split names, got {names}.")
    total = sum(ratios)
    ratios = [r / total for r in ratios]
    by_image: dict = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a)
    freq = Counter(a["category_id"] for a in data.get("annotations", []))
    strata: dict = {}
    for img in sorted(data["images"], key=_id_key):
        cats = {a["category_id"] for a in by_image.get(img["id"], [])}
        key = min(cats, key=lambda c: (freq[c], c)) if cats else None
        strata.setdefault(key, []).append(img)
    parts: dict[str, list] = {n: [] for n in names}
    for key in sorted(strata, key=lambda k: (k is None, k)):
        group = strata[key]
        order = np.random.default_rng([seed, len(group)]).permutation(len(group))
        exact = [r * len(group) for r in ratios]
        counts = [math.floor(e) for e in exact]
        for i in sorted(range(len(ratios)), key=lambda i: exact[i] - counts[i], reverse=True)[
            : len(group) - sum(counts)
        ]:
            counts[i] += 1
        start = 0
        for n, c in zip(names, counts, strict=True):
            parts[n].extend(group[j] for j in order[start : start + c])
            start += c
    out = {}
    for n in names:
        ids = {img["id"] for img in parts[n]}
        out[n] = {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": sorted(parts[n], key=_id_key),
            "annotations": [a for a in data.get("annotations", []) if a["image_id"] in ids],
        }
    return out


def _id_key(img: dict) -> tuple:
    return (
        not isinstance(img["id"], int),
        img["id"] if isinstance(img["id"], int) else 0,
        str(img["id"]),
    )
