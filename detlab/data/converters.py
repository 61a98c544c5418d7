"""COCO json from the readers: Pascal VOC and YOLO folders, plus the leak-free split.

Used by ``datasets/prepare_voc.py``, ``datasets/prepare_yolo.py`` and ``datasets/split_coco.py``.
The conversion is the reader (:func:`~detlab.data.datasets.voc.read_voc`,
:func:`~detlab.data.datasets.yolo.read_yolo`) followed by :func:`to_coco`, so a converted json
holds exactly what training on the folder directly would see: boxes as COCO XYWH in absolute
pixels with ``area = w * h``, categories ``1..K`` in class order, image sizes from the image
headers, ``file_name`` relative to the image root.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from detlab.data.datasets.quirks import ReadResult
from detlab.data.datasets.voc import read_voc
from detlab.data.datasets.yolo import read_yolo
from detlab.data.split import split_coco

__all__ = ["split_coco", "to_coco", "voc_to_coco", "write_json", "yolo_to_coco"]


def write_json(data: dict, path: str) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def to_coco(result: ReadResult, image_root: str | None = None) -> dict:
    """COCO dict of a reader's result; ``file_name`` relative to ``image_root`` (default: the
    reader's image root)."""
    root = result.image_root if image_root is None else image_root
    images, anns = [], []
    for rec in result.records:
        fname = os.path.relpath(rec["file_name"], root) if root else rec["file_name"]
        images.append(
            {
                "id": rec["image_id"],
                "file_name": fname.replace(os.sep, "/"),
                "height": rec["height"],
                "width": rec["width"],
            }
        )
        for a in rec["annotations"]:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": rec["image_id"],
                    "category_id": int(a["category_id"]) + 1,
                    "bbox": [round(float(v), 4) for v in a["bbox"]],
                    "area": round(float(a["bbox"][2]) * float(a["bbox"][3]), 4),
                    "iscrowd": int(a.get("iscrowd", 0)),
                }
            )
    cats = [
        {"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(result.classes)
    ]
    return {"images": images, "annotations": anns, "categories": cats}


def voc_to_coco(
    voc_root: str,
    split: str | None = None,
    classes: Sequence[str] | str | None = None,
    image_dir: str | None = None,
    difficult: str = "keep",
    **options,
) -> dict:
    """COCO dict of a VOC folder (see :func:`~detlab.data.datasets.voc.read_voc`)."""
    result = read_voc(voc_root, split, classes, image_dir=image_dir, difficult=difficult, **options)
    return to_coco(result)


def yolo_to_coco(
    images_dir: str, labels_dir: str | None, classes: Sequence[str] | str | None
) -> dict:
    """COCO dict of YOLO labels (see :func:`~detlab.data.datasets.yolo.read_yolo`)."""
    return to_coco(read_yolo(images=images_dir, labels=labels_dir, names=classes))
