"""What a reader met in a dataset folder: counted, shown with examples, never silently applied.

A :class:`Quirks` collects every irregularity of one source by kind (a stale ``<filename>``
tag, a size that disagrees with the image file, a NaN box, ...) with a count and the first three
examples, and logs one sentence per kind. Kinds that change the data feed the loader counters
(``skipped_images``, ``dropped_boxes``, ``clipped_boxes``, reported as ``data/<key>``).
Registered datasets keep their reader's quirks: :func:`dataset_quirks` / :func:`load_counters`.

Also here: :func:`clean_box` (the one box check every reader uses) and :func:`check_unique_images`
(no image file may back two records).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from detlab.data.datasets.images import file_identity
from detlab.utils.errors import UserError

__all__ = [
    "COUNTER_KEYS",
    "Quirks",
    "ReadResult",
    "check_unique_images",
    "clean_box",
    "dataset_quirks",
    "load_counters",
    "record_quirks",
    "report_identical_images",
]

logger = logging.getLogger(__name__)

COUNTER_KEYS = ("skipped_images", "dropped_boxes", "clipped_boxes")
INFO, WARN = logging.INFO, logging.WARNING

# kind -> (loader counter it feeds or None, log level, what happened to "<n> <things>").
KINDS: dict[str, tuple[str | None, int, str]] = {
    "stale_filename": (None, WARN, "annotation files name another image in <filename>; each "
                       "was paired with the image named like the annotation file"),
    "size_mismatch": (None, WARN, "annotations give an image size that differs from the image "
                      "file; the file's size was used"),
    "rotated_labels": (None, WARN, "annotations give the EXIF-rotated size of their image, so "
                       "their boxes were probably drawn on the rotated view while detlab reads "
                       "the stored pixels; re-save these images with the rotation applied"),
    "size_missing": (None, INFO, "annotations have no usable <size>; the image file's size was "
                     "used"),
    "exif_orientation": (None, WARN, "images carry an EXIF orientation tag (viewers show them "
                         "rotated or mirrored); detlab reads the stored pixels, so labels drawn "
                         "on the rotated view would not match"),
    "case_mismatch": (None, INFO, "images were found only by ignoring the case of their name"),
    "missing_image": ("skipped_images", WARN, "records have no image file; skipped"),
    "unreadable_image": ("skipped_images", WARN, "image files cannot be read; skipped"),
    "missing_annotation": ("skipped_images", WARN, "listed images have no annotation file; "
                           "skipped"),
    "missing_file": (None, WARN, "images listed in the json do not exist; training skips them"),
    "no_box": ("dropped_boxes", WARN, "objects have no usable box or class name; dropped"),
    "nonfinite_box": ("dropped_boxes", WARN, "boxes have NaN or infinite coordinates; dropped"),
    "empty_box": ("dropped_boxes", WARN, "boxes have zero or negative width or height; dropped"),
    "outside_box": ("dropped_boxes", WARN, "boxes lie entirely outside their image; dropped"),
    "clipped_box": ("clipped_boxes", WARN, "boxes reach outside their image; clipped to it"),
    "duplicate_box": ("dropped_boxes", WARN, "label lines repeat an earlier line of the same "
                      "file; dropped"),
    "orphan_annotation": ("dropped_boxes", WARN, "annotations refer to an image id that is not "
                          "in 'images'; dropped"),
    "difficult_keep": (None, INFO, "objects are marked difficult; kept as ordinary boxes"),
    "difficult_crowd": (None, INFO, "objects are marked difficult; kept as iscrowd=1 (ignored "
                        "in training and evaluation)"),
    "difficult_drop": (None, INFO, "objects are marked difficult; left out (difficult: drop)"),
    "negative": (None, INFO, "images have no objects; kept as negatives"),
    "missing_label": (None, WARN, "images have no label file; kept as images without objects"),
    "empty_label": (None, INFO, "label files are empty; their images are kept as negatives"),
    "orphan_label": (None, WARN, "label files have no image; ignored"),
    "polygon": (None, INFO, "label lines are polygons; their bounding boxes were used"),
    "class_case": (None, WARN, "class names differ from another one only in case or spacing; "
                   "they are separate classes (fix the names, or list classes explicitly)"),
    "identical_content": (None, WARN, "images are byte-identical copies of another image of "
                          "this dataset under another name"),
    "identical_conflict": (None, WARN, "groups of byte-identical images carry different "
                           "annotations; check which labels are right"),
}  # fmt: skip


class Quirks:
    """Counts and up to three examples per kind of irregularity met while reading ``source``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.counts: Counter = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, example: str = "", n: int = 1) -> None:
        if kind not in KINDS:
            raise KeyError(f"unknown quirk kind {kind!r}")
        self.counts[kind] += n
        seen = self.examples.setdefault(kind, [])
        if example and len(seen) < 3:
            seen.append(example)

    def __getitem__(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    def counters(self) -> dict[str, int]:
        """``{skipped_images, dropped_boxes, clipped_boxes}`` summed over the kinds."""
        out = dict.fromkeys(COUNTER_KEYS, 0)
        for kind, n in self.counts.items():
            key = KINDS[kind][0]
            if key:
                out[key] += n
        return out

    def line(self, kind: str) -> str:
        """``"<source>: <n> <what happened> (e.g. a; b; c)."``"""
        ex = self.examples.get(kind)
        tail = f" (e.g. {'; '.join(ex)})" if ex else ""
        return f"{self.source}: {self.counts[kind]} {KINDS[kind][2]}{tail}."

    def lines(self, min_level: int = INFO) -> list[str]:
        """One sentence per kind met, at ``min_level`` or above, in a fixed order."""
        return [self.line(k) for k in KINDS if self.counts.get(k) and KINDS[k][1] >= min_level]

    def log(self) -> None:
        """Log each line once per process (a dataset re-read with the same quirks is quiet)."""
        from detlab.data.counters import warn_once

        for kind in KINDS:
            if not self.counts.get(kind):
                continue
            line = self.line(kind)
            if KINDS[kind][1] >= WARN:
                warn_once(logger, line, "%s", line)
            elif line not in _INFO_SEEN:
                _INFO_SEEN.add(line)
                logger.info("%s", line)

    def as_dict(self) -> dict:
        return {
            "counts": dict(self.counts),
            "examples": {k: list(v) for k, v in self.examples.items()},
        }


@dataclass
class ReadResult:
    """What a reader returns: dataset dicts (absolute ``file_name``, contiguous
    ``category_id``), class names in id order, the folder the images sit under, the quirks."""

    records: list[dict]
    classes: list[str]
    image_root: str
    quirks: Quirks
    sources: list[str] = field(default_factory=list)  # where each record came from
    category_ids: list[int] | None = None  # dataset ids of the classes (default 1..K)


_INFO_SEEN: set[str] = set()
_BY_DATASET: dict[str, Quirks] = {}


def record_quirks(name: str, quirks: Quirks) -> None:
    """Remember what reading dataset ``name`` met (the last read wins)."""
    _BY_DATASET[name] = quirks


def dataset_quirks(name: str) -> Quirks | None:
    """The quirks of the last read of dataset ``name`` in this process, if any."""
    return _BY_DATASET.get(name)


def load_counters(name: str) -> dict[str, int]:
    """``{skipped_images, dropped_boxes, clipped_boxes}`` of the last read of ``name``."""
    quirks = _BY_DATASET.get(name)
    return quirks.counters() if quirks else dict.fromkeys(COUNTER_KEYS, 0)


def clean_box(
    x0: float,
    y0: float,
    x1: float,
    y1: float,
    width: float,
    height: float,
    quirks: Quirks,
    where: str,
    tol: float = 1e-3,
) -> list[float] | None:
    """XYXY pixel box → XYWH clipped to the ``width`` × ``height`` image, or None (dropped).

    Non-finite coordinates, zero or negative sizes and boxes wholly outside the image are
    dropped; boxes reaching outside by more than ``tol`` px are clipped; each case is counted
    in ``quirks`` with ``where`` as the example.
    """
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        quirks.add("nonfinite_box", where)
        return None
    if x1 <= x0 or y1 <= y0:
        quirks.add("empty_box", where)
        return None
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 - cx0 <= 0 or cy1 - cy0 <= 0:
        quirks.add("outside_box", where)
        return None
    if max(abs(cx0 - x0), abs(cy0 - y0), abs(cx1 - x1), abs(cy1 - y1)) > tol:
        quirks.add("clipped_box", where)
    return [cx0, cy0, cx1 - cx0, cy1 - cy0]


def check_unique_images(
    records: Sequence[dict], source: Callable[[int], str], what: str = "dataset"
) -> None:
    """Raise if two records use the same image file (same path, symlink or hard link).

    ``source(i)`` names where record ``i`` came from (an annotation file, a list line).
    """
    seen: dict[object, int] = {}
    for i, rec in enumerate(records):
        path = rec["file_name"]
        key = file_identity(path) or os.path.normcase(os.path.normpath(os.path.abspath(path)))
        j = seen.setdefault(key, i)
        if j != i:
            other = records[j]["file_name"]
            same = "" if other == path else f" (also reached as {other})"
            raise UserError(
                f"{what}: {source(j)} and {source(i)} both use the image {path}{same}; an image "
                "may belong to one record only, so remove or fix one of them."
            )


def report_identical_images(records: Sequence[dict], quirks: Quirks, root: str = "") -> None:
    """Count records whose image is a byte-identical copy of another record's image."""
    from detlab.data.hashing import identical_groups

    groups = identical_groups([r["file_name"] for r in records])
    for group in groups:
        names = [_short(records[i]["file_name"], root) for i in group]
        quirks.add("identical_content", " = ".join(names[:3]), n=len(group) - 1)
        boxes = {_box_key(records[i]) for i in group}
        if len(boxes) > 1:
            quirks.add("identical_conflict", " vs ".join(names[:2]))


def _box_key(rec: dict) -> tuple:
    return tuple(
        sorted(
            (int(a["category_id"]), *(round(float(v), 1) for v in a["bbox"]))
            for a in rec.get("annotations", [])
        )
    )


def _short(path: str, root: str) -> str:
    if root:
        try:
            rel = os.path.relpath(path, root)
            if not rel.startswith(".."):
                return rel
        except ValueError:
            pass
    return os.path.basename(path)
