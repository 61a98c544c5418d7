"""COCO box AP/AR by object size and by class, on faster-coco-eval or pycocotools (torch-free).

:func:`evaluate_coco` runs the chosen backend's ``evaluate`` + ``accumulate`` with the named
size buckets as extra area ranges, and reads every number from the accumulated arrays exactly
as ``COCOeval.summarize`` does (mean over entries > -1), so the 12 standard numbers equal the
backend's summary. Results are in percent; a number with no ground truth behind it (an empty
bucket, a class without boxes) is left out rather than reported as -1 or NaN.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detlab.evaluation.coco_backends import (
    ALL_RANGE,
    BACKENDS,
    MAX_DETS,
    empty_arrays,
    fork_available,
    run_backend,
    run_backend_parallel,
)
from detlab.evaluation.coco_io import internal_ids, load_gt, load_predictions_arrays
from detlab.evaluation.matching import DetectionArrays
from detlab.utils.errors import UserError

__all__ = [
    "BACKENDS",
    "COCO_AREA_RANGES",
    "CocoMetrics",
    "bucket_suffixes",
    "evaluate_coco",
    "parse_area_ranges",
]

#: COCO's size buckets in px² (the ``all`` range is added by the evaluation itself).
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}


def parse_area_ranges(spec: Any) -> dict[str, tuple[float, float]]:
    """Named size buckets from a config value or a command-line string.

    Accepts ``"tiny:0:256,small:256:1024"``, a list of ``"name:lo:hi"`` strings, a list of
    ``[name, lo, hi]`` triples or a ``{name: [lo, hi]}`` mapping; ``hi`` may be ``inf``.
    Areas are px². An empty value means COCO's small/medium/large.
    """
    if spec is None or (isinstance(spec, (str, list, tuple, Mapping)) and len(spec) == 0):
        return dict(COCO_AREA_RANGES)
    items: list[tuple[Any, Any, Any]] = []
    if isinstance(spec, Mapping):
        for name, rng in spec.items():
            if not isinstance(rng, (list, tuple)) or len(rng) != 2:
                raise UserError(f"Area range '{name}' must be [min_area, max_area], got {rng!r}.")
            items.append((name, rng[0], rng[1]))
    else:
        parts: list[Any] = []
        for item in [spec] if isinstance(spec, str) else list(spec):
            if isinstance(item, str):
                parts.extend(p for p in item.split(",") if p.strip())
            else:
                parts.append(item)
        for part in parts:
            fields = part.split(":") if isinstance(part, str) else list(part)
            if len(fields) != 3:
                raise UserError(
                    f"Area range {part!r} must be NAME:MIN:MAX in px² (e.g. tiny:0:256)."
                )
            items.append(tuple(fields))  # type: ignore[arg-type]
    out: dict[str, tuple[float, float]] = {}
    for name, lo, hi in items:
        name = str(name).strip()
        try:
            lo_f = float(lo)
            hi_f = min(float(hi), ALL_RANGE[1])
        except (TypeError, ValueError):
            raise UserError(
                f"Area range '{name}' has bounds {lo!r}:{hi!r}; both must be numbers in px²."
            ) from None
        if not name or name == "all" or name in out:
            raise UserError(f"Area range name {name!r} is empty, 'all' or used twice.")
        if not 0 <= lo_f < hi_f:
            raise UserError(
                f"Area range '{name}' must satisfy 0 <= min < max, got {lo_f:g}:{hi_f:g}."
            )
        if (lo_f, hi_f) == ALL_RANGE or (lo_f, hi_f) in out.values():
            raise UserError(f"Area range '{name}' duplicates another range ({lo_f:g}:{hi_f:g}).")
        out[name] = (lo_f, hi_f)
    return out


_COCO_SUFFIX = {"small": "s", "medium": "m", "large": "l"}


def bucket_suffixes(names: Sequence[str]) -> dict[str, str]:
    """Metric-key suffix per bucket: COCO's ``s``/``m``/``l`` for small/medium/large (``APs``),
    the bucket's own name otherwise (``APtiny``); all full names if that would clash."""
    short = {n: _COCO_SUFFIX.get(n, n) for n in names}
    if len(set(short.values())) < len(short):
        return {n: n for n in names}
    return short


@dataclass
class CocoMetrics:
    """Accumulated COCO arrays plus the derived summary, in percent.

    ``precision`` is T×R×K×A×M and ``recall`` T×K×A×M (IoU thresholds, recall thresholds,
    classes, area ranges with ``all`` first, max-dets 1/10/100); -1 marks "no ground truth".
    ``gt`` and ``predictions`` are the checked inputs with images and annotations renumbered
    1..N (see :func:`~detlab.evaluation.coco_io.internal_ids`).
    """

    gt: dict
    predictions: list[dict]
    class_names: list[str]
    cat_ids: list[int]
    area_ranges: dict[str, tuple[float, float]]
    precision: np.ndarray
    recall: np.ndarray
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    backend: str
    summary: dict[str, float] = field(default_factory=dict)
    per_class: list[dict] = field(default_factory=list)
    det_arrays: DetectionArrays | None = None  # ``predictions`` as arrays, for matching

    @property
    def bucket_names(self) -> list[str]:
        return list(self.area_ranges)

    def results(self) -> dict[str, float]:
        """The flat ``bbox`` results dict: summary then ``<metric>-<class>`` entries."""
        out = dict(self.summary)
        for row in self.per_class:
            for key, value in row.items():
                if key not in ("class", "category_id", "num_gt") and value is not None:
                    out[f"{key}-{row['class']}"] = value
        return out


def _mean_valid(a: np.ndarray) -> float | None:
    valid = a[a > -1]
    return float(np.mean(valid)) * 100.0 if valid.size else None


