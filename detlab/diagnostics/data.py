"""Data checks: datasets registered, files present and decodable, classes, boxes, counts, the
data audit (reader irregularities, duplicates, leaks, sizes; see ``data_audit``); mapper output
sanity."""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from detlab.diagnostics.core import FAIL, PASS, SKIP, WARN, Report
from detlab.diagnostics.data_audit import audit_datasets

__all__ = ["check_datasets", "check_transforms", "model_num_classes"]


def model_num_classes(cfg: Any) -> tuple[int, str]:
    """(number of classes the model predicts, the config key that sets it)."""
    if cfg.MODEL.META_ARCHITECTURE == "FasterRCNN":
        return int(cfg.MODEL.ROI_HEADS.NUM_CLASSES), "MODEL.ROI_HEADS.NUM_CLASSES"
    return int(cfg.MODEL.FCOS.NUM_CLASSES), "MODEL.FCOS.NUM_CLASSES"


def _dataset_names(cfg: Any) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key in ("TRAIN", "TEST"):
        for name in getattr(cfg.DATASETS, key):
            if name not in [n for n, _ in out]:
                out.append((name, key.lower()))
    return out


def check_datasets(cfg: Any, report: Report, max_images: int = 50) -> dict[str, list[dict]]:
    """Per dataset of DATASETS.TRAIN / TEST; returns the loaded dicts of the good ones."""
    from detlab.data import DatasetCatalog, MetadataCatalog, register_from_config

    s = "data"
    loaded: dict[str, list[dict]] = {}
    read: dict[str, list[dict]] = {}  # every dataset that loaded, for the audit
    if (
        report.run(
            s,
            "DATASETS.REGISTER",
            lambda: register_from_config(cfg) or True,
            "fix the DATASETS.REGISTER entry (name, format and that format's fields).",
        )
        is None
    ):
        return loaded  # fmt: skip
    if not _dataset_names(cfg):
        report.add(
            s,
            "datasets",
            FAIL,
            "DATASETS.TRAIN and DATASETS.TEST are empty",
            "set DATASETS.TRAIN (and DATASETS.TEST) to registered dataset names.",
        )
        return loaded  # fmt: skip
    k, key = model_num_classes(cfg)
    for name, split in _dataset_names(cfg):
        tag = f"{name} ({split})"
        if name not in DatasetCatalog.list():
            from detlab.utils.registry import closest_matches

            hint = closest_matches(name, DatasetCatalog.list(), n=1)
            report.add(
                s,
                tag,
                FAIL,
                f"dataset '{name}' is not registered"
                + (f"; did you mean '{hint[0]}'?" if hint else ""),
                "register it under DATASETS.REGISTER ({name, format, ...}; see datasets/README.md) "
                "or with register_coco_instances, or fix the name in DATASETS.*.",
            )
            continue  # fmt: skip
        dicts = report.run(s, tag, lambda n=name: DatasetCatalog.get(n),
                           "fix the annotation file named in the message.")  # fmt: skip
        if dicts is None:
            continue
        if not dicts:
            report.add(
                s,
                tag,
                FAIL,
                "the dataset has no images",
                "check the annotation file: its 'images' list is empty.",
            )
            continue  # fmt: skip
        ok = _check_files(report, tag, dicts, max_images)
        meta = MetadataCatalog.get(name)
        ok &= _check_classes(report, name, tag, dicts, meta, k, key, split)
        _check_boxes(report, tag, dicts)
        read[name] = dicts
        if ok:
            loaded[name] = dicts
    audit_datasets(cfg, report, read)
    return loaded


