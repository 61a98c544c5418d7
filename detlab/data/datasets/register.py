"""Register datasets of any supported format, from Python or from ``DATASETS.REGISTER``.

A ``DATASETS.REGISTER`` entry is a mapping with ``name`` and ``format`` (default ``coco``) and
that format's fields (relative paths resolve against the config file that declares them):

- ``coco``: ``json_file``, ``image_root`` (default: the json's folder);
- ``voc``: ``root``, optional ``split`` (``ImageSets/Main/<split>.txt`` or a list file),
  ``classes`` (list or names file), ``image_dir``, ``annotation_dir``, ``difficult``
  (keep | crowd | drop), ``one_based`` (default true);
- ``yolo``: ``root`` (folder or data.yaml) and ``split``, or ``images`` (+ ``labels``);
  ``names`` (list, classes.txt or data.yaml).

Any format may add ``split_ratios: {train: 0.8, val: 0.2}`` (with ``split_seed``, default 0,
and ``group_pattern``, a regex over the image path): the set is then registered as ``<name>``
and as ``<name>_<part>`` for each part, split by :func:`detlab.data.split.split_dataset_dicts`
(byte-identical images and images of one group never straddle two parts; the reader's counts
of skipped images and dropped/clipped boxes are those of the whole set). Other keys become
metadata of the dataset (e.g. ``thing_colors``); a key close to a known field is an error.
VOC and YOLO sets are read at registration (errors surface at once, class names become
metadata) and again, cheaply, on every ``DatasetCatalog.get``.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.data.datasets.coco import read_coco, register_coco_instances
from detlab.data.datasets.quirks import ReadResult, dataset_quirks, record_quirks
from detlab.data.datasets.voc import read_voc
from detlab.data.datasets.yolo import read_yolo
from detlab.utils.errors import UserError

__all__ = [
    "FORMAT_FIELDS",
    "register_from_config",
    "register_reader",
    "register_voc_instances",
    "register_yolo_instances",
]

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "coco": ("json_file", "image_root"),
    "voc": ("root", "split", "classes", "image_dir", "annotation_dir", "difficult", "one_based"),
    "yolo": ("root", "split", "images", "labels", "names"),
}
COMMON_FIELDS = ("name", "format", "split_ratios", "split_seed", "group_pattern")
# Fields holding paths that resolve against the declaring config file (see config.py).
PATH_FIELDS = ("json_file", "image_root", "root", "images", "labels", "names", "classes")


def _set_meta(name: str, result: ReadResult, **extra: Any) -> None:
    ids = result.category_ids or [i + 1 for i in range(len(result.classes))]
    MetadataCatalog.get(name).set(
        thing_classes=list(result.classes),
        thing_dataset_id_to_contiguous_id={d: i for i, d in enumerate(ids)},
        thing_contiguous_id_to_dataset_id=dict(enumerate(ids)),
        evaluator_type="coco",
        image_root=result.image_root,
        **extra,
    )


def register_reader(
    name: str,
    read: Callable[[], ReadResult],
    metadata: dict[str, Any] | None = None,
    split: dict[str, Any] | None = None,
) -> list[str]:
    """Register ``read()``'s records under ``name`` (and its parts, see ``split``).

    ``read`` is called now (so errors and class names are known at registration) and on every
    ``DatasetCatalog.get``. ``split``: ``{"ratios": {part: fraction}, "seed", "group_pattern"}``.
    Returns the registered names.
    """
    parts = _check_split(name, split) if split else []
    taken = [n for n in (name, *(f"{name}_{p}" for p in parts)) if n in DatasetCatalog]
    if taken:
        raise UserError(f"Dataset '{taken[0]}' is already registered; choose another name.")
    result = read()

    def load() -> list[dict]:
        res = read()
        record_quirks(name, res.quirks)
        return res.records

    DatasetCatalog.register(name, load)
    _set_meta(name, result, **(metadata or {}))
    record_quirks(name, result.quirks)
    if not split:
        return [name]
    return [name, *_register_parts(name, load, result, metadata, split, parts)]


def _check_split(name: str, split: dict[str, Any]) -> list[str]:
    """Part names of a valid ``split`` option (ratios, seed and pattern are checked)."""
    import re

    from detlab.data.split import check_ratios

    ratios = split.get("ratios")
    if not isinstance(ratios, dict) or not ratios:
        raise UserError(f"Dataset '{name}': split_ratios must map part names to fractions.")
    check_ratios(list(ratios.values()), [str(p) for p in ratios])
    try:
        int(split.get("seed") or 0)
        re.compile(split.get("group_pattern") or "")
    except (TypeError, ValueError, re.error) as err:
        raise UserError(f"Dataset '{name}': bad split_seed or group_pattern ({err}).") from None
    return [str(p) for p in ratios]


def _register_parts(
    name: str,
    load_all: Callable[[], list[dict]],
    result: ReadResult,
    metadata: dict[str, Any] | None,
    split: dict[str, Any],
    parts: list[str],
) -> list[str]:
    from detlab.data.split import split_dataset_dicts

    ratios = split["ratios"]

    def part(p: str) -> list[dict]:
        records = load_all()
        quirks = dataset_quirks(name)
        done = split_dataset_dicts(
            records,
            list(ratios.values()),
            int(split.get("seed") or 0),
            parts,
            group_pattern=split.get("group_pattern"),
            root=result.image_root,
        )
        if quirks is not None:
            record_quirks(f"{name}_{p}", quirks)
        return done[p]

    names = []
    for p in parts:
        full = f"{name}_{p}"
        DatasetCatalog.register(full, functools.partial(part, p))
        _set_meta(full, result, **(metadata or {}))
        names.append(full)
    return names


def register_voc_instances(
    name: str,
    root: str,
    split: str | None = None,
    classes: str | Sequence[str] | None = None,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """Register a Pascal VOC folder (see :func:`~detlab.data.datasets.voc.read_voc`)."""
    register_reader(name, functools.partial(read_voc, root, split, classes, **options), metadata)


def register_yolo_instances(
    name: str,
    root: str | None = None,
    split: str | None = None,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """Register a YOLO txt dataset (see :func:`~detlab.data.datasets.yolo.read_yolo`)."""
    register_reader(name, functools.partial(read_yolo, root, split, **options), metadata)


def _check_fields(i: int, entry: dict, fmt: str) -> dict[str, Any]:
    """The entry's extra keys (metadata); a near-miss of a known field is an error."""
    known = set(COMMON_FIELDS) | set(FORMAT_FIELDS[fmt])
    every = set(COMMON_FIELDS).union(*FORMAT_FIELDS.values())
    extra = {}
    for key, value in entry.items():
        if key in known:
            continue
        if key in every:
            raise UserError(
                f"DATASETS.REGISTER[{i}] ('{entry.get('name')}'): '{key}' is not a field of "
                f"format {fmt} (its fields: {', '.join(FORMAT_FIELDS[fmt])})."
            )
        close = difflib.get_close_matches(key, sorted(every), n=1, cutoff=0.8)
        if close:
            raise UserError(
                f"DATASETS.REGISTER[{i}] ('{entry.get('name')}'): unknown field '{key}'; did you "
                f"mean '{close[0]}'?"
            )
        extra[key] = value
    return extra


