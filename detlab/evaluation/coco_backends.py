"""Running a COCO backend (faster-coco-eval or pycocotools) to the accumulated arrays.

:func:`run_backend` evaluates and accumulates box detections with the given size buckets and
returns COCO's ``precision`` (T×R×K×A×M) and ``recall`` (T×K×A×M) arrays;
:func:`run_backend_parallel` splits the categories over forked processes (per-category
numbers are independent in COCO, so the class axis is concatenated back);
:func:`empty_arrays` gives the arrays COCO would produce with no detections. Torch-free.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from detlab.utils.errors import UserError

__all__ = [
    "ALL_RANGE",
    "BACKENDS",
    "MAX_DETS",
    "empty_arrays",
    "fork_available",
    "run_backend",
    "run_backend_parallel",
]

BACKENDS = ("faster_coco_eval", "pycocotools")
ALL_RANGE = (0.0, 1e5**2)  # COCO's "all" area range, px²
MAX_DETS = (1, 10, 100)

logger = logging.getLogger(__name__)


def run_backend(
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
    rngs = [list(ALL_RANGE), *([float(lo), float(hi)] for lo, hi in area_ranges.values())]
    sink = io.StringIO()
    if backend == "faster_coco_eval":
        from faster_coco_eval.core.coco import COCO

        COCOeval = _faster_eval_class()
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise UserError(f"TEST.COCO_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    # faster-coco-eval reads the record lists directly (integer ids, as renumbered by
    # evaluate_coco); otherwise both backends index the records as usual.
    fast = (
        backend == "faster_coco_eval"
        and det_arrays is not None
        and all(isinstance(c["id"], int) for c in gt["categories"])
        and all(isinstance(img["id"], int) for img in gt["images"])
    )
    with contextlib.redirect_stdout(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_dt = COCO()
        coco_dt.dataset = {
            "images": gt["images"],
            "categories": gt["categories"],
            "annotations": preds,
        }
        if fast:  # the evaluator below reads the records directly: no per-record index needed
            for coco in (coco_gt, coco_dt):
                coco.imgs = {img["id"]: img for img in gt["images"]}
                coco.cats = {cat["id"]: cat for cat in gt["categories"]}
        else:
            coco_gt.createIndex()
            coco_dt.createIndex()
        if backend == "faster_coco_eval":
            ev = COCOeval(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        else:
            ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.areaRng = rngs
        ev.params.areaRngLbl = labels
        ev.params.maxDets = list(MAX_DETS)
        if cat_ids is not None:
            ev.params.catIds = sorted(cat_ids)
        if fast:
            ev.records = (gt["annotations"], preds)
            ev.iou_cache = _iou_cache(gt, det_arrays, ev.params.catIds)
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"], dtype=np.float64)
    recall = np.asarray(ev.eval["recall"], dtype=np.float64)
    return precision, recall, np.asarray(ev.params.iouThrs), np.asarray(ev.params.recThrs)


def _faster_eval_class() -> type:
    """faster-coco-eval's evaluator, fed from record lists and an IoU cache when set.

    ``records = (gt_annotations, detections)`` replaces the index look-ups of ``_prepare``
    (the same records reach the C++ datasets in the same order: dataset order within each
    image and category); ``iou_cache`` replaces the per-(image, category) ``computeIoU``.
    """
    from faster_coco_eval.core import mask as mask_utils
    from faster_coco_eval.core.faster_eval_api import COCOeval_faster

    class _CachedIoUEval(COCOeval_faster):
        iou_cache: dict | None = None
        records: tuple[list[dict], list[dict]] | None = None

        def _prepare(self) -> None:
            if self.records is None or self.lvis_style or not self.params.useCats:
                return super()._prepare()
            p = self.params
            self.gt_dataset.clean()
            self.dt_dataset.clean()
            cats = {int(c) for c in p.catIds}
            gts = [g for g in self.records[0] if g["category_id"] in cats]
            dts = [d for d in self.records[1] if d["category_id"] in cats]
            for anns in (gts, dts):
                mask_utils.calculateRleForAllAnnotations(
                    anns, {}, p.compute_rle, p.compute_boundary,
                    self.boundary_dilation_ratio, self.boundary_cpu_count,
                )  # fmt: skip
            gt_pairs, dt_pairs = set(), set()
            for gt in gts:
                gt["ignore"] = int(gt.get("iscrowd", 0))
                self.gt_dataset.append_ref(gt["image_id"], gt["category_id"], gt)
                gt_pairs.add((gt["image_id"], gt["category_id"]))
            for dt in dts:
                self.dt_dataset.append_ref(dt["image_id"], dt["category_id"], dt)
                dt_pairs.add((dt["image_id"], dt["category_id"]))
            self._nonempty_iou_pairs = gt_pairs & dt_pairs

        def computeIoU(self, imgId: int, catId: int):  # noqa: N802, N803 (COCO's names)
            if self.iou_cache is None:
                return super().computeIoU(imgId, catId)
            return self.iou_cache.get((int(imgId), int(catId)), [])

    return _CachedIoUEval


def _iou_cache(gt: dict, det_arrays: tuple, cat_ids: Sequence[int]) -> dict | None:
    from detlab.evaluation.fast_iou import iou_matrices

    try:
        return iou_matrices(gt["annotations"], *det_arrays, cat_ids, MAX_DETS[-1])
    except Exception:  # unusual inputs: let COCO compute its IoUs itself
        logger.debug("vectorised IoU failed; using COCO's computeIoU", exc_info=True)
        return None


def fork_available() -> bool:
    import multiprocessing

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def _backend_worker(conn: Any, args: tuple) -> None:
    try:
        conn.send(("ok", run_backend(*args)))
    except BaseException as err:  # report anything to the parent, which re-raises
        conn.send(("error", f"{type(err).__name__}: {err}"))
    finally:
        conn.close()


def run_backend_parallel(
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
    parts = [run_backend(backend, gt, preds, area_ranges, chunks[0], det_arrays)]
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


def empty_arrays(
    gt: dict, cat_ids: list[int], area_ranges: Mapping[str, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The arrays COCO would accumulate with no detections: 0 where GT exists, else -1."""
    iou_thrs = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    rngs = [ALL_RANGE, *area_ranges.values()]
    has_gt = np.zeros((len(cat_ids), len(rngs)), dtype=bool)
    index = {c: k for k, c in enumerate(cat_ids)}
    for ann in gt["annotations"]:
        if ann.get("iscrowd", 0) or ann.get("ignore", 0):
            continue
        k = index[ann["category_id"]]
        for a, (lo, hi) in enumerate(rngs):
            if lo <= ann["area"] <= hi:
                has_gt[k, a] = True
    t, r, m = len(iou_thrs), len(rec_thrs), len(MAX_DETS)
    value = np.where(has_gt, 0.0, -1.0)  # K×A
    precision = np.broadcast_to(value[None, None, :, :, None], (t, r, *value.shape, m)).copy()
    recall = np.broadcast_to(value[None, :, :, None], (t, *value.shape, m)).copy()
    return precision, recall, iou_thrs, rec_thrs
