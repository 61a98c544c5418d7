"""COCO box AP/AR by object size and by class, on faster-coco-eval or pycocotools (torch-free).

:func:`evaluate_coco` runs the chosen backend's ``evaluate`` + ``accumulate`` with the named
size buckets as extra area ranges, and reads every number from the accumulated arrays exactly
as ``COCOeval.summarize`` does (mean over entries > -1), so the 12 standard numbers equal the
backend's summary. Results are in percent; a number with no ground truth behind it (an empty
bucket, a class without boxes) is left out rather than reported as -1 or NaN.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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

BACKENDS = ("faster_coco_eval", "pycocotools")
#: COCO's size buckets in px² (the ``all`` range is added by the evaluation itself).
COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e5**2),
}
_ALL_RANGE = (0.0, 1e5**2)
_MAX_DETS = (1, 10, 100)

logger = logging.getLogger(__name__)


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
            hi_f = min(float(hi), _ALL_RANGE[1])
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
        if (lo_f, hi_f) == _ALL_RANGE or (lo_f, hi_f) in out.values():
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


def _run_backend(
    backend: str,
    gt: dict,
    preds: list[dict],
    area_ranges: Mapping[str, tuple[float, float]],
    cat_ids: Sequence[int] | None = None,
    det_arrays: tuple[np.ndarray, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``evaluate`` + ``accumulate`` on the chosen backend; returns precision, recall, thrs.

    ``cat_ids`` restricts the evaluation to those categories (sorted), e.g. for one worker.
    ``det_arrays`` (image ids, category ids, XYWH boxes, scores of ``preds``) lets the
    faster-coco-eval backend take all IoU matrices from one vectorised pass.
    """
    labels = ["all", *area_ranges]
    rngs = [list(_ALL_RANGE), *([float(lo), float(hi)] for lo, hi in area_ranges.values())]
    sink = io.StringIO()
    if backend == "faster_coco_eval":
        from faster_coco_eval.core.coco import COCO

        COCOeval = _faster_eval_class()
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise UserError(f"TEST.COCO_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": gt["images"],
            "categories": gt["categories"],
            "annotations": preds,
        }
        coco_dt.createIndex()
        if backend == "faster_coco_eval":
            ev = COCOeval(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        else:
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.areaRng = rngs
        ev.params.areaRngLbl = labels
        ev.params.maxDets = list(_MAX_DETS)
        if cat_ids is not None:
            ev.params.catIds = sorted(cat_ids)
        if backend == "faster_coco_eval" and det_arrays is not None:
            ev.iou_cache = _iou_cache(gt, det_arrays, ev.params.catIds)
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)
    recall = np.asarray(ev.eval["recall"], dtype=np.float64)
    return precision, recall, np.asarray(ev.params.iouThrs), np.asarray(ev.params.recThrs)


def _faster_eval_class() -> type:
    """faster-coco-eval's evaluator, taking IoUs from ``iou_cache`` when one is set."""
    from faster_coco_eval.core.faster_eval_api import COCOeval_faster

    class _CachedIoUEval(COCOeval_faster):
        iou_cache: dict | None = None

        def computeIoU(self, imgId: int, catId: int):  # noqa: N802, N803 (COCO's names)
            if self.iou_cache is None:
                return super().computeIoU(imgId, catId)
            return self.iou_cache.get((int(imgId), int(catId)), [])

    return _CachedIoUEval


def _iou_cache(gt: dict, det_arrays: tuple, cat_ids: Sequence[int]) -> dict | None:
    from detlab.evaluation.fast_iou import iou_matrices

    try:
        return iou_matrices(gt["annotations"], *det_arrays, cat_ids, _MAX_DETS[-1])
    except Exception:  # unusual inputs: let COCO compute its IoUs itself
        logger.debug("vectorised IoU failed; using COCO's computeIoU", exc_info=True)
        return None


def _fork_available() -> bool:
    import multiprocessing

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _backend_worker(conn: Any, args: tuple) -> None:
    try:
        conn.send(("ok", _run_backend(*args)))
    except BaseException as err:  # report anything to the parent, which re-raises
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def _run_backend_parallel(
    backend: str,
    gt: dict,
    preds: list[dict],
    area_ranges: Mapping[str, tuple[float, float]],
    cat_ids: Sequence[int],
    workers: int,
    det_arrays: tuple[np.ndarray, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_run_backend` with the categories split over forked processes.

    COCO's per-category numbers are independent (matching, max-dets and accumulation are all
    per category), so the class axis of the arrays is simply concatenated back.
    """
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    order = sorted(cat_ids)
    chunks = [order[i::workers] for i in range(workers) if order[i::workers]]
    procs = []
    for chunk in chunks[1:]:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_backend_worker,
            args=(send, (backend, gt, preds, area_ranges, chunk, det_arrays)),
        )
        proc.daemon = True
        proc.start()
        send.close()
        procs.append((proc, recv))
    parts = [_run_backend(backend, gt, preds, area_ranges, chunks[0], det_arrays)]
    for proc, recv in procs:
        try:
            status, payload = recv.recv()
        except EOFError:
            status, payload = "error", "the worker process died"
        proc.join()
        if status != "ok":
            raise RuntimeError(f"COCO evaluation worker failed: {payload}")
        parts.append(payload)
    position = {c: k for k, c in enumerate(order)}
    n = len(order)
    precision = np.empty((*parts[0][0].shape[:2], n, *parts[0][0].shape[3:]))
    recall = np.empty((parts[0][1].shape[0], n, *parts[0][1].shape[2:]))
    for chunk, (p, r, _, _) in zip(chunks, parts, strict=True):
        idx = [position[c] for c in chunk]
        precision[:, :, idx] = p
        recall[:, idx] = r
    return precision, recall, parts[0][2], parts[0][3]


def _empty_arrays(
    gt: dict, cat_ids: list[int], area_ranges: Mapping[str, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays COCO would accumulate with no detections: 0 where GT exists, else -1."""
    iou_thrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    rngs = [_ALL_RANGE, *area_ranges.values()]
    has_gt = np.zeros((len(cat_ids), len(rngs)), dtype=bool)
    index = {c: k for k, c in enumerate(cat_ids)}
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("ignore", 0):
            continue
        k = index[ann["category_id"]]
        for a, (lo, hi) in enumerate(rngs):
            if lo <= ann["area"] <= hi:
                has_gt[k, a] = True
    t, r, m = len(iou_thrs), len(rec_thrs), len(_MAX_DETS)
    value = np.where(has_gt, 0.0, -1.0)  # K×A
    precision = np.broadcast_to(value[None, None, :, :, None], (t, r, *value.shape, m)).copy()
    recall = np.broadcast_to(value[None, :, :, None], (t, *value.shape, m)).copy()
    return precision, recall, iou_thrs, rec_thrs


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
    if preds and workers > 1 and len(cat_ids) > 1 and _fork_available():
        precision, recall, iou_thrs, rec_thrs = _run_backend_parallel(
            backend, gt, preds, ranges, cat_ids, min(workers, len(cat_ids)), arrays
        )
    elif preds:
        precision, recall, iou_thrs, rec_thrs = _run_backend(
            backend, gt, preds, ranges, None, arrays
        )
    else:
        warnings.warn(
            "The predictions hold no detections; every metric is 0.", UserWarning, stacklevel=2
        )
        precision, recall, iou_thrs, rec_thrs = _empty_arrays(gt, cat_ids, ranges)
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
    for i, md in enumerate(_MAX_DETS):
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
