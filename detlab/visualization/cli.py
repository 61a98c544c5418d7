"""``tools/visualize.py``: ground truth and/or predictions drawn on dataset images, as PNGs.

Predictions come from a COCO results file (``--predictions``, e.g. the evaluator's
``coco_instances_results.json``) or from a model (``MODEL.WEIGHTS``) run on the images with
the inference mapper. 16-bit and float images are shown with SAR display scaling
(dB + percentile stretch) unless ``--scaling`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from detlab.utils.cli import DetlabArgumentParser, parse_with_overrides, run_tool
from detlab.utils.errors import UserError
from detlab.visualization.draw import draw_instances, to_display_image

__all__ = [
    "load_predictions_json",
    "main",
    "predict_images",
    "visualize_dataset",
]


def build_parser() -> DetlabArgumentParser:
    p = DetlabArgumentParser(
        description="Draw ground truth and/or predictions on dataset images (PNG files).",
        epilog="Config overrides (KEY VALUE) may appear anywhere: MODEL.WEIGHTS out/model.pth",
    )
    p.add_argument("--config-file", metavar="FILE", help="config YAML (datasets, model)")
    p.add_argument("--dataset", help="registered dataset name (default: DATASETS.TEST[0])")
    p.add_argument("--gt", metavar="JSON", help="a COCO json to show instead of --dataset")
    p.add_argument("--image-root", metavar="DIR", help="image folder of --gt (default: its dir)")
    p.add_argument(
        "--source",
        choices=("gt", "pred", "both"),
        default=None,
        help="what to draw (default: both when predictions are available, else gt)",
    )
    p.add_argument("--predictions", metavar="JSON", help="COCO results file (list of dets)")
    p.add_argument("--score-thresh", type=float, default=0.3, help="hide predictions below")
    p.add_argument("--num-images", type=int, default=16, help="images to draw (0 = all)")
    p.add_argument("--image-ids", type=int, nargs="+", help="draw exactly these image ids")
    p.add_argument(
        "--scaling",
        default="auto",
        choices=("auto", "db", "log", "linear", "none", "minmax"),
        help="display scaling; auto = dB stretch for 16-bit/float single-channel (SAR)",
    )
    p.add_argument("--no-labels", action="store_true", help="boxes only, no class/score text")
    p.add_argument("--thickness", type=int, default=1, help="line width in pixels")
    p.add_argument("--output", default="./vis", help="folder for the PNG files")
    p.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return p


def load_predictions_json(path: str, id_map: dict[int, int] | None = None) -> dict[Any, dict]:
    """COCO results (``image_id, category_id, bbox XYWH, score``) → per image XYXY arrays.

    ``id_map`` maps dataset category ids to contiguous ids (``thing_dataset_id_to_contiguous_id``).
    Returns ``{image_id: {"boxes": N×4, "classes": N, "scores": N}}``.
    """
    if not os.path.isfile(path):
        raise UserError(f"Predictions file {path} does not exist; check --predictions.")
    try:
        with open(path, encoding="utf-8") as f:
            dets = json.load(f)
    except (OSError, ValueError) as err:
        raise UserError(f"Predictions file {path} is not valid JSON ({err}).") from None
    if isinstance(dets, dict) and "annotations" in dets:
        dets = dets["annotations"]
    if not isinstance(dets, list):
        raise UserError(f"Predictions file {path} must hold a list of COCO detections.")
    per: dict[Any, list] = {}
    for k, d in enumerate(dets):
        try:
            x, y, w, h = (float(v) for v in d["bbox"])
            cat = int(d["category_id"])
            score = float(d.get("score", 1.0))
            image_id = d["image_id"]
        except (KeyError, TypeError, ValueError):
            raise UserError(
                f"Predictions file {path}: entry {k} lacks image_id/category_id/bbox/score."
            ) from None
        cls = id_map.get(cat, cat) if id_map else cat
        per.setdefault(image_id, []).append((x, y, x + w, y + h, cls, score))
    return {
        i: {
            "boxes": np.array([r[:4] for r in rows], np.float32).reshape(-1, 4),
            "classes": np.array([r[4] for r in rows], np.int64),
            "scores": np.array([r[5] for r in rows], np.float32),
        }
        for i, rows in per.items()
    }


def predict_images(cfg: Any, model: Any, dicts: Sequence[dict]) -> dict[Any, dict]:
    """Run ``model`` (eval mode) on dataset dicts with the inference mapper."""
    import torch

    from detlab.data import build_mapper

    mapper = build_mapper(cfg, is_train=False)
    out: dict[Any, dict] = {}
    with torch.no_grad():
        for d in dicts:
            inp = mapper(d, np.random.default_rng(0))
            if inp is None:
                continue
            inst = model([inp])[0]["instances"]
            out[d["image_id"]] = {
                "boxes": inst.boxes.cpu().numpy(),
                "classes": inst.classes.cpu().numpy(),
                "scores": inst.scores.cpu().numpy(),
            }
    return out


def _gt_arrays(d: dict) -> tuple[np.ndarray, np.ndarray]:
    anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4)
    boxes[:, 2:] += boxes[:, :2]
    return boxes, np.array([int(a["category_id"]) for a in anns], np.int64)


def visualize_dataset(
    dicts: Sequence[dict],
    output_dir: str,
    *,
    class_names: Sequence[str] | None = None,
    predictions: dict[Any, dict] | None = None,
    draw_gt: bool = True,
    score_thresh: float = 0.3,
    scaling: str = "auto",
    labels: bool = True,
    thickness: int = 1,
) -> list[str]:
    """Write one PNG per dataset dict into ``output_dir``; returns the paths written.

    File names are ``<image_id>_<file stem>.png``. Unreadable images are skipped.
    """
    from detlab.data.transforms import read_image

    os.makedirs(output_dir, exist_ok=True)
    written = []
    for d in dicts:
        raw = read_image(d["file_name"])
        if raw is None:
            continue
        canvas = to_display_image(raw, scaling=scaling)
        kwargs: dict[str, Any] = {}
        if draw_gt:
            kwargs["gt_boxes"], kwargs["gt_classes"] = _gt_arrays(d)
        pred = (predictions or {}).get(d["image_id"])
        if predictions is not None:
            pred = pred or {"boxes": np.zeros((0, 4)), "classes": [], "scores": []}
            kwargs.update(
                pred_boxes=pred["boxes"], pred_classes=pred["classes"], pred_scores=pred["scores"]
            )
        drawn = draw_instances(
            canvas,
            class_names=class_names,
            score_thresh=score_thresh,
            labels=labels,
            thickness=thickness,
            **kwargs,
        )
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        path = os.path.join(output_dir, f"{d['image_id']}_{stem}.png")
        if not cv2.imwrite(path, drawn[:, :, ::-1]):
            raise UserError(f"Could not write {path}; check that --output is writable.")
        written.append(path)
    return written


def _select(dicts: list[dict], image_ids: Sequence[int] | None, num: int) -> list[dict]:
    if image_ids:
        by_id = {d["image_id"]: d for d in dicts}
        missing = [i for i in image_ids if i not in by_id]
        if missing:
            raise UserError(f"Image ids {missing} are not in the dataset; check --image-ids.")
        return [by_id[i] for i in image_ids]
    return dicts if num <= 0 else dicts[:num]


def _run(args: argparse.Namespace) -> int:
    from detlab.config import load_config
    from detlab.data import DatasetCatalog, MetadataCatalog, load_coco_json, register_from_config

    cfg = load_config(args.config_file, args.opts)
    if args.gt:
        root = args.image_root or os.path.dirname(os.path.abspath(args.gt))
        key = f"visualize:{os.path.abspath(args.gt)}"  # metadata of this json only
        dicts = load_coco_json(args.gt, root, key)
        meta = MetadataCatalog.get(key)
        name = os.path.splitext(os.path.basename(args.gt))[0]
    else:
        if not args.config_file and not args.dataset:
            raise UserError("Give --config-file (datasets from DATASETS.TEST), --dataset or --gt.")
        register_from_config(cfg)
        name = args.dataset or (cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "")
        if not name:
            raise UserError("No dataset to draw; pass --dataset NAME or set DATASETS.TEST.")
        dicts = DatasetCatalog.get(name)
        meta = MetadataCatalog.get(name)
    chosen = _select(dicts, args.image_ids, args.num_images)
    source = args.source or ("both" if args.predictions or cfg.MODEL.WEIGHTS else "gt")
    predictions = None
    if source in ("pred", "both"):
        if args.predictions:
            id_map = meta.get("thing_dataset_id_to_contiguous_id")
            predictions = load_predictions_json(args.predictions, id_map)
        else:
            from detlab.modeling import build_inference_model

            predictions = predict_images(cfg, build_inference_model(cfg), chosen)
    paths = visualize_dataset(
        chosen,
        os.path.join(args.output, name),
        class_names=meta.get("thing_classes"),
        predictions=predictions,
        draw_gt=source in ("gt", "both"),
        score_thresh=args.score_thresh,
        scaling=args.scaling,
        labels=not args.no_labels,
        thickness=args.thickness,
    )
    print(f"Wrote {len(paths)} images to {os.path.join(args.output, name)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/visualize.py``; returns the exit status."""
    args = parse_with_overrides(build_parser(), argv)
    return run_tool(lambda: _run(args), debug=args.debug)
