"""Reading and checking COCO ground truth and detection results (torch-free).

Ground truth is a COCO dict (``images``, ``annotations``, ``categories``) or a path to one;
predictions are a COCO results list (``image_id``, ``category_id``, ``bbox`` XYWH px,
``score``) or a path to one. Every problem a user can cause (unreadable or malformed JSON,
unknown image or category ids, a bbox that is not four finite numbers) raises
:class:`~detlab.utils.errors.UserError` with one sentence naming the file and the record.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detlab.utils.errors import UserError

__all__ = [
    "ensure_output_dir",
    "gt_from_dataset_dicts",
    "internal_ids",
    "load_gt",
    "load_json_file",
    "load_predictions",
    "load_predictions_arrays",
]


try:  # orjson parses large result files about 1.5x faster; the stdlib parser is the fallback
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads


def ensure_output_dir(path: str | os.PathLike) -> str:
    """Create the output folder ``path`` (and parents) or raise a one-sentence UserError."""
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise UserError(
            f"Cannot create the output folder {path}: {err.strerror or err}; choose another one."
        ) from None
    if not os.access(path, os.W_OK):
        raise UserError(f"The output folder {path} is not writable; choose another one.")
    return path


def load_json_file(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """``json.load`` with one-sentence errors: missing file, or the position of a syntax error."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"The {what} {path} does not exist; check the path.")
    try:
        with open(path, "rb") as f:
            return _loads(f.read())
    except json.JSONDecodeError as err:
        raise UserError(
            f"The {what} {path} is not valid JSON at line {err.lineno}, column {err.colno} "
            f"(character {err.pos}): {err.msg}."
        ) from None
    except UnicodeDecodeError as err:
        raise UserError(f"The {what} {path} is not UTF-8 text (byte {err.start}).") from None
    except OSError as err:
        raise UserError(f"The {what} {path} cannot be read: {err.strerror}.") from None


def _bad_box(bbox: Any) -> bool:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return True
    for v in bbox:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return True
    return False


