"""YOLO txt datasets (Ultralytics, Roboflow and labelling-tool exports) read into dataset dicts.

Where the images are, in order of precedence:

- ``images``: a folder (searched recursively), a ``.txt`` list of image paths, or a list of these;
- ``root`` + ``split`` with a ``data.yaml`` (in ``root``, or ``root`` is the yaml file): the
  yaml's ``split`` key (``val`` also finds ``validation``/``valid``), a folder, list file or
  list of them relative to the yaml's ``path`` (default: the yaml's folder; a stale absolute
  ``path`` falls back to the yaml's folder, a leading ``../`` that leads nowhere is dropped, as
  Ultralytics does);
- ``root`` + ``split`` without a yaml: ``root/images/<split>``, ``root/<split>/images`` or
  ``root/<split>``; ``root`` alone: ``root/images`` (else ``root``).

Each image's label file is ``labels/<same relative path>.txt`` when ``labels`` is given, else the
image path with its last ``/images/`` replaced by ``/labels/`` (Ultralytics' rule), else the
``.txt`` next to the image. A line is ``class cx cy w h`` as fractions of the image size read
from the image header, or ``class x1 y1 x2 y2 ...`` (a polygon; its bounding box is used).
Class names come from ``names`` (a list or a ``classes.txt`` / ``*.names`` / yaml file), the
yaml's ``names``, or a ``classes.txt`` beside the labels or in ``root``.

Handled and counted: images without a label file and empty label files (kept, no objects),
label files without an image, repeated lines, NaN/empty boxes (dropped), boxes reaching outside
(clipped). Errors, with file and line: a class id outside the class list, a line that is not
numbers, coordinates that are not fractions (pixel units), two images sharing one label file,
one image listed twice. In a pose set (``kpt_shape`` in the data.yaml) the keypoints after each
box are ignored.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from detlab.data.datasets.images import image_header, is_image_file
from detlab.data.datasets.names import class_names, names_from_value, read_text_lines
from detlab.data.datasets.quirks import (
    Quirks,
    ReadResult,
    check_unique_images,
    clean_box,
    report_identical_images,
)
from detlab.utils.errors import UserError

__all__ = ["read_yolo"]

_ALIASES = {"val": ("val", "validation", "valid"), "valid": ("valid", "val", "validation")}
_YAMLS = ("data.yaml", "dataset.yaml", "data.yml", "dataset.yml")
_TOL = 0.01  # fraction of the image: coordinates beyond -0.01..1.01 are not normalised


def _find_yaml(root: str) -> str | None:
    if os.path.isfile(root):
        return root if root.lower().endswith((".yaml", ".yml")) else None
    for name in _YAMLS:
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    found = [n for n in os.listdir(root) if n.lower().endswith((".yaml", ".yml"))]
    return os.path.join(root, found[0]) if len(found) == 1 else None


def _yaml_sources(yaml_path: str, split: str | None) -> tuple[list[str], dict]:
    from detlab.utils.file_io import read_yaml

    data = read_yaml(yaml_path, "Dataset YAML", UserError) or {}
    if not isinstance(data, dict):
        raise UserError(f"{yaml_path} must hold a mapping (path, train, val, names).")
    keys = [k for k in ("train", "val", "validation", "valid", "test") if data.get(k)]
    if not split:
        raise UserError(f"{yaml_path} describes several splits ({', '.join(keys)}); set split.")
    key = next((k for k in _ALIASES.get(split, (split,)) if data.get(k)), None)
    if key is None:
        raise UserError(
            f"{yaml_path} has no '{split}' entry; it lists {', '.join(keys) or 'none'}."
        )
    value = data[key]
    entries = [value] if isinstance(value, str) else list(value)
    ydir = os.path.dirname(os.path.abspath(yaml_path))
    base = str(data.get("path") or "")
    bases = [os.path.join(ydir, os.path.expanduser(base)), os.path.abspath(base)] if base else []
    bases.append(ydir)  # also where a copied yaml with a stale absolute path still works
    out = []
    for entry in entries:
        entry = os.path.expanduser(str(entry))
        cands = [os.path.normpath(os.path.join(b, entry)) for b in bases]
        if entry.startswith("../"):
            cands += [os.path.normpath(os.path.join(b, entry[3:])) for b in bases]
        hit = next((c for c in cands if os.path.exists(c)), None)
        if hit is None:
            raise UserError(
                f"{yaml_path}: {key} entry '{entry}' does not exist (looked at {cands[0]}); fix "
                "'path' or the entry."
            )
        out.append(hit)
    return out, data


def _folder_sources(root: str, split: str | None) -> list[str]:
    if not split:
        images = os.path.join(root, "images")
        return [images if os.path.isdir(images) else root]
    for name in _ALIASES.get(split, (split,)):
        for cand in (
            os.path.join(root, "images", name),
            os.path.join(root, name, "images"),
            os.path.join(root, name),
            os.path.join(root, f"{name}.txt"),
        ):
            if os.path.exists(cand):
                return [cand]
    raise UserError(
        f"YOLO split '{split}' not found in {root}: no images/{split}/, {split}/images/ or "
        f"{split}/ folder and no data.yaml; check root and split."
    )


def _list_images(src: str, root: str) -> list[tuple[str, str, str]]:
    """(image path, where it was listed, the folder it is relative to or '')."""
    if os.path.isdir(src):
        found = sorted(
            os.path.join(dp, f)
            for dp, dirs, files in os.walk(src, followlinks=True)
            for f in files
            if is_image_file(f)
        )
        return [(p, os.path.relpath(p, root), src) for p in found]
    out = []
    ldir = os.path.dirname(src)
    for n, line in enumerate(read_text_lines(src), 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entry = os.path.expanduser(entry)
        if os.path.isabs(entry):
            path = entry
        elif entry.startswith("./"):
            path = os.path.join(ldir, entry[2:])
        else:
            path = os.path.join(ldir, entry)
            path = path if os.path.exists(path) else os.path.join(root, entry)
        out.append((os.path.normpath(path), f"{os.path.basename(src)}:{n}", ""))
    return out


def _label_path(image: str, folder: str, labels: str | None) -> str:
    stem = os.path.splitext(image)[0]
    if labels:
        rel = os.path.relpath(stem, folder) if folder else os.path.basename(stem)
        return os.path.join(labels, rel + ".txt")
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in stem:
        head, tail = stem.rsplit(sa, 1)
        return f"{head}{sb}{tail}.txt"
    return stem + ".txt"


def _parse_labels(
    path: str,
    height: int,
    width: int,
    k: int,
    quirks: Quirks,
    rel: str,
    bad_ids: list,
    keypoints: bool = False,
) -> tuple[list[tuple[int, list[float]]], int]:
    """(class id, XYWH box) per kept line, and the number of non-blank lines. Lines whose
    class id is outside ``0..k-1`` go to ``bad_ids`` as ``(path:line, id)``. With
    ``keypoints`` (a pose set), values after the box are keypoints and are ignored."""
    out, seen, lines = [], set(), 0
    for n, line in enumerate(read_text_lines(path), 1):
        parts = line.split()
        if not parts:
            continue
        lines += 1
        where = f"{rel}:{n}"
        try:
            vals = [float(p) for p in parts]
        except ValueError:
            raise UserError(
                f"{path}:{n}: expected 'class cx cy w h' numbers, got '{line.strip()[:80]}'."
            ) from None
        cls = vals[0]
        if not math.isfinite(cls) or cls != int(cls) or not 0 <= int(cls) < k:
            bad_ids.append((f"{path}:{n}", parts[0]))
            continue
        coords = vals[1:5] if keypoints and len(vals) > 5 else vals[1:]
        if len(coords) == 4:
            cx, cy, bw, bh = coords
            bad = any(math.isfinite(v) and not -_TOL <= v <= 1 + _TOL for v in (cx, cy)) or any(
                math.isfinite(v) and v > 1 + _TOL for v in (bw, bh)
            )
            x0, y0, x1, y1 = cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            quirks.add("polygon", where)
            xs, ys = coords[0::2], coords[1::2]
            bad = any(math.isfinite(v) and not -_TOL <= v <= 1 + _TOL for v in coords)
            x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        else:
            raise UserError(
                f"{path}:{n}: expected 'class cx cy w h' (or a polygon 'class x1 y1 x2 y2 x3 y3 "
                f"...'), got {len(parts)} values."
            )
        if bad:
            raise UserError(
                f"{path}:{n}: coordinates {' '.join(parts[1:5])} are not fractions of the image "
                "size (0..1); YOLO labels are normalised, so convert pixel coordinates first."
            )
        key = (int(cls), *(round(v, 6) for v in coords))
        if key in seen:
            quirks.add("duplicate_box", where)
            continue
        seen.add(key)
        box = clean_box(
            x0 * width, y0 * height, x1 * width, y1 * height, width, height, quirks, where, 0.01
        )
        if box is not None:
            out.append((int(cls), box))
    return out, lines


def _names(names, data: dict | None, yaml_path: str | None, label_dirs: list[str], root: str):
    explicit = class_names(names, "YOLO names")
    if explicit:
        return explicit
    if data is not None and ("names" in data or "nc" in data):
        return names_from_value(data.get("names"), data.get("nc"), yaml_path)
    for folder in (*label_dirs, root, os.path.join(root, "labels")):
        for name in ("classes.txt", "obj.names", "classes.names"):
            if os.path.isfile(os.path.join(folder, name)):
                return class_names(os.path.join(folder, name), "YOLO names")
    raise UserError(
        f"No class names for the YOLO set in {root}: give names (a list, or a classes.txt / "
        "data.yaml path), or put a classes.txt beside the labels."
    )


def read_yolo(
    root: str | None = None,
    split: str | None = None,
    *,
    images: str | Sequence[str] | None = None,
    labels: str | None = None,
    names: str | Sequence[str] | None = None,
) -> ReadResult:
    """Read a YOLO dataset (see the module docstring) into dataset dicts."""
    data = yaml_path = None
    if images:
        srcs = [images] if isinstance(images, str) else list(images)
        srcs = [os.path.abspath(os.path.expanduser(s)) for s in srcs]
        base = os.path.abspath(os.path.expanduser(root)) if root else os.path.dirname(srcs[0])
    elif root:
        base = os.path.abspath(os.path.expanduser(root))
        if not os.path.exists(base):
            raise UserError(f"YOLO root {base} does not exist; check the root path.")
        yaml_path = _find_yaml(base)
        if yaml_path:
            srcs, data = _yaml_sources(yaml_path, split)
            base = os.path.dirname(yaml_path)
        else:
            srcs = _folder_sources(base, split)
    else:
        raise UserError("A YOLO dataset needs root (a folder or data.yaml) or images.")
    for s in srcs:
        if not os.path.exists(s):
            raise UserError(f"YOLO images {s} do not exist; check images/root.")
    labels = os.path.abspath(os.path.expanduser(labels)) if labels else None
    if labels and not os.path.isdir(labels):
        raise UserError(f"YOLO label folder {labels} does not exist; check labels.")
    listed = [item for s in srcs for item in _list_images(s, base)]
    source = f"YOLO {base}" + (f" (split {split})" if split else "")
    if not listed:
        raise UserError(f"{source}: no images found in {', '.join(srcs)}.")
    pairs = [(img, where, _label_path(img, folder, labels)) for img, where, folder in listed]
    label_dirs = sorted({os.path.dirname(p[2]) for p in pairs})
    names_list = _names(names, data, yaml_path, [labels] if labels else label_dirs[:1], base)
    pose = bool(data and data.get("kpt_shape"))  # Ultralytics pose sets: box, then keypoints
    return _read_pairs(pairs, names_list, base, source, srcs, pose)


def _read_pairs(pairs, names: list[str], base: str, source: str, srcs, pose: bool) -> ReadResult:
    quirks = Quirks(source)
    check_unique_images([{"file_name": p[0]} for p in pairs], lambda i: pairs[i][1], source)
    records, sources, used_labels, bad_ids = [], [], {}, []
    k = len(names)
    for img, where, label in pairs:
        rel_label = os.path.relpath(label, base)
        if label in used_labels:
            raise UserError(
                f"{source}: images {used_labels[label]} and {img} both take their labels from "
                f"{label}; rename or remove one image."
            )
        used_labels[label] = img
        header = image_header(img)
        if header is None:
            kind = "unreadable_image" if os.path.exists(img) else "missing_image"
            quirks.add(kind, where)
            continue
        if header.orientation != 1:
            quirks.add("exif_orientation", f"{where} (orientation {header.orientation})")
        if not os.path.isfile(label):
            quirks.add("missing_label", f"{where} (no {rel_label})")
            objs = []
        else:
            objs, lines = _parse_labels(
                label, header.height, header.width, k, quirks, rel_label, bad_ids, pose
            )
            if not lines:
                quirks.add("empty_label", rel_label)
        records.append(
            {
                "file_name": img,
                "height": header.height,
                "width": header.width,
                "image_id": len(records) + 1,
                "annotations": [
                    {"bbox": box, "category_id": c, "iscrowd": 0, "area": box[2] * box[3]}
                    for c, box in objs
                ],
            }
        )
        sources.append(where)
    if bad_ids:
        files = len({w.rsplit(":", 1)[0] for w, _ in bad_ids})
        ids = sorted({i for _, i in bad_ids}, key=lambda v: (len(v), v))
        shown = ", ".join(ids) if len(ids) <= 4 else f"{ids[0]}, {ids[1]}, ..., {ids[-1]}"
        raise UserError(
            f"{bad_ids[0][0]}: class id {bad_ids[0][1]} is outside 0..{k - 1} ({k} class names: "
            f"{', '.join(names[:5])}{', ...' if k > 5 else ''}); {len(bad_ids)} lines in {files} "
            f"label files have such ids ({shown}), so fix the labels or the class names."
        )
    if not records:
        raise UserError(f"{source}: none of the {len(pairs)} images can be read; check the paths.")
    if quirks["missing_label"] == len(pairs):
        raise UserError(
            f"{source}: none of the {len(pairs)} images has a label file (e.g. "
            f"{quirks.examples['missing_label'][0]}); check labels or the images/labels layout."
        )
    _orphan_labels(srcs, pairs, used_labels, base, quirks)
    root = srcs[0] if len(srcs) == 1 and os.path.isdir(srcs[0]) else _common(records)
    report_identical_images(records, quirks, root)
    quirks.log()
    return ReadResult(records, names, root, quirks, sources)


def _orphan_labels(srcs, pairs, used: dict, base: str, quirks: Quirks) -> None:
    """Label files in the label folders of folder sources that match no image."""
    if not all(os.path.isdir(s) for s in srcs):
        return  # list files share label folders with other splits
    folders = {os.path.dirname(p[2]) for p in pairs}
    tops = [f for f in sorted(folders) if not any(f.startswith(o + os.sep) for o in folders)]
    for top in tops:
        for dp, _, files in os.walk(top):
            for f in sorted(files):
                path = os.path.join(dp, f)
                if f.endswith(".txt") and f != "classes.txt" and path not in used:
                    quirks.add("orphan_label", os.path.relpath(path, base))


def _common(records: list[dict]) -> str:
    try:
        return os.path.commonpath([os.path.dirname(r["file_name"]) for r in records])
    except ValueError:  # different drives
        return ""
