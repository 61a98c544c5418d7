"""COCO-format datasets: load a COCO json into dataset dicts, register it, from Python or config.

``load_coco_json`` checks the file while reading it. Errors (one sentence naming the file):
an annotation whose ``category_id`` is not among ``categories``, two images with the same id,
the same ``file_name`` twice, or two entries that are the same file (a symlink or hard link).
Repaired, counted and reported once (see :mod:`~detlab.data.datasets.quirks`): annotations of
an image id that is not in ``images`` and boxes that are missing, NaN/infinite or of zero or
negative size are dropped; boxes reaching out of the image are clipped; images without
``height``/``width`` get the size from the image header; images whose file is missing are
reported (training skips them). The counts are in ``load_stats(json_file)``.
Category ids (any integers) map to contiguous ``0..K-1`` in ascending id order and back via
``MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id``.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.data.datasets.images import file_identity, image_header
from detlab.data.datasets.quirks import Quirks, ReadResult, clean_box, record_quirks
from detlab.utils.errors import UserError

__all__ = [
    "load_coco_json",
    "load_stats",
    "read_coco",
    "register_coco_instances",
]

logger = logging.getLogger(__name__)

# json path -> (mtime, size, dicts, categories, quirks); avoids re-parsing a validated file.
_CACHE: dict[str, tuple[float, int, list[dict], list[dict], Quirks]] = {}


def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise UserError(f"COCO json {json_file} does not exist; check the json_file path.")
    try:
        with open(json_file, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"COCO json {json_file} cannot be read as JSON ({err}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"COCO json {json_file} has no 'images' list; is it a COCO file?")
    return data


def _image_record(img: Any, json_file: str, image_root: str, quirks: Quirks) -> dict:
    try:
        image_id = img["id"]
        fname = str(img["file_name"])
    except (KeyError, TypeError):
        raise UserError(
            f"COCO json {json_file}: image entry {str(img)[:80]} lacks id or file_name."
        ) from None
    path = os.path.join(image_root, fname) if image_root else fname
    try:
        h, w = int(img["height"]), int(img["width"])
    except (KeyError, TypeError, ValueError):
        h = w = 0
    if h <= 0 or w <= 0:
        header = image_header(path)
        if header is None:
            raise UserError(
                f"COCO json {json_file}: image {image_id} ({fname}) has no height/width and its "
                "file cannot be read; add the size or fix image_root."
            )
        h, w = header.height, header.width
        quirks.add("size_missing", fname)
    return {"file_name": path, "height": h, "width": w, "image_id": image_id, "annotations": []}


def _check_files(records: dict, json_file: str, quirks: Quirks) -> None:
    """The same file may back one image entry only; count the missing ones."""
    by_key: dict[object, Any] = {}
    for image_id, rec in records.items():
        path = rec["file_name"]
        ident = file_identity(path)
        if ident is None:
            quirks.add("missing_file", path)
        for key in (os.path.normpath(path), ident):
            other = by_key.setdefault(key, image_id) if key is not None else image_id
            if other != image_id:
                same = "the same file" if key == ident else "the same file_name"
                raise UserError(
                    f"COCO json {json_file}: images {other!r} and {image_id!r} have {same} "
                    f"({path}); an image may be listed once only, so remove one entry."
                )


def _parse(json_file: str, image_root: str) -> tuple[list[dict], list[dict], Quirks]:
    data = _read_json(json_file)
    cats = sorted(data.get("categories") or [], key=lambda c: int(c["id"]))
    id_map = {int(c["id"]): i for i, c in enumerate(cats)}
    quirks = Quirks(f"COCO {json_file}")

    records: dict[Any, dict] = {}
    for img in data["images"]:
        rec = _image_record(img, json_file, image_root, quirks)
        if rec["image_id"] in records:
            raise UserError(
                f"COCO json {json_file} has duplicate image id {rec['image_id']}; image ids must "
                "be unique."
            )
        records[rec["image_id"]] = rec
    _check_files(records, json_file, quirks)
    for ann in data.get("annotations") or []:
        cid = ann.get("category_id")
        if cid not in id_map:
            raise UserError(
                f"COCO json {json_file}: annotation {ann.get('id')} has unknown category_id "
                f"{cid}; known ids are {sorted(id_map)}."
            )
        where = f"annotation {ann.get('id')}"
        rec = records.get(ann.get("image_id"))
        if rec is None:
            quirks.add("orphan_annotation", f"{where} -> image_id {ann.get('image_id')!r}")
            continue
        try:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            quirks.add("no_box", where)
            continue
        box = clean_box(x, y, x + bw, y + bh, rec["width"], rec["height"], quirks, where)
        if box is None:
            continue
        area = ann.get("area")
        rec["annotations"].append(
            {
                "bbox": box,
                "category_id": id_map[cid],
                "iscrowd": int(ann.get("iscrowd", 0) or 0),
                "area": float(area) if isinstance(area, (int, float)) else box[2] * box[3],
            }
        )
    quirks.log()
    return list(records.values()), cats, quirks


def _load_cached(json_file: str, image_root: str) -> tuple[list[dict], list[dict], Quirks]:
    json_file = os.path.abspath(json_file)
    try:
        st = os.stat(json_file)
        key = f"{json_file}|{image_root}"
        hit = _CACHE.get(key)
        if hit and hit[0] == st.st_mtime and hit[1] == st.st_size:
            return hit[2], hit[3], hit[4]
    except OSError:
        key = ""
    dicts, cats, quirks = _parse(json_file, image_root)
    if key:
        _CACHE[key] = (st.st_mtime, st.st_size, dicts, cats, quirks)
    return dicts, cats, quirks


def load_coco_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Dataset dicts of a COCO json (deep copies, so callers may modify them).

    If ``dataset_name`` is given, its metadata receives ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id``, and the reader's quirks are kept for it
    (:func:`~detlab.data.datasets.quirks.dataset_quirks`).
    """
    import copy

    dicts, cats, quirks = _load_cached(json_file, image_root)
    if dataset_name is not None:
        _set_class_metadata(dataset_name, cats)
        record_quirks(dataset_name, quirks)
    return copy.deepcopy(dicts)