def _check_files(report: Report, tag: str, dicts: list[dict], max_images: int) -> bool:
    from detlab.data.transforms import read_image

    s = "data"
    missing = [d["file_name"] for d in dicts if not os.path.isfile(d["file_name"])]
    if missing:
        report.add(
            s,
            f"{tag} image files",
            FAIL,
            f"{len(missing)} of {len(dicts)} image files are missing (first: {missing[0]})",
            "check image_root of the dataset (DATASETS.REGISTER image_root, or the "
            "image_root given to register_coco_instances) and the file_name entries.",
            missing=len(missing),
            first_missing=missing[0],
        )
        return False  # fmt: skip
    step = max(1, len(dicts) // max(max_images, 1))
    sample = dicts[::step][:max_images]
    bad, dtypes, t0 = [], set(), time.perf_counter()
    for d in sample:
        img = read_image(d["file_name"])
        if img is None:
            bad.append(d["file_name"])
            continue
        dtypes.add(f"{img.dtype}x{img.shape[2]}")
    ms = (time.perf_counter() - t0) * 1000 / max(len(sample), 1)
    if bad:
        report.add(
            s,
            f"{tag} images decode",
            FAIL,
            f"{len(bad)} of {len(sample)} sampled images cannot be decoded (first: {bad[0]})",
            "re-export or remove the corrupt files (training skips them, "
            "but many bad files mean a wrong format or path).",
            undecodable=len(bad),
        )
        return False  # fmt: skip
    detail = (f"{len(dicts)} files present; {len(sample)} sampled decode "
              f"({', '.join(sorted(dtypes))}, {ms:.1f} ms/image)")  # fmt: skip
    report.add(s, f"{tag} image files", PASS, detail)  # sizes: see the audit
    return True


def _check_classes(report, name, tag, dicts, meta, k, key, split) -> bool:
    from detlab.data.stats import dataset_stats

    s = "data"
    classes = list(meta.get("thing_classes") or [])
    ids = [int(a["category_id"]) for d in dicts for a in d.get("annotations", [])]
    top = max(ids) if ids else -1
    if top >= k or len(classes) > k:
        report.add(
            s,
            f"{tag} classes",
            FAIL,
            f"the dataset has {max(len(classes), top + 1)} classes but {key} is {k}",
            f"set {key} {max(len(classes), top + 1)}.",
        )
        return False  # fmt: skip
    stats = dataset_stats(name, dicts) if classes else None
    per_size = stats["per_size"] if stats else {}
    data = {"per_class": stats["per_class"], "per_size": per_size} if stats else {}
    n_inst = len(ids)
    detail = (f"{len(dicts)} images, {n_inst} instances; per class "
              + ", ".join(f"{c} {n}" for c, n in (data.get("per_class") or {}).items())
              + "; per size " + ", ".join(f"{b} {n}" for b, n in per_size.items()))  # fmt: skip
    if classes and len(classes) < k:
        report.add(
            s,
            f"{tag} classes",
            WARN,
            detail + f"; {key} is {k} > {len(classes)} classes",
            f"set {key} {len(classes)} (extra outputs are never trained).",
            **data,
        )
        return True  # fmt: skip
    if split == "train" and n_inst == 0:
        report.add(
            s,
            f"{tag} classes",
            FAIL,
            "the training set has no boxes",
            "check the annotations (category ids, iscrowd) of the training set.",
        )
        return False  # fmt: skip
    empty = [c for c, n in (data.get("per_class") or {}).items() if n == 0]
    if split == "train" and empty:
        report.add(
            s,
            f"{tag} classes",
            WARN,
            detail + f"; no instances of {empty}",
            "add examples of these classes or drop them from the category list.",
            **data,
        )
        return True  # fmt: skip
    report.add(s, f"{tag} classes", PASS, detail, **data)
    return True


def _check_boxes(report: Report, tag: str, dicts: list[dict]) -> None:
    bad, nonfinite, total, first = 0, 0, 0, None
    for d in dicts:
        h, w = d.get("height") or math.inf, d.get("width") or math.inf
        for a in d.get("annotations", []):
            total += 1
            x, y, bw, bh = (float(v) for v in a["bbox"])
            finite = all(math.isfinite(v) for v in (x, y, bw, bh))
            nonfinite += not finite
            inside = finite and x >= -1 and y >= -1 and x + bw <= w + 1 and y + bh <= h + 1
            if not (finite and bw > 0 and bh > 0 and inside):
                bad += 1
                first = first or f"{d['file_name']}: {a['bbox']}"
    if bad:
        status = FAIL if bad == total else WARN
        report.add(
            "data",
            f"{tag} boxes",
            status,
            f"{bad} of {total} boxes are empty, non-finite ({nonfinite}) or outside the image "
            f"(first: {first})",
            "fix the annotations; the mappers drop empty and non-finite boxes (counted as "
            "data/dropped_boxes) and clip the others.",
            invalid=bad,
            nonfinite=nonfinite,
        )
        return  # fmt: skip
    report.add("data", f"{tag} boxes", PASS, f"{total} boxes valid (XYWH inside the image)")


def check_transforms(cfg: Any, report: Report, loaded: dict, num: int = 4) -> list[dict]:
    """Mapper outputs of the first training images: dtype, shape, channels, value range,
    size, boxes. Returns the mapped training samples (for the model checks)."""
    from detlab.data import build_mapper

    s = "transforms"
    mapped: list[dict] = []
    for split, names in (("train", cfg.DATASETS.TRAIN), ("test", cfg.DATASETS.TEST)):
        name = next((n for n in names if n in loaded), None)
        if name is None:
            report.add(s, f"{split} mapper", SKIP, "no usable dataset (see the data checks)")
            continue
        mapper = report.run(s, f"{split} mapper", lambda t=split: build_mapper(cfg, t == "train"))
        if mapper is None:
            continue
        outs = []
        dicts = loaded[name]
        if split == "train":  # the overfit batch needs objects to fit
            with_boxes = [
                d for d in dicts if any(not a.get("iscrowd", 0) for a in d.get("annotations", []))
            ]
            dicts = with_boxes or dicts
        before = len(report.checks)
        for i, d in enumerate(dicts[:num]):
            out = report.run(s, f"{split} mapper", lambda d=d, i=i, m=mapper: m(
                d, np.random.default_rng([0, i])))  # fmt: skip
            if len(report.checks) > before:
                break  # the mapper raised: reported
            outs.append((d, out))
        if len(report.checks) > before:
            continue
        problems = [p for d, out in outs for p in _mapper_problems(cfg, d, out, split)]
        if problems:
            report.add(
                s, f"{split} mapper", FAIL, problems[0][0], problems[0][1], problems=len(problems)
            )
            continue  # fmt: skip
        imgs = [o["image"] for _, o in outs if o is not None]
        if not imgs:
            continue
        lo = min(float(x.min()) for x in imgs)
        hi = max(float(x.max()) for x in imgs)
        mean = sum(float(x.mean()) for x in imgs) / len(imgs)
        shapes = sorted({tuple(x.shape) for x in imgs})
        detail = (f"{cfg.DATALOADER.MAPPER}: {len(imgs)} images, float32 {shapes[:3]}, values "
                  f"{lo:.1f}..{hi:.1f} (mean {mean:.1f})")  # fmt: skip
        if mean < 5 or mean > 250:
            report.add(s, f"{split} mapper", WARN, detail + " — nearly black/white",
                       "check the intensity scaling (INPUT.SAR.SCALING, ShipSARMapper for "
                       "16-bit SAR) so objects stay visible.")  # fmt: skip
        else:
            report.add(s, f"{split} mapper", PASS, detail)
        if split == "train":
            mapped = [o for _, o in outs if o is not None]
    return mapped


def _mapper_problems(cfg: Any, d: dict, out: Any, split: str) -> list[tuple[str, str]]:
    import torch

    name = d.get("file_name")
    c = len(cfg.MODEL.PIXEL_MEAN)
    if out is None:
        return [(f"the mapper returned None for {name} (unreadable image)",
                 "check the file; the loader skips such images.")]  # fmt: skip
    img = out.get("image")
    if not torch.is_tensor(img) or img.dtype != torch.float32 or img.ndim != 3:
        return [(f"image of {name} is {getattr(img, 'dtype', type(img))} "
                 f"{tuple(getattr(img, 'shape', ()))}, expected float32 C×H×W",
                 "the mapper must return a float32 C×H×W tensor.")]  # fmt: skip
    probs = []
    if img.shape[0] != c or img.shape[0] != int(cfg.MODEL.BACKBONE.IN_CHANNELS):
        probs.append((f"image of {name} has {img.shape[0]} channels; MODEL.PIXEL_MEAN has {c} "
                      f"and MODEL.BACKBONE.IN_CHANNELS is {cfg.MODEL.BACKBONE.IN_CHANNELS}",
                      "make MODEL.PIXEL_MEAN/PIXEL_STD and MODEL.BACKBONE.IN_CHANNELS match "
                      "the data (1 for grey SAR, 3 for colour)."))  # fmt: skip
    if not torch.isfinite(img).all() or float(img.min()) < -1e-3 or float(img.max()) > 255.001:
        probs.append(
            (
                f"image of {name} has values outside 0..255 or non-finite",
                "the mapper must output a 0..255 scale; check INPUT.SAR.* / the mapper.",
            )
        )
    elif float(img.max() - img.min()) < 1.0:
        probs.append(
            (
                f"image of {name} is constant ({float(img.max()):.1f}) after the mapper",
                "check the intensity scaling (INPUT.SAR.SCALING, CLIP_PERCENTILES).",
            )
        )
    inst = out.get("instances")
    if split == "train":
        boxes = getattr(inst, "boxes", None)
        if boxes is None or boxes.ndim != 2 or boxes.shape[-1] != 4:
            probs.append(
                (
                    f"instances of {name} have no N×4 boxes",
                    "the training mapper must return instances with boxes and classes.",
                )
            )
        elif len(boxes):
            h, w = img.shape[-2:]
            if (boxes[:, 2:] < boxes[:, :2]).any() or float(boxes.max()) > max(h, w) + 1:
                probs.append(
                    (
                        f"boxes of {name} are not XYXY inside the {h}x{w} image",
                        "check the mapper's box handling (XYWH -> XYXY, resizing).",
                    )
                )
            k = model_num_classes(cfg)[0]
            if int(inst.classes.max()) >= k or int(inst.classes.min()) < 0:
                probs.append((f"classes of {name} fall outside 0..{k - 1}",
                              "category ids must be contiguous 0..K-1 (the COCO loader maps "
                              "them)."))  # fmt: skip
    return probs
