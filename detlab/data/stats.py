"""``dataset_stats(name)``: images, instances per class and per COCO size bucket, empty images."""

from __future__ import annotations

from collections.abc import Sequence

from detlab.data.catalog import DatasetCatalog, MetadataCatalog

__all__ = ["SMALL_AREA", "MEDIUM_AREA", "dataset_stats", "format_dataset_stats", "size_bucket"]

SMALL_AREA = 32.0**2  # COCO: small < 32², medium < 96², large otherwise (px² of the box)
MEDIUM_AREA = 96.0**2


def size_bucket(area: float) -> str:
    """COCO size bucket of an object area in px²: "small", "medium" or "large"."""
    return "small" if area < SMALL_AREA else "medium" if area < MEDIUM_AREA else "large"


def dataset_stats(name: str, dicts: Sequence[dict] | None = None) -> dict:
    """Counts of a registered dataset (or of ``dicts``), crowd boxes excluded.

    Returns ``{"images", "empty_images", "instances", "per_class": {class: n},
    "per_size": {"small", "medium", "large"}, "per_class_size": {class: {bucket: n}}}``.
    The area of an annotation is its ``area`` field (COCO), else its box area.
    """
    dicts = DatasetCatalog.get(name) if dicts is None else dicts
    classes = list(MetadataCatalog.get(name).get("thing_classes") or [])
    per_class = {c: 0 for c in classes}
    per_size = {"small": 0, "medium": 0, "large": 0}
    per_class_size = {c: dict(per_size) for c in classes}
    empty = 0
    total = 0
    for d in dicts:
        anns = [a for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        if not anns:
            empty += 1
        for a in anns:
            cid = int(a["category_id"])
            cname = classes[cid] if cid < len(classes) else str(cid)
            area = float(a.get("area") or a["bbox"][2] * a["bbox"][3])
            bucket = size_bucket(area)
            per_class[cname] = per_class.get(cname, 0) + 1
            per_size[bucket] += 1
            per_class_size.setdefault(cname, {"small": 0, "medium": 0, "large": 0})[bucket] += 1
            total += 1
    return {
        "images": len(dicts),
        "empty_images": empty,
        "instances": total,
        "per_class": per_class,
        "per_size": per_size,
        "per_class_size": per_class_size,
    }


def format_dataset_stats(name: str, stats: dict | None = None) -> str:
    """A small markdown table of :func:`dataset_stats`."""
    s = stats or dataset_stats(name)
    lines = [
        f"{name}: {s['images']} images ({s['empty_images']} without boxes), "
        f"{s['instances']} instances",
        "| class | instances | small | medium | large |",
        "|---|---|---|---|---|",
    ]
    for c, n in s["per_class"].items():
        b = s["per_class_size"].get(c, {})
        lines.append(
            f"| {c} | {n} | {b.get('small', 0)} | {b.get('medium', 0)} | {b.get('large', 0)} |"
        )
    return "\n".join(lines)
