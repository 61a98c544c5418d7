"""Leak-free train/val/test splits: stratified by class, whole groups, identical files together.

Images that must not be separated form one *group*: byte-identical files (content hash, so a
copy under another name cannot land in val while the original trains), and, optionally, images
sharing a group key — a field of the COCO image entry (``group_field``, e.g. ``video_id``) or
a regular expression over the file name (``group_pattern``; the first capture group, else the
whole match, is the key, e.g. ``^(seq_\\d+)_`` or ``^([^/]+)/`` for one folder per sequence).
A ``file_name`` listed twice is refused.

Each group goes into the stratum of its rarest class (by annotation frequency; groups without
boxes form their own stratum); the groups of a stratum are shuffled with the seed and handed out
in order, filling each split up to its share of the stratum's images (largest-remainder
rounding). With single-image groups this is an exact stratified split; whole groups can overshoot
a share by less than their size.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from detlab.utils.errors import UserError

__all__ = ["SplitPlan", "check_ratios", "plan_split", "split_coco", "split_dataset_dicts"]


@dataclass
class SplitPlan:
    """Item indices per split name, and what was kept together."""

    parts: dict[str, list[int]]
    identical_groups: int = 0  # groups of byte-identical files kept in one split
    identical_images: int = 0  # images in those groups
    key_groups: int = 0  # group keys holding more than one image
    unmatched: int = 0  # images whose name the group pattern did not match
    notes: list[str] = field(default_factory=list)


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, members: Sequence[int]) -> None:
        roots = sorted(self.find(i) for i in members)
        for r in roots[1:]:
            self.parent[r] = roots[0]


def check_ratios(
    ratios: Sequence[float], names: Sequence[str] | None
) -> tuple[list[float], list[str]]:
    """Ratios normalised to sum 1 and split names (default train/val/test), or a UserError."""
    try:
        ratios = [float(r) for r in ratios]
    except (TypeError, ValueError):
        raise UserError(f"Split ratios must be numbers, got {list(ratios)}.") from None
    if not ratios or any(not math.isfinite(r) or r < 0 for r in ratios) or sum(ratios) <= 0:
        raise UserError(f"Split ratios must be non-negative and not all zero, got {ratios}.")
    names = list(names or ["train", "val", "test"][: len(ratios)])
    if len(names) != len(ratios) or len(set(names)) != len(names):
        raise UserError(
            f"{len(ratios)} ratios need {len(ratios)} distinct split names, got {names}."
        )
    total = sum(ratios)
    return [r / total for r in ratios], names


def _counts(ratios: list[float], n: int) -> list[int]:
    exact = [r * n for r in ratios]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(len(ratios)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def plan_split(
    classes: Sequence[Sequence[int]],
    ratios: Sequence[float],
    seed: int = 0,
    names: Sequence[str] | None = None,
    *,
    keys: Sequence[object | None] | None = None,
    identical: Sequence[Sequence[int]] = (),
) -> SplitPlan:
    """Assign items (images) to splits.

    Args:
        classes: per item, the category ids of its boxes (with repeats).
        ratios: split fractions (normalised to sum 1); ``names`` default train/val/test.
        keys: per item, a group key or None; items sharing a key stay together.
        identical: groups of item indices with byte-identical files; kept together.
    """
    ratios, names = check_ratios(ratios, names)
    n = len(classes)
    union = _Union(n)
    by_key: dict[object, list[int]] = {}
    for i, key in enumerate(keys or ()):
        if key is not None:
            by_key.setdefault(key, []).append(i)
    for members in by_key.values():
        union.join(members)
    for members in identical:
        union.join(members)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(union.find(i), []).append(i)
    freq = Counter(c for cs in classes for c in cs)
    strata: dict[object, list[list[int]]] = {}
    for members in sorted(groups.values()):
        cats = {c for i in members for c in classes[i]}
        key = min(cats, key=lambda c: (freq[c], c)) if cats else None
        strata.setdefault(key, []).append(members)
    parts: dict[str, list[int]] = {name: [] for name in names}
    for key in sorted(strata, key=lambda k: (k is None, k)):
        members = strata[key]
        size = sum(len(m) for m in members)
        order = np.random.default_rng([seed, len(members)]).permutation(len(members))
        targets = _counts(ratios, size)
        split, filled = 0, 0
        for j in order:
            while split < len(names) - 1 and filled >= targets[split]:
                split, filled = split + 1, 0
            parts[names[split]].extend(members[j])
            filled += len(members[j])
    return SplitPlan(
        parts={k: sorted(v) for k, v in parts.items()},
        identical_groups=len(identical),
        identical_images=sum(len(g) for g in identical),
        key_groups=sum(len(m) > 1 for m in by_key.values()),
        unmatched=sum(k is None for k in keys) if keys is not None else 0,
    )


def _pattern_keys(rel_paths: Sequence[str], pattern: str | None) -> list[object | None] | None:
    if not pattern:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise UserError(f"group_pattern '{pattern}' is not a regular expression ({err}).") from None
    keys: list[object | None] = []
    for p in rel_paths:
        m = regex.search(p.replace(os.sep, "/"))
        keys.append(None if m is None else (m.group(1) if regex.groups else m.group(0)))
    if rel_paths and all(k is None for k in keys):
        raise UserError(
            f"group_pattern '{pattern}' matches none of the file names (e.g. {rel_paths[0]}); "
            "fix the pattern."
        )
    return keys


def _refuse_duplicate_names(names: Sequence[str], ident: Callable[[int], object], what: str):
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        key = os.path.normpath(name)
        if key in seen:
            raise UserError(
                f"{what}: file_name {name} is listed twice ({ident(seen[key])} and {ident(i)}); "
                "the same image in two entries would land in two splits, so remove one."
            )
        seen[key] = i


def split_coco(
    data: dict,
    ratios: Sequence[float],
    seed: int = 0,
    names: Sequence[str] | None = None,
    *,
    image_root: str | None = None,
    group_field: str | None = None,
    group_pattern: str | None = None,
    plan: list | None = None,
) -> dict[str, dict]:
    """Split a COCO dict into ``{name: COCO dict}`` (see the module docstring).

    ``image_root`` (where ``file_name`` paths are relative to) turns on the content check: every
    file must exist there, and byte-identical files stay in one split. ``plan``, if given a
    list, receives the :class:`SplitPlan`.
    """
    images = sorted(data["images"], key=_id_key)
    fnames = [str(img.get("file_name", "")) for img in images]
    _refuse_duplicate_names(fnames, lambda i: f"image id {images[i]['id']!r}", "COCO json")
    identical: list[list[int]] = []
    if image_root is not None:
        from detlab.data.hashing import identical_groups

        paths = [os.path.join(image_root, f) for f in fnames]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise UserError(
                f"{len(missing)} of {len(paths)} images are missing under {image_root} (first: "
                f"{missing[0]}); give the right image root, or split without the content check."
            )
        identical = identical_groups(paths)
    keys = _pattern_keys(fnames, group_pattern)
    if group_field:
        field_keys = [img.get(group_field) for img in images]
        if images and all(k is None for k in field_keys):
            raise UserError(f"No image entry has the group field '{group_field}'.")
        keys = [
            f if f is not None else (keys[i] if keys else None) for i, f in enumerate(field_keys)
        ]
    by_image: dict = {}
    for a in data.get("annotations", []):
        by_image.setdefault(a["image_id"], []).append(a["category_id"])
    classes = [by_image.get(img["id"], []) for img in images]
    result = plan_split(classes, ratios, seed, names, keys=keys, identical=identical)
    if plan is not None:
        plan.append(result)
    out = {}
    for name, idx in result.parts.items():
        ids = {images[i]["id"] for i in idx}
        out[name] = {
            **{k: v for k, v in data.items() if k not in ("images", "annotations")},
            "images": [images[i] for i in idx],
            "annotations": [a for a in data.get("annotations", []) if a["image_id"] in ids],
        }
    return out


def split_dataset_dicts(
    dicts: Sequence[dict],
    ratios: Sequence[float],
    seed: int = 0,
    names: Sequence[str] | None = None,
    *,
    group_pattern: str | None = None,
    root: str = "",
) -> dict[str, list[dict]]:
    """Split dataset dicts the same way; ``group_pattern`` sees paths relative to ``root``."""
    from detlab.data.hashing import identical_groups

    fnames = [d["file_name"] for d in dicts]
    _refuse_duplicate_names(fnames, lambda i: f"record {i}", "dataset")
    rel = [os.path.relpath(f, root) if root else f for f in fnames]
    classes = [
        [int(a["category_id"]) for a in d.get("annotations", []) if not a.get("iscrowd", 0)]
        for d in dicts
    ]
    result = plan_split(
        classes,
        ratios,
        seed,
        names,
        keys=_pattern_keys(rel, group_pattern),
        identical=identical_groups(fnames),
    )
    return {name: [dicts[i] for i in idx] for name, idx in result.parts.items()}


def _id_key(img: dict) -> tuple:
    return (
        not isinstance(img["id"], int),
        img["id"] if isinstance(img["id"], int) else 0,
        str(img["id"]),
    )
