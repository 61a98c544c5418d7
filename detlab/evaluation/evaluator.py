"""``COCOEvaluator`` for models, ``build_evaluator`` and ``inference_on_dataset``.

The evaluator collects model outputs as COCO detections (``process``), gathers them from all
DDP ranks, and reports the full box evaluation of :mod:`detlab.evaluation.report` against the
dataset's ground truth (``evaluate``). Ground truth comes from the data catalog:
``MetadataCatalog.get(name).json_file`` when the dataset has one, else the dataset dicts of
``DatasetCatalog.get(name)`` converted to COCO (contiguous class ids mapped back to the
dataset's ids with ``thing_dataset_id_to_contiguous_id``).

torch and ``detlab.data`` are imported inside the functions that need them, so importing this
module stays cheap and torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from typing import Any

from detlab.evaluation.coco_io import ensure_output_dir, gt_from_dataset_dicts, load_gt
from detlab.evaluation.report import EvaluationReport, run_evaluation, write_outputs

__all__ = ["COCOEvaluator", "DatasetEvaluator", "build_evaluator", "inference_on_dataset"]

logger = logging.getLogger(__name__)


class DatasetEvaluator:
    """Interface: ``reset()``, ``process(inputs, outputs)`` per batch, ``evaluate() -> dict``."""

    def reset(self) -> None:
        pass

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Any]) -> None:
        pass

    def evaluate(self) -> dict:
        return {}


def _metadata_value(meta: Any, key: str) -> Any:
    try:
        return meta.get(key, None) if hasattr(meta, "get") else getattr(meta, key, None)
    except (AttributeError, KeyError):
        return None


class COCOEvaluator(DatasetEvaluator):
    """COCO box evaluation of a registered dataset (or of a given COCO ground truth).

    Args:
        dataset_name: name in ``DatasetCatalog`` / ``MetadataCatalog``.
        output_dir: where ``coco_instances_results.json`` and the report files go (None: none).
        area_ranges: named size buckets (see ``parse_area_ranges``); None = COCO's.
        backend: ``"faster_coco_eval"`` or ``"pycocotools"``.
        iou_thresh, score_thresh: matching thresholds of P/R/F1 and the confusion matrix.
        worst_k: classes listed first in the printed report.
        plots: draw the PNG figures when ``output_dir`` is set.
        max_dets_per_image: keep at most this many top-scoring detections per image.
        gt: a COCO ground-truth dict or path, instead of the catalog's (keyword-only).
        distributed: gather predictions from all ranks when torch.distributed is initialised.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: str | None = None,
        *,
        area_ranges: Any = None,
        backend: str = "faster_coco_eval",
        iou_thresh: float = 0.5,
        score_thresh: float = 0.5,
        worst_k: int = 5,
        plots: bool = True,
        max_dets_per_image: int = 100,
        gt: Any = None,
        distributed: bool = True,
    ) -> None:
        self.dataset_name = dataset_name
        self.output_dir = output_dir
        self.area_ranges = area_ranges
        self.backend = backend
        self.iou_thresh = float(iou_thresh)
        self.score_thresh = float(score_thresh)
        self.worst_k = int(worst_k)
        self.plots = bool(plots)
        self.max_dets_per_image = int(max_dets_per_image)
        self.distributed = distributed
        self._gt_source = gt
        self._gt: dict | None = None
        self._reverse_id_map: dict[int, int] | None = None
        self.last_report: EvaluationReport | None = None
        self._predictions: list[dict] = []

    @classmethod
    def from_config(
        cls, cfg: Any, dataset_name: str, output_dir: str | None = None
    ) -> dict[str, Any]:
        """Arguments from ``TEST.*`` (area ranges, backend, thresholds, worst-k, plots)."""
        return {
            "dataset_name": dataset_name,
            "output_dir": output_dir,
            "area_ranges": list(cfg.TEST.AREA_RANGES),
            "backend": cfg.TEST.COCO_BACKEND,
            "iou_thresh": cfg.TEST.MATCH_IOU_THRESH,
            "score_thresh": cfg.TEST.MATCH_SCORE_THRESH,
            "worst_k": cfg.TEST.WORST_K,
            "plots": cfg.TEST.PLOTS,
            "max_dets_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
        }

    # ------------------------------------------------------------------ ground truth
    def _load_gt(self) -> dict:
        if self._gt is not None:
            return self._gt
        if self._gt_source is not None:
            self._gt = load_gt(self._gt_source)
            return self._gt
        from detlab.data import DatasetCatalog, MetadataCatalog

        meta = MetadataCatalog.get(self.dataset_name)
        json_file = _metadata_value(meta, "json_file")
        id_map = _metadata_value(meta, "thing_dataset_id_to_contiguous_id")
        if json_file:
            self._gt = load_gt(json_file)
        else:
            dicts = DatasetCatalog.get(self.dataset_name)
            classes = _metadata_value(meta, "thing_classes")
            self._gt = gt_from_dataset_dicts(dicts, classes, id_map)
        return self._gt

    def _id_map(self) -> dict[int, int]:
        """Contiguous class index -> dataset category id."""
        if self._reverse_id_map is None:
            id_map = None
            if self._gt_source is None:
                from detlab.data import MetadataCatalog

                meta = MetadataCatalog.get(self.dataset_name)
                id_map = _metadata_value(meta, "thing_dataset_id_to_contiguous_id")
            if id_map:
                self._reverse_id_map = {int(c): int(d) for d, c in id_map.items()}
            else:  # sorted category ids, as the COCO loaders assign contiguous ids
                cats = sorted(c["id"] for c in self._load_gt()["categories"])
                self._reverse_id_map = dict(enumerate(cats))
        return self._reverse_id_map

    # ------------------------------------------------------------------ protocol
    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: Sequence[Mapping[str, Any]], outputs: Sequence[Any]) -> None:
        """Store each image's ``instances`` (XYXY boxes in original pixels) as COCO records."""
        id_map = self._id_map()
        for inp, out in zip(inputs, outputs, strict=True):
            inst = out["instances"] if isinstance(out, Mapping) else out
            n = len(inst)
            if n == 0:
                continue
            boxes = _to_list(inst.boxes)
            scores = _to_list(inst.scores)
            classes = _to_list(inst.classes)
            order = sorted(range(n), key=lambda i: -scores[i])[: self.max_dets_per_image]
            for i in order:
                x0, y0, x1, y1 = (float(v) for v in boxes[i])
                self._predictions.append(
                    {
                        "image_id": inp["image_id"],
                        "category_id": id_map.get(int(classes[i]), int(classes[i])),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": float(scores[i]),
                    }
                )

    def _gather(self) -> list[dict] | None:
        """All ranks' predictions on rank 0 (None on the other ranks)."""
        if not self.distributed:
            return self._predictions
        try:
            import torch.distributed as dist
        except ImportError:  # pragma: no cover - torch is a hard dependency of training
            return self._predictions
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self._predictions
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._predictions)
        if dist.get_rank() != 0:
            return None
        return [p for part in gathered for p in part]

    def evaluate(self) -> dict:
        """``{"bbox": results}`` on rank 0 (percent, NaN-free); ``{}`` on other ranks."""
        predictions = self._gather()
        if predictions is None:
            return {}
        gt = self._load_gt()
        if self.output_dir:
            ensure_output_dir(self.output_dir)
            path = os.path.join(self.output_dir, "coco_instances_results.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(predictions, f)
        report = run_evaluation(
            gt,
            predictions,
            area_ranges=self.area_ranges,
            backend=self.backend,
            iou_thresh=self.iou_thresh,
            score_thresh=self.score_thresh,
            worst_k=self.worst_k,
        )
        self.last_report = report
        logger.info("Evaluation of %s:\n%s", self.dataset_name, report.console())
        if self.output_dir:
            write_outputs(report, self.output_dir, plots=self.plots)
        return {"bbox": report.results()}


def _to_list(value: Any) -> list:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
    return value.tolist() if hasattr(value, "tolist") else list(value)


def build_evaluator(cfg: Any, dataset_name: str, output_dir: str | None = None) -> DatasetEvaluator:
    """The evaluator for ``dataset_name`` per its metadata's ``evaluator_type`` (COCO)."""
    from detlab.data import MetadataCatalog
    from detlab.utils.errors import UserError

    kind = _metadata_value(MetadataCatalog.get(dataset_name), "evaluator_type") or "coco"
    if kind != "coco":
        raise UserError(
            f"Dataset '{dataset_name}' has evaluator_type '{kind}'; detlab evaluates 'coco' "
            "datasets, so set evaluator_type='coco' in its metadata."
        )
    from detlab.utils.registry import instantiate

    return instantiate(COCOEvaluator, cfg, dataset_name, output_dir)


def inference_on_dataset(
    model: Any, data_loader: Iterable[list[dict]], evaluator: DatasetEvaluator | None
) -> dict:
    """Run ``model`` over ``data_loader`` in eval mode under ``torch.no_grad()``; evaluate.

    The model's training/eval mode is restored afterwards. Returns ``evaluator.evaluate()``
    (``{}`` without an evaluator).
    """
    import torch

    if evaluator is None:
        evaluator = DatasetEvaluator()
    evaluator.reset()
    was_training = model.training
    start, n_images = time.perf_counter(), 0
    with ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        model.eval()
        try:
            for inputs in data_loader:
                outputs = model(inputs)
                evaluator.process(inputs, outputs)
                n_images += len(inputs)
        finally:
            model.train(was_training)
    elapsed = time.perf_counter() - start
    logger.info(
        "Inference on %d images took %.1f s (%.3f s / image).",
        n_images,
        elapsed,
        elapsed / max(n_images, 1),
    )
    results = evaluator.evaluate()
    return results if results is not None else {}
