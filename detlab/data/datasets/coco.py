"""COCO-format datasets: load a COCO json into dataset dicts, register it, from Python or config.

``load_coco_json`` checks the file while reading it: an annotation whose ``category_id`` is not
among ``categories``, or two images with the same id, raise a :class:`UserError` naming the file
and the id. Boxes are repaired rather than fatal: a box reaching out of the image is clipped,
a box of zero or negative width/height is dropped; both are counted in ``load_stats(json_file)``.
Category ids (any integers) map to contiguous ``0..K-1`` in ascending id order and back via
``MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.utils.errors import UserError

__all__ = [
    "load_coco_json",
    "load_stats",
    "register_coco_instances",
    "register_from_config",
]

logger = logging.getLogger(__name__)

# json path -> (mtime, size, dicts, categories, stats); avoids re-parsing a validated file.
_CACHE: dict[str, tuple[float, int, list[dict], list[dict], dict[str, int]]] = {}


def _read_json(json_file: str) -> dict:
    if not os.path.isfile(json_file):
        raise UserError(f"COCO json {json_file} does not exist; check the json_file path.")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"COCO json {json_file} cannot be read as JSON ({err}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise UserError(f"COCO json {json_file} has no 'images' list; is it a COCO file?")
    return data


def _parse(json_file: str, image_root: str) -> tuple[list[dict], list[dict], dict[str, int]]:
    data = _read_json(json_file)
    cats = sorted(data.get("categories") or [], key=lambda c: int(c["id"]))
    id_map = {int(c["id"]): i for i, c in enumerate(cats)}
    stats = {"clipped_boxes": 0, "dropped_boxes": 0, "images": 0}

    records: dict[int, dict] = {}
    for img in data["images"]:
        try:
            image_id = img["id"]
            h, w = int(img["height"]), int(img["width"])
            fname = img["file_name"]
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"COCO json {json_file}: image entry {str(img)[:80]} lacks id, file_name, "
                "height or width."
            ) from None
        if image_id in records:
            raise UserError(
                f"COCO json {json_file} has duplicate image id {image_id}; image ids must be "
                "unique."
            )
        records[image_id] = {
            "file_name": os.path.join(image_root, fname) if image_root else fname,
            "height": h,
            "width": w,
            "image_id": image_id,
            "annotations": [],
        }
    for ann in data.get("annotations") or []:
        cid = ann.get("category_id")
        if cid not in id_map:
            raise UserError(
                f"COCO json {json_file}: annotation {ann.get('id')} has unknown category_id "
                f"{cid}; known ids are {sorted(id_map)}."
            )
        rec = records.get(ann.get("image_id"))
        if rec is None:
            raise UserError(
                f"COCO json {json_file}: annotation {ann.get('id')} refers to unknown image_id "
                f"{ann.get('image_id')}."
            )
        try:
            x, y, bw, bh = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            stats["dropped_boxes"] += 1
            continue
        if not all(math.isfinite(v) for v in (x, y, bw, bh)):  # NaN/Infinity in the json
            stats["dropped_boxes"] += 1
            continue
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + bw, float(rec["width"])), min(y + bh, float(rec["height"]))
        if x1 - x0 <= 0 or y1 - y0 <= 0 or bw <= 0 or bh <= 0:
            stats["dropped_boxes"] += 1
            continue
        if (x0, y0, x1, y1) != (x, y, x + bw, y + bh):
            stats["clipped_boxes"] += 1
        box = [x0, y0, x1 - x0, y1 - y0]
        rec["annotations"].append(
            {
                "bbox": box,
                "category_id": id_map[cid],
                "iscrowd": int(ann.get("iscrowd", 0)),
                "area": float(ann.get("area", box[2] * box[3])),
            }
        )
    stats["images"] = len(records)
    if stats["clipped_boxes"] or stats["dropped_boxes"]:
        logger.warning(
            "%s: clipped %d boxes reaching outside their image, dropped %d empty or invalid boxes.",
            json_file,
            stats["clipped_boxes"],
            stats["dropped_boxes"],
        )
    return list(records.values()), cats, stats


def _load_cached(json_file: str, image_root: str) -> tuple[list[dict], list[dict], dict]:
    json_file = os.path.abspath(json_file)
    try:
        st = os.stat(json_file)
        key = f"{json_file}|{image_root}"
        hit = _CACHE.get(key)
        if hit and hit[0] == st.st_mtime and hit[1] == st.st_size:
            return hit[2], hit[3], hit[4]
    except OSError:
        key = ""
    dicts, cats, stats = _parse(json_file, image_root)
    if key:
        _CACHE[key] = (st.st_mtime, st.st_size, dicts, cats, stats)
    return dicts, cats, stats


def load_coco_json(json_file: str, image_root: str, dataset_name: str | None = None) -> list[dict]:
    """Dataset dicts of a COCO json (deep copies, so callers may modify them).

    If ``dataset_name`` is given, its metadata receives ``thing_classes`` and
    ``thing_dataset_id_to_contiguous_id``.
    """
    import copy

    dicts, cats, _ = _load_cached(json_file, image_root)
    if dataset_name is not None:
        _set_class_metadata(dataset_name, cats)
    return copy.deepcopy(dicts)


def load_stats(json_file: str) -> dict[str, int]:
    """``{"images", "clipped_boxes", "dropped_boxes"}`` counted when ``json_file`` was loaded."""
    json_file = os.path.abspath(json_file)
    for key, hit in _CACHE.items():
        if key.split("|", 1)[0] == json_file:
            return dict(hit[4])
    return {"images": 0, "clipped_boxes": 0, "dropped_boxes": 0}


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
        _, cats, _ = _load_cached(json_file, image_root)
        _set_class_metadata(name, cats)


def register_from_config(cfg: Any) -> list[str]:
    """Register every ``DATASETS.REGISTER`` entry (``{name, json_file, image_root}``).

    Entries already registered with the same files are skipped, so calling this twice is safe.
    Returns the names registered by the call.
    """
    entries = list(cfg.DATASETS.REGISTER or [])
    done = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name") or not entry.get("json_file"):
            raise UserError(
                f"DATASETS.REGISTER[{i}] must be a mapping with name, json_file and image_root, "
                f"got {entry!r}."
            )
        name = str(entry["name"])
        json_file = os.path.abspath(os.path.expanduser(str(entry["json_file"])))
        image_root = entry.get("image_root") or os.path.dirname(json_file)
        image_root = os.path.abspath(os.path.expanduser(str(image_root)))
        if name in DatasetCatalog:
            meta = MetadataCatalog.get(name)
            if meta.get("json_file") == json_file and meta.get("image_root") == image_root:
                continue
            raise UserError(
                f"DATASETS.REGISTER[{i}] names '{name}', which is already registered with other "
                "files; choose another name."
            )
        if not os.path.isfile(json_file):
            raise UserError(
                f"DATASETS.REGISTER[{i}] ('{name}'): json_file {json_file} does not exist; "
                "paths are relative to the config file that declares them."
            )
        if not os.path.isdir(image_root):
            raise UserError(
                f"DATASETS.REGISTER[{i}] ('{name}'): image_root {image_root} is not a directory."
            )
        extra = {k: v for k, v in entry.items() if k not in ("name", "json_file", "image_root")}
        register_coco_instances(name, extra, json_file, image_root)
        done.append(name)
    return done