def _entry_split(entry: dict) -> dict[str, Any] | None:
    if not entry.get("split_ratios"):
        return None
    return {
        "ratios": dict(entry["split_ratios"]),
        "seed": entry.get("split_seed", 0),
        "group_pattern": entry.get("group_pattern"),
    }


def _register_entry(i: int, entry: dict) -> list[str]:
    name = str(entry["name"])
    fmt = str(entry.get("format") or "coco").lower()
    if fmt not in FORMAT_FIELDS:
        raise UserError(
            f"DATASETS.REGISTER[{i}] ('{name}'): format must be one of "
            f"{', '.join(FORMAT_FIELDS)}, got '{fmt}'."
        )
    extra = _check_fields(i, entry, fmt)
    split = _entry_split(entry)
    where = f"DATASETS.REGISTER[{i}] ('{name}')"
    if fmt == "coco":
        if not entry.get("json_file"):
            raise UserError(f"{where} needs json_file (format coco).")
        json_file = os.path.abspath(os.path.expanduser(str(entry["json_file"])))
        image_root = entry.get("image_root") or os.path.dirname(json_file)
        image_root = os.path.abspath(os.path.expanduser(str(image_root)))
        if not os.path.isfile(json_file):
            raise UserError(
                f"{where}: json_file {json_file} does not exist; paths are relative to the config "
                "file that declares them."
            )
        if not os.path.isdir(image_root):
            raise UserError(f"{where}: image_root {image_root} is not a directory.")
        if split is None:
            register_coco_instances(name, extra, json_file, image_root)
            return [name]
        read = functools.partial(read_coco, json_file, image_root)
        return register_reader(name, read, extra, split)
    opts = {k: entry[k] for k in FORMAT_FIELDS[fmt] if entry.get(k) not in (None, "")}
    if fmt == "voc":
        if "root" not in opts:
            raise UserError(f"{where} needs root, the VOC folder (format voc).")
        read = functools.partial(read_voc, **opts)
    else:
        if "root" not in opts and "images" not in opts:
            raise UserError(f"{where} needs root (folder or data.yaml) or images (format yolo).")
        read = functools.partial(read_yolo, **opts)
    return register_reader(name, read, {"dataset_format": fmt, **extra}, split)


def register_from_config(cfg: Any) -> list[str]:
    """Register every ``DATASETS.REGISTER`` entry (see the module docstring).

    Entries already registered with the same fields are skipped, so calling this twice is safe.
    Returns the names registered by the call.
    """
    done: list[str] = []
    for i, entry in enumerate(list(cfg.DATASETS.REGISTER or [])):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise UserError(
                f"DATASETS.REGISTER[{i}] must be a mapping with a name, a format and its fields "
                f"(e.g. name, json_file, image_root), got {entry!r}."
            )
        name = str(entry["name"])
        signature = repr(sorted((str(k), repr(v)) for k, v in entry.items()))
        if name in DatasetCatalog:
            meta = MetadataCatalog.get(name)
            if meta.get("register_entry") == signature or _same_coco(meta, entry):
                continue
            raise UserError(
                f"DATASETS.REGISTER[{i}] names '{name}', which is already registered with other "
                "files; choose another name."
            )
        names = _register_entry(i, entry)
        MetadataCatalog.get(name).set(register_entry=signature)
        done.extend(names)
    return done


def _same_coco(meta: Any, entry: dict) -> bool:
    """A plain COCO entry matching a dataset registered in Python with the same files."""
    if entry.get("format", "coco") != "coco" or not entry.get("json_file"):
        return False
    json_file = os.path.abspath(os.path.expanduser(str(entry["json_file"])))
    image_root = entry.get("image_root") or os.path.dirname(json_file)
    image_root = os.path.abspath(os.path.expanduser(str(image_root)))
    return meta.get("json_file") == json_file and meta.get("image_root") == image_root