def evaluate_coco(
    gt: str | os.PathLike | Mapping[str, Any],
    predictions: str | os.PathLike | Sequence[Mapping[str, Any]],
    area_ranges: Any = None,
    backend: str = "faster_coco_eval",
    workers: int = 1,
) -> CocoMetrics:
    """COCO box metrics of ``predictions`` against ``gt`` (paths or in-memory objects).

    Args:
        gt: COCO ground-truth dict or json path.
        predictions: COCO results list or json path (XYWH px boxes with scores).
        area_ranges: named size buckets (see :func:`parse_area_ranges`); None = COCO's.
        backend: ``"faster_coco_eval"`` or ``"pycocotools"``.
        workers: processes to split the categories over (Linux fork; 1 = this process only).
            Use more than 1 only from a process without threads in flight (not from a
            training loop).

    Returns:
        :class:`CocoMetrics` with ``summary`` (AP, AP50, AP75, AP<b>, AR1, AR10, AR100, AR<b>
        for each bucket suffix ``b``) and ``per_class`` rows (AP, AP50, AP75, AP<b>), percent.
    """
    if backend not in BACKENDS:
        raise UserError(f"TEST.COCO_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    gt = load_gt(gt)
    preds, boxes, scores = load_predictions_arrays(predictions, gt)
    gt, preds = internal_ids(gt, preds)
    ranges = parse_area_ranges(area_ranges)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    cat_ids = [c["id"] for c in cats]
    class_names = [str(c.get("name", c["id"])) for c in cats]
    if len(set(class_names)) < len(class_names):  # keep per-class result keys distinct
        class_names = [
            f"{n} ({c['id']})" if class_names.count(n) > 1 else n
            for n, c in zip(class_names, cats, strict=True)
        ]
    det_image = np.fromiter((d["image_id"] for d in preds), np.int64, len(preds))
    arrays: tuple | None
    try:  # integer category ids (as COCO has them) allow the vectorised IoU pass
        det_cat = np.fromiter((d["category_id"] for d in preds), np.int64, len(preds))
        arrays = (det_image, det_cat, boxes.reshape(-1, 4), scores)
    except (TypeError, ValueError, OverflowError):
        arrays = None
    if preds and workers > 1 and len(cat_ids) > 1 and fork_available():
        precision, recall, iou_thrs, rec_thrs = run_backend_parallel(
            backend, gt, preds, ranges, cat_ids, min(workers, len(cat_ids)), arrays
        )
    elif preds:
        precision, recall, iou_thrs, rec_thrs = run_backend(
            backend, gt, preds, ranges, None, arrays
        )
    else:
        warnings.warn(
            "The predictions hold no detections; every metric is 0.", UserWarning, stacklevel=2
        )
        precision, recall, iou_thrs, rec_thrs = empty_arrays(gt, cat_ids, ranges)
    metrics = CocoMetrics(
        gt=gt,
        predictions=preds,
        class_names=class_names,
        cat_ids=cat_ids,
        area_ranges=ranges,
        precision=precision,
        recall=recall,
        iou_thrs=iou_thrs,
        rec_thrs=rec_thrs,
        backend=backend,
    )
    k_of = {c: k for k, c in enumerate(cat_ids)}
    metrics.det_arrays = DetectionArrays(
        image_index=det_image - 1,
        class_index=np.fromiter((k_of[d["category_id"]] for d in preds), np.int64, len(preds)),
        boxes_xywh=boxes.reshape(-1, 4),
        scores=scores,
    )
    _summarise(metrics)
    return metrics


def _summarise(m: CocoMetrics) -> None:
    p, r = m.precision, m.recall
    t50 = np.where(np.isclose(m.iou_thrs, 0.5))[0]
    t75 = np.where(np.isclose(m.iou_thrs, 0.75))[0]
    suffix = bucket_suffixes(m.bucket_names)
    s: dict[str, float | None] = {
        "AP": _mean_valid(p[:, :, :, 0, -1]),
        "AP50": _mean_valid(p[t50][:, :, :, 0, -1]),
        "AP75": _mean_valid(p[t75][:, :, :, 0, -1]),
    }
    for a, name in enumerate(m.bucket_names, start=1):
        s[f"AP{suffix[name]}"] = _mean_valid(p[:, :, :, a, -1])
    for i, md in enumerate(MAX_DETS):
        s[f"AR{md}"] = _mean_valid(r[:, :, 0, i])
    for a, name in enumerate(m.bucket_names, start=1):
        s[f"AR{suffix[name]}"] = _mean_valid(r[:, :, a, -1])
    m.summary = {k: v for k, v in s.items() if v is not None}

    num_gt = _count_gt(m)
    rows = []
    for k, (cid, name) in enumerate(zip(m.cat_ids, m.class_names, strict=True)):
        row: dict[str, Any] = {"class": name, "category_id": cid, "num_gt": int(num_gt[k])}
        row["AP"] = _mean_valid(p[:, :, k, 0, -1])
        row["AP50"] = _mean_valid(p[t50][:, :, k, 0, -1])
        row["AP75"] = _mean_valid(p[t75][:, :, k, 0, -1])
        for a, bname in enumerate(m.bucket_names, start=1):
            row[f"AP{suffix[bname]}"] = _mean_valid(p[:, :, k, a, -1])
        rows.append(row)
    m.per_class = rows


def _count_gt(m: CocoMetrics) -> np.ndarray:
    index = {c: k for k, c in enumerate(m.cat_ids)}
    counts = np.zeros(len(m.cat_ids), dtype=np.int64)
    for ann in m.gt["annotations"]:
        if not ann.get("iscrowd", 0):
            counts[index[ann["category_id"]]] += 1
    return counts