def load_gt(gt: str | os.PathLike | Mapping[str, Any]) -> dict:
    """A checked COCO ground-truth dict from a path or a dict (the dict is not modified).

    Annotations get ``iscrowd`` (default 0), ``area`` (default w·h) and ``id`` (default
    1-based index) when missing, so the same dict works with both COCO backends.
    """
    src = os.fspath(gt) if isinstance(gt, (str, os.PathLike)) else "ground-truth dict"
    data = load_json_file(gt, "ground-truth file") if src != "ground-truth dict" else gt
    if not isinstance(data, Mapping):
        raise UserError(
            f"The ground truth {src} must be a COCO object with 'images', 'annotations' and "
            f"'categories', not a {type(data).__name__}."
        )
    missing = [k for k in ("images", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise UserError(
            f"The ground truth {src} has no '{missing[0]}' list; a COCO ground-truth file needs "
            "'images', 'annotations' and 'categories'."
        )
    images = data["images"]
    for i, img in enumerate(images):
        if not isinstance(img, Mapping) or "id" not in img:
            raise UserError(f"The ground truth {src}: images[{i}] has no 'id'.")
    categories = data["categories"]
    for i, cat in enumerate(categories):
        if not isinstance(cat, Mapping) or "id" not in cat:
            raise UserError(f"The ground truth {src}: categories[{i}] has no 'id'.")
    img_ids = {img["id"] for img in images}
    if len(img_ids) < len(images):
        seen: set = set()
        dup = next(img["id"] for img in images if img["id"] in seen or seen.add(img["id"]))
        raise UserError(f"The ground truth {src} lists image id {dup!r} more than once.")
    cat_ids = {cat["id"] for cat in categories}
    if len(cat_ids) < len(categories):
        raise UserError(f"The ground truth {src} lists a category id more than once.")
    anns_out = []
    used_ids = {a.get("id") for a in data.get("annotations") or [] if isinstance(a, Mapping)}
    next_id = 1
    for i, ann in enumerate(data.get("annotations") or []):
        if not isinstance(ann, Mapping):
            raise UserError(f"The ground truth {src}: annotations[{i}] is not an object.")
        if _bad_box(ann.get("bbox")):
            raise UserError(
                f"The ground truth {src}: annotations[{i}] (image_id {ann.get('image_id')!r}) has "
                f"bbox {ann.get('bbox')!r}; expected [x, y, width, height] of four numbers."
            )
        if ann.get("image_id") not in img_ids:
            raise UserError(
                f"The ground truth {src}: annotations[{i}] refers to image_id "
                f"{ann.get('image_id')!r}, which is not in 'images'."
            )
        if ann.get("category_id") not in cat_ids:
            raise UserError(
                f"The ground truth {src}: annotations[{i}] has category_id "
                f"{ann.get('category_id')!r}, which is not in 'categories'."
            )
        ann = dict(ann)
        ann.setdefault("iscrowd", 0)
        if ann.get("area") is None:
            ann["area"] = float(ann["bbox"][2]) * float(ann["bbox"][3])
        if ann.get("id") is None:
            while next_id in used_ids:
                next_id += 1
            ann["id"] = next_id
            used_ids.add(next_id)
        anns_out.append(ann)
    out = dict(data)
    out["annotations"] = anns_out
    return out


def internal_ids(gt: dict, predictions: list[dict]) -> tuple[dict, list[dict]]:
    """Renumber images and annotations 1..N for the COCO backends (category ids are kept).

    Both backends index annotations by ``id`` (duplicates would be dropped, and id 0 reads as
    "unmatched") and faster-coco-eval needs integer image ids; renumbering avoids all three.
    ``gt`` must come from :func:`load_gt` and ``predictions`` from :func:`load_predictions`
    (their annotation and detection dicts are owned and updated in place).
    """
    img_map = {img["id"]: i + 1 for i, img in enumerate(gt["images"])}
    images = [{**img, "id": i + 1} for i, img in enumerate(gt["images"])]
    for j, ann in enumerate(gt["annotations"]):
        ann["id"] = j + 1
        ann["image_id"] = img_map[ann["image_id"]]
    for det in predictions:
        det["image_id"] = img_map[det["image_id"]]
    return {**gt, "images": images}, predictions


def _few(values: Sequence[Any], n: int = 5) -> str:
    shown = ", ".join(repr(v) for v in values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def load_predictions(
    pred: str | os.PathLike | Sequence[Mapping[str, Any]], gt: Mapping[str, Any]
) -> list[dict]:
    """Checked COCO detection results; see :func:`load_predictions_arrays`."""
    return load_predictions_arrays(pred, gt)[0]


def load_predictions_arrays(
    pred: str | os.PathLike | Sequence[Mapping[str, Any]], gt: Mapping[str, Any]
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Checked COCO detection results (XYWH boxes, one dict per box) against ``gt``.

    Returns the records with ``area`` = w·h, ``iscrowd`` 0 and a 1-based ``id`` added (what
    COCO's ``loadRes`` adds; records passed in memory are copied, not modified), their boxes
    (N×4 XYWH float64) and scores (N). Raises
    UserError naming a few unknown image/category ids, or the first record whose bbox is not
    four finite numbers.
    """
    if isinstance(pred, (str, os.PathLike)):
        src, owned = f"predictions file {os.fspath(pred)}", True
        data = load_json_file(pred, "predictions file")
    else:
        src, data, owned = "predictions", pred, False
    if isinstance(data, Mapping) and isinstance(data.get("annotations"), list):
        data = data["annotations"]  # a COCO-style dict of results is accepted too
    if not isinstance(data, (list, tuple)):
        raise UserError(
            f"The {src} must be a JSON list of detections "
            "({image_id, category_id, bbox, score}), not a "
            f"{type(data).__name__}."
        )
    img_ids = {img["id"] for img in gt["images"]}
    cat_ids = {cat["id"] for cat in gt["categories"]}
    if not all(isinstance(det, dict) for det in data):
        i = next(i for i, det in enumerate(data) if not isinstance(det, dict))
        raise UserError(f"The {src}: record {i} is a {type(data[i]).__name__}, not an object.")
    boxes = _box_array([det.get("bbox") for det in data])
    scores = _score_array([det.get("score", 1.0) for det in data])
    if boxes is None or scores is None:
        _raise_first_bad_record(data, src)
    bad_img = {det.get("image_id") for det in data} - img_ids
    bad_cat = {det.get("category_id") for det in data} - cat_ids
    if bad_img or bad_cat:
        parts = []
        if bad_img:
            parts.append(f"image ids not in the ground truth: {_few(sorted(bad_img, key=str))}")
        if bad_cat:
            parts.append(f"category ids not in the ground truth: {_few(sorted(bad_cat, key=str))}")
        raise UserError(
            f"The {src} has {' and '.join(parts)}; predictions must use the ground truth's "
            "image and category ids."
        )
    # A file's records are ours to complete in place; caller-owned records are copied first.
    records = data if owned else [dict(det) for det in data]
    areas = (boxes[:, 2] * boxes[:, 3]).tolist()
    for i, det in enumerate(records):
        det["area"] = areas[i]
        det["iscrowd"] = 0
        det["id"] = i + 1
        det.setdefault("score", 1.0)
    return list(records), boxes, scores


def _box_array(boxes: list[Any]) -> np.ndarray | None:
    """N×4 float array of finite numbers, or None when any record is malformed."""
    try:
        arr = np.asarray(boxes) if boxes else np.zeros((0, 4))
    except (ValueError, TypeError):
        return None
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.dtype.kind not in "iuf":
        return None
    arr = arr.astype(np.float64, copy=False)
    return arr if np.isfinite(arr).all() else None


def _score_array(scores: list[Any]) -> np.ndarray | None:
    try:
        arr = np.asarray(scores) if scores else np.zeros(0)
    except (ValueError, TypeError):
        return None
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        return None
    arr = arr.astype(np.float64, copy=False)
    return arr if not np.isnan(arr).any() else None


def _raise_first_bad_record(data: Sequence[Mapping[str, Any]], src: str) -> None:
    for i, det in enumerate(data):
        bbox = det.get("bbox")
        if _bad_box(bbox):
            raise UserError(
                f"The {src}: record {i} (image_id {det.get('image_id')!r}) has bbox {bbox!r}; "
                "expected [x, y, width, height] of four finite numbers."
            )
        score = det.get("score", 1.0)
        if isinstance(score, bool) or not isinstance(score, (int, float)) or score != score:
            raise UserError(
                f"The {src}: record {i} (image_id {det.get('image_id')!r}) has score "
                f"{score!r}; expected a number."
            )
    raise UserError(f"The {src} holds a malformed bbox or score.")  # not reached in practice


def gt_from_dataset_dicts(
    dataset_dicts: Sequence[Mapping[str, Any]],
    thing_classes: Sequence[str] | None = None,
    id_map: Mapping[int, int] | None = None,
) -> dict:
    """COCO ground truth from detlab dataset dicts (contiguous ``category_id`` 0..K-1).

    ``id_map`` is ``thing_dataset_id_to_contiguous_id``; contiguous ids are mapped back to the
    original ids with it (identity when None). ``thing_classes`` names the categories (default:
    the contiguous id as text). Dicts with ``labelled: False`` (event windows without a label
    timestamp) are left out.
    """
    if id_map:
        reverse = {int(c): int(d) for d, c in id_map.items()}
    else:
        n = len(thing_classes) if thing_classes is not None else 0
        seen = {int(a["category_id"]) for d in dataset_dicts for a in d.get("annotations") or []}
        reverse = {c: c for c in range(max([n - 1, *seen], default=-1) + 1)}
    categories = []
    for contiguous, dataset_id in sorted(reverse.items()):
        if thing_classes is not None and contiguous < len(thing_classes):
            name = str(thing_classes[contiguous])
        else:
            name = str(dataset_id)
        categories.append({"id": dataset_id, "name": name})
    images, annotations = [], []
    for d in dataset_dicts:
        if d.get("labelled") is False:
            continue  # event windows without a label timestamp are not evaluated
        images.append(
            {
                "id": d["image_id"],
                "width": int(d.get("width", 0)),
                "height": int(d.get("height", 0)),
                "file_name": str(d.get("file_name", "")),
            }
        )
        for a in d.get("annotations") or []:
            if int(a.get("ignore", 0)):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            contiguous = int(a["category_id"])
            if contiguous not in reverse:
                raise UserError(
                    f"Dataset image {d['image_id']!r} has category_id {contiguous}, which is not "
                    f"among the {len(reverse)} classes of its metadata."
                )
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": d["image_id"],
                    "category_id": reverse[contiguous],
                    "bbox": [x, y, w, h],
                    "area": float(a["area"]) if a.get("area") is not None else w * h,
                    "iscrowd": int(a.get("iscrowd", 0)),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}
