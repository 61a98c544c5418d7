"""Data audit of ``tools/diagnose.py``: what the readers met, duplicate and leaked images, sizes.

Per dataset: the irregularities its reader counted (stale tags, dropped/clipped boxes, ...),
image files used by two records (fail), byte-identical images under two names (warn), and
records whose height/width disagree with the image header (warn; every record is checked, the
header is read without decoding). Across ``DATASETS.TRAIN`` and ``DATASETS.TEST``: a dataset in
both, the same file in both, or byte-identical content in both (fail: test numbers would be
inflated by training images).
"""

from __future__ import annotations

import os
from typing import Any

from detlab.diagnostics.core import FAIL, PASS, WARN, Report

__all__ = ["audit_datasets"]

_S = "data"


def _examples(items: list[str], n: int = 3) -> str:
    return "; ".join(items[:n])


def _reader_check(report: Report, name: str, tag: str) -> None:
    """One warning per kind of irregularity the dataset's reader counted, else one pass."""
    from detlab.data.datasets.quirks import WARN as QWARN
    from detlab.data.datasets.quirks import dataset_quirks

    quirks = dataset_quirks(name)
    if quirks is None:
        return
    skip = ("identical_content", "identical_conflict")  # the duplicates check reports these
    kinds = [k for k in quirks.counts if k not in skip and _level(k) >= QWARN]
    for kind in kinds:
        report.add(
            _S, f"{tag} {kind}", WARN, quirks.line(kind),
            "check the files named in the examples; images skipped and boxes dropped or "
            "clipped are counted as data/* in metrics.jsonl.",
            count=quirks[kind], examples=quirks.examples.get(kind, []),
        )  # fmt: skip
    if not kinds:
        report.add(_S, f"{tag} reading", PASS, "read without irregularities", **quirks.counters())


def _level(kind: str) -> int:
    from detlab.data.datasets.quirks import KINDS

    return KINDS[kind][1]


def _duplicates_check(report: Report, tag: str, dicts: list[dict]) -> None:
    from detlab.data.datasets.images import file_identity
    from detlab.data.hashing import identical_groups

    paths = [d["file_name"] for d in dicts]
    seen: dict[Any, str] = {}
    twice = []
    for p in paths:
        key = file_identity(p) or os.path.normpath(p)
        if key in seen:
            twice.append(f"{seen[key]} = {p}" if seen[key] != p else p)
        seen.setdefault(key, p)
    if twice:
        report.add(
            _S, f"{tag} duplicates", FAIL,
            f"{len(twice)} records reuse an image file of another record (e.g. "
            f"{_examples(twice)})",
            "remove the duplicate entries: one image, one record.", duplicates=len(twice),
        )  # fmt: skip
        return
    groups = identical_groups(paths)
    if groups:
        ex = [" = ".join(os.path.basename(paths[i]) for i in g[:3]) for g in groups]
        n = sum(len(g) - 1 for g in groups)
        report.add(
            _S, f"{tag} duplicates", WARN,
            f"{n} images are byte-identical copies of another image of the set under another "
            f"name (e.g. {_examples(ex)})",
            "delete the copies or keep them in one split (datasets/split_coco.py does).",
            identical=n,
        )  # fmt: skip
    else:
        report.add(_S, f"{tag} duplicates", PASS, f"{len(paths)} distinct image files")


def _sizes_check(report: Report, tag: str, dicts: list[dict]) -> None:
    from detlab.data.datasets.images import image_header

    wrong, unread = [], 0
    for d in dicts:
        header = image_header(d["file_name"])
        if header is None:
            unread += 1
            continue
        said = (int(d.get("height") or 0), int(d.get("width") or 0))
        if said != (header.height, header.width):
            wrong.append(
                f"{os.path.basename(d['file_name'])}: {said[1]}x{said[0]} in the record, "
                f"{header.width}x{header.height} in the file"
            )
    if wrong:
        report.add(
            _S, f"{tag} image sizes", WARN,
            f"{len(wrong)} of {len(dicts)} records give a size that differs from the image file "
            f"(e.g. {_examples(wrong)})",
            "fix height/width in the annotation file (boxes are clipped to the real image); the "
            "VOC and YOLO readers take the size from the file.",
            wrong_size=len(wrong),
        )  # fmt: skip
    else:
        detail = f"{len(dicts) - unread} record sizes match their image headers"
        report.add(_S, f"{tag} image sizes", PASS, detail)


def _leak_check(report: Report, cfg: Any, dicts: dict[str, list[dict]]) -> None:
    from detlab.data.datasets.images import file_identity
    from detlab.data.hashing import identical_groups

    train = [n for n in cfg.DATASETS.TRAIN if n in dicts]
    test = [n for n in cfg.DATASETS.TEST if n in dicts]
    both = sorted(set(cfg.DATASETS.TRAIN) & set(cfg.DATASETS.TEST))
    if both:
        report.add(
            _S, "train/test leak", WARN,
            f"dataset(s) {both} are in both DATASETS.TRAIN and DATASETS.TEST: the evaluation "
            "measures fit to the training images, not generalisation",
            "evaluate on a held-out set (e.g. split_ratios in DATASETS.REGISTER) unless this is "
            "a deliberate overfit check.",
        )  # fmt: skip
        return
    if not train or not test:
        return
    a = [d["file_name"] for n in train for d in dicts[n]]
    b = [d["file_name"] for n in test for d in dicts[n]]
    keys = {file_identity(p) or os.path.normpath(p): p for p in a}
    same = {j for j, p in enumerate(b) if (file_identity(p) or os.path.normpath(p)) in keys}
    copies: dict[int, str] = {}
    for g in identical_groups(a + b):
        if min(g) < len(a) <= max(g):
            for i in (i - len(a) for i in g if i >= len(a) and i - len(a) not in same):
                copies[i] = f"{os.path.basename(b[i])} = {os.path.basename(a[min(g)])}"
    if same or copies:
        parts = [f"{len(same)} test images are training files"] if same else []
        if copies:
            parts.append(
                f"{len(copies)} test images are byte-identical copies of training images (e.g. "
                f"{_examples(list(copies.values()))})"
            )
        report.add(
            _S, "train/test leak", FAIL, "; ".join(parts),
            "re-split so that no image (or copy) is in both; datasets/split_coco.py and "
            "split_ratios keep copies in one split.",
            same_files=len(same), identical=len(copies),
        )  # fmt: skip
    else:
        report.add(
            _S, "train/test leak", PASS,
            f"no file or identical content shared by {len(a)} training and {len(b)} test images",
        )  # fmt: skip


def audit_datasets(cfg: Any, report: Report, dicts: dict[str, list[dict]]) -> None:
    """Add the audit checks for the datasets in ``dicts`` (name → loaded dataset dicts)."""
    splits = {n: "train" for n in cfg.DATASETS.TRAIN} | {
        n: "test" for n in cfg.DATASETS.TEST if n not in cfg.DATASETS.TRAIN
    }
    for name, ds in dicts.items():
        tag = f"{name} ({splits.get(name, '?')})"
        _reader_check(report, name, tag)
        _duplicates_check(report, tag, ds)
        _sizes_check(report, tag, ds)
    _leak_check(report, cfg, dicts)