def load_stats(json_file: str) -> dict[str, int]:
    """``{"images", "skipped_images", "clipped_boxes", "dropped_boxes"}`` counted when
    ``json_file`` was loaded."""
    json_file = os.path.abspath(json_file)
    for key, hit in _CACHE.items():
        if key.split("|", 1)[0] == json_file:
            return {"images": len(hit[2]), **hit[4].counters()}
    return {"images": 0, "skipped_images": 0, "clipped_boxes": 0, "dropped_boxes": 0}


def _set_class_metadata(name: str, cats: list[dict]) -> None:
    meta = MetadataCatalog.get(name)
    classes = [str(c.get("name", c["id"])) for c in cats]
    mapping = {int(c["id"]): i for i, c in enumerate(cats)}
    if "thing_classes" not in meta:
        meta.thing_classes = classes
    if "thing_dataset_id_to_contiguous_id" not in meta:
        meta.thing_dataset_id_to_contiguous_id = mapping
    if "thing_contiguous_id_to_dataset_id" not in meta:
        meta.thing_contiguous_id_to_dataset_id = {v: k for k, v in mapping.items()}


def read_coco(json_file: str, image_root: str) -> ReadResult:
    """A COCO json as a :class:`ReadResult` (class names in ascending category-id order)."""
    import copy

    dicts, cats, quirks = _load_cached(json_file, image_root)
    classes = [str(c.get("name", c["id"])) for c in cats]
    ids = [int(c["id"]) for c in cats]
    return ReadResult(copy.deepcopy(dicts), classes, image_root, quirks, category_ids=ids)


def register_coco_instances(
    name: str, metadata: dict[str, Any] | None, json_file: str, image_root: str
) -> None:
    """Register a COCO json under ``name`` (lazy load) with metadata for evaluation.

    If ``json_file`` already exists it is read and checked now, so an unknown category id or a
    duplicate image id fails at registration; otherwise the check happens on first load.
    """
    json_file = os.path.abspath(os.path.expanduser(json_file))
    image_root = os.path.abspath(os.path.expanduser(image_root)) if image_root else ""
    DatasetCatalog.register(name, lambda: load_coco_json(json_file, image_root, name))
    meta = MetadataCatalog.get(name)
    meta.set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if metadata:
        meta.set(**metadata)
    if os.path.isfile(json_file):
        _, cats, quirks = _load_cached(json_file, image_root)
        _set_class_metadata(name, cats)
        record_quirks(name, quirks)
