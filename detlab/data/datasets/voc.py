"""Pascal VOC folders (SSDD and its copies, VOCdevkit, LabelImg output) read into dataset dicts.

Layout: ``root/Annotations/<stem>.xml`` (or ``annotations/``, ``xml/``, or XMLs in ``root``),
images in ``root/JPEGImages/`` (else ``images/``, the annotation folder itself, or ``root``),
optional split lists ``root/ImageSets/Main/<split>.txt`` (one stem per line; extra columns,
CRLF endings, a BOM and ``.jpg``/``.xml`` suffixes are accepted). Pairing is by name only: the
record of ``<stem>.xml`` uses the image ``<stem>.*`` and never the file its ``<filename>`` tag
names; tags that disagree are counted and reported. The image size is read from the image
header; a ``<size>`` that disagrees is reported and the header wins. No image backs two
records (a duplicate is an error naming both sources).

Coordinates: VOC corners are 1-based and inclusive (the devkit's convention; Detectron2's VOC
loader subtracts 1 from xmin/ymin too), so pixel ``xmin`` covers ``[xmin - 1, xmin)`` in detlab's
continuous 0-based coordinates and the box is ``[xmin - 1, ymin - 1, xmax, ymax]`` (XYXY),
i.e. COCO ``[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``. Float coordinates get the
same shift. ``one_based=False`` reads corners as 0-based continuous coordinates instead, for
exporters that write those. ``difficult`` objects are kept (``"keep"``), marked
``iscrowd=1`` so training and COCO evaluation ignore them (``"crowd"``), or left out (``"drop"``).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from detlab.data.datasets.images import IMAGE_EXTS, ImageHeader, image_header, is_image_file
from detlab.data.datasets.names import class_names, read_text_lines
from detlab.data.datasets.quirks import (
    Quirks,
    ReadResult,
    check_unique_images,
    clean_box,
    report_identical_images,
)
from detlab.utils.errors import UserError

__all__ = ["read_voc", "voc_split_stems"]

_IMAGE_DIRS = ("JPEGImages", "images", "Images", "JPEGImage", "imgs")
_ANNOTATION_DIRS = ("annotations", "annotation", "xml", "xmls")
_STRIP_EXTS = (".xml", *IMAGE_EXTS)


def _resolve(root: str, sub: str | None) -> str:
    return os.path.normpath(os.path.join(root, os.path.expanduser(sub))) if sub else root


def _annotation_dir(root: str, annotation_dir: str | None) -> str:
    if annotation_dir:
        path = _resolve(root, annotation_dir)
        if not os.path.isdir(path):
            raise UserError(f"VOC annotation folder {path} does not exist; check annotation_dir.")
        return path
    names = sorted(os.listdir(root))
    for want in _ANNOTATION_DIRS:  # Annotations/, or as other tools spell it
        for name in names:
            path = os.path.join(root, name)
            if name.lower() == want and os.path.isdir(path):
                return path
    if any(n.lower().endswith(".xml") for n in names):
        return root  # LabelImg style: XMLs next to (or above) the images
    raise UserError(
        f"{root} has no Annotations/ folder and no .xml files; point root at the VOC folder "
        "(the one holding Annotations/ and JPEGImages/) or set annotation_dir."
    )


def _image_dir(root: str, ann_dir: str, image_dir: str | None) -> str:
    if image_dir:
        path = _resolve(root, image_dir)
        if not os.path.isdir(path):
            raise UserError(f"VOC image folder {path} does not exist; check image_dir.")
        return path
    for cand in (*(os.path.join(root, d) for d in _IMAGE_DIRS), ann_dir, root):
        if os.path.isdir(cand) and any(is_image_file(n) for n in os.listdir(cand)):
            return cand
    raise UserError(
        f"No image folder found in {root} (looked for {', '.join(_IMAGE_DIRS)} and next to the "
        "XML files); set image_dir."
    )


def _list_file(root: str, split: str) -> str:
    if split.lower().endswith(".txt") or os.sep in split or "/" in split:
        path = _resolve(root, split)
        if not os.path.isfile(path):
            raise UserError(f"VOC split list {path} does not exist; check split.")
        return path
    cands = [
        os.path.join(root, "ImageSets", "Main", f"{split}.txt"),
        os.path.join(root, "ImageSets", f"{split}.txt"),
        os.path.join(root, f"{split}.txt"),
    ]
    for cand in cands:
        if os.path.isfile(cand):
            return cand
    main = os.path.join(root, "ImageSets", "Main")
    have = sorted(
        n[:-4] for n in (os.listdir(main) if os.path.isdir(main) else []) if n.endswith(".txt")
    )
    have = [n for n in have if "_" not in n] or have  # <class>_<split>.txt are per-class lists
    hint = f"; available: {', '.join(have)}" if have else ""
    raise UserError(f"VOC split '{split}' not found: no {cands[0]}{hint}.")


def voc_split_stems(list_file: str) -> list[tuple[str, int]]:
    """``(stem, line number)`` of a VOC split list; a stem listed twice is an error."""
    out: list[tuple[str, int]] = []
    first: dict[str, int] = {}
    for n, line in enumerate(read_text_lines(list_file), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        stem = parts[0].replace("\\", "/")
        if stem.lower().endswith(_STRIP_EXTS):
            stem = os.path.splitext(stem)[0]
        if stem in first:
            raise UserError(
                f"{list_file} lists '{stem}' twice (lines {first[stem]} and {n}); each image may "
                "be used once, so remove one line."
            )
        first[stem] = n
        out.append((stem, n))
    return out


class _ImageIndex:
    """Image files of a folder by stem (top level), with a case-insensitive fallback."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.by_stem: dict[str, list[str]] = {}
        self.by_lower: dict[str, list[str]] = {}
        for name in sorted(os.listdir(folder)):
            if is_image_file(name) and os.path.isfile(os.path.join(folder, name)):
                stem = os.path.splitext(name)[0]
                self.by_stem.setdefault(stem, []).append(name)
                self.by_lower.setdefault(stem.lower(), []).append(name)

    def find(self, stem: str, tag: str, quirks: Quirks, where: str) -> str | None:
        if "/" in stem:  # a stem with sub-folders: look it up directly
            names = [
                stem + e
                for e in (*IMAGE_EXTS, *(x.upper() for x in IMAGE_EXTS))
                if os.path.isfile(os.path.join(self.folder, stem + e))
            ]
        else:
            names = self.by_stem.get(stem, [])
        if not names:
            names = [] if "/" in stem else self.by_lower.get(stem.lower(), [])
            if len(names) == 1:
                quirks.add("case_mismatch", f"{where} -> {names[0]}")
        if len(names) > 1:
            chosen = [n for n in names if os.path.basename(n) == tag]
            if len(chosen) != 1:
                raise UserError(
                    f"{where}: several images are named like it ({', '.join(names)}) in "
                    f"{self.folder} and its <filename> does not pick one; remove the extra copy."
                )
            names = chosen
        return os.path.join(self.folder, names[0]) if names else None


def _parse(path: str) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise UserError(
            f"VOC annotation {path} is not valid XML ({err}); fix or remove it."
        ) from None
    except OSError as err:
        raise UserError(f"VOC annotation {path} cannot be read ({err.strerror}).") from None


def _number(elem: ET.Element | None, key: str) -> float | None:
    text = elem.findtext(key) if elem is not None else None
    try:
        return float(text.strip()) if text is not None else None
    except ValueError:
        return None


def _check_size(xml: ET.Element, header: ImageHeader, quirks: Quirks, where: str) -> None:
    size = xml.find("size")
    w, h = _number(size, "width"), _number(size, "height")
    if not w or not h or w <= 0 or h <= 0:
        quirks.add("size_missing", where)
    elif (round(h), round(w)) != (header.height, header.width):
        said = f"{round(w)}x{round(h)} in the XML, {header.width}x{header.height} in the file"
        if header.orientation != 1 and (round(h), round(w)) == header.displayed_size:
            quirks.add("rotated_labels", f"{where}: {said}")
        else:
            quirks.add("size_mismatch", f"{where}: {said}")
    if header.orientation != 1:
        quirks.add("exif_orientation", f"{where} (orientation {header.orientation})")


def _objects(
    xml: ET.Element,
    header: ImageHeader,
    quirks: Quirks,
    where: str,
    difficult: str,
    one_based: bool,
) -> list[tuple[str, list[float], int]]:
    shift = 1.0 if one_based else 0.0
    out = []
    for k, obj in enumerate(xml.findall("object")):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        corners = [_number(bb, key) for key in ("xmin", "ymin", "xmax", "ymax")]
        if not name or bb is None or any(v is None for v in corners):
            quirks.add("no_box", f"{where} object {k + 1}")
            continue
        diff = _number(obj, "difficult") or 0.0
        if diff:
            quirks.add(f"difficult_{difficult}", f"{where} object {k + 1}")
            if difficult == "drop":
                continue
        x0, y0, x1, y1 = corners
        box = clean_box(
            x0 - shift, y0 - shift, x1, y1, header.width, header.height, quirks,
            f"{where} object {k + 1}",
        )  # fmt: skip
        if box is not None:
            out.append((name, box, int(bool(diff) and difficult == "crowd")))
    return out


def read_voc(
    root: str,
    split: str | None = None,
    classes: str | Sequence[str] | None = None,
    *,
    image_dir: str | None = None,
    annotation_dir: str | None = None,
    difficult: str = "keep",
    one_based: bool = True,
) -> ReadResult:
    """Read a VOC folder (see the module docstring) into dataset dicts.

    Args:
        root: the VOC folder.
        split: a split name (``ImageSets/Main/<split>.txt``) or a list file path (relative to
            ``root``); None reads every XML of the annotation folder.
        classes: class names in id order (list or names file); default: every name found in
            the annotation folder, sorted (so all splits of one folder share their ids).
        image_dir, annotation_dir: folders relative to ``root`` when not the defaults.
        difficult: ``"keep"``, ``"crowd"`` or ``"drop"`` for objects marked difficult.
        one_based: corners are 1-based inclusive (VOC devkit) rather than 0-based.
    """
    if difficult not in ("keep", "crowd", "drop"):
        raise UserError(f"VOC difficult must be keep, crowd or drop, got '{difficult}'.")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise UserError(f"VOC root {root} is not a folder; check the root path.")
    ann_dir = _annotation_dir(root, annotation_dir)
    img_dir = _image_dir(root, ann_dir, image_dir)
    all_stems = sorted(n[:-4] for n in os.listdir(ann_dir) if n.lower().endswith(".xml"))
    if split:
        list_file = _list_file(root, split)
        listed = voc_split_stems(list_file)
        source = f"VOC {root} (split {split})"
    else:
        list_file, listed = "", [(s, 0) for s in all_stems]
        source = f"VOC {root}"
    if not listed:
        raise UserError(f"{source} lists no images; check {list_file or ann_dir}.")
    quirks = Quirks(source)
    index = _ImageIndex(img_dir)
    parsed: set[str] = set()
    names_found: set[str] = set()
    found: list[tuple[str, ImageHeader, list, str]] = []
    for stem, line in listed:
        xml_path = os.path.join(ann_dir, stem + ".xml")
        if "/" in stem and not os.path.isfile(xml_path):  # a list of paths, not of stems
            stem = os.path.basename(stem)
            xml_path = os.path.join(ann_dir, stem + ".xml")
        where = os.path.relpath(xml_path, root)
        if not os.path.isfile(xml_path):
            quirks.add("missing_annotation", f"{os.path.basename(list_file)}:{line} {stem}")
            continue
        xml = _parse(xml_path)
        parsed.add(stem)
        names_found.update((o.findtext("name") or "").strip() for o in xml.findall("object"))
        tag = os.path.basename((xml.findtext("filename") or "").strip().replace("\\", "/"))
        tag_stem = os.path.splitext(tag)[0]
        if tag and tag_stem.lower() != os.path.basename(stem).lower():
            quirks.add("stale_filename", f"{where} says {tag}")
        image = index.find(stem, tag, quirks, where)
        if image is None:
            quirks.add(
                "missing_image", f"{where} (no {stem}.* in {os.path.relpath(img_dir, root)})"
            )
            continue
        header = image_header(image)
        if header is None:
            quirks.add("unreadable_image", os.path.relpath(image, root))
            continue
        _check_size(xml, header, quirks, where)
        objs = _objects(xml, header, quirks, where, difficult, one_based)
        found.append((image, header, objs, where))
    if not found:
        raise UserError(
            f"{source}: none of the {len(listed)} listed annotations has a readable image in "
            f"{img_dir}; check image_dir (first: {quirks.examples.get('missing_image', ['?'])[0]})."
        )
    names = class_names(classes, source) or _all_names(ann_dir, all_stems, parsed, names_found)
    records = _records(found, names, source, quirks)
    sources = [f[3] for f in found]
    check_unique_images(records, lambda i: sources[i], source)
    report_identical_images(records, quirks, img_dir)
    _report_class_case(names, quirks)
    quirks.log()
    return ReadResult(records, names, img_dir, quirks, sources)


def _all_names(ann_dir: str, stems: list[str], parsed: set[str], names: set[str]) -> list[str]:
    """Sorted class names of every XML in the folder (not only the split read): ``names``
    holds those of the ``parsed`` files already."""
    names = set(names)
    for stem in stems:
        if stem in parsed:
            continue
        try:
            xml = ET.parse(os.path.join(ann_dir, stem + ".xml")).getroot()
        except (ET.ParseError, OSError):
            continue  # reported when that file's split is read
        names.update((o.findtext("name") or "").strip() for o in xml.findall("object"))
    names.discard("")
    return sorted(names)


def _records(found: list, names: list[str], source: str, quirks: Quirks) -> list[dict]:
    cat = {n: i for i, n in enumerate(names)}
    unknown = [(f[3], o[0]) for f in found for o in f[2] if o[0] not in cat]
    if unknown:
        raise UserError(
            f"{source}: class '{unknown[0][1]}' in {unknown[0][0]} ({len(unknown)} objects in all "
            f"of classes {sorted({u[1] for u in unknown})}) is not among the classes {names}; add "
            "it, or leave classes out to use every name found."
        )
    records = []
    for i, (image, header, objs, _) in enumerate(found):
        if not any(not crowd for _, _, crowd in objs):
            quirks.add("negative", os.path.basename(image))
        records.append(
            {
                "file_name": image,
                "height": header.height,
                "width": header.width,
                "image_id": i + 1,
                "annotations": [
                    {"bbox": box, "category_id": cat[n], "iscrowd": crowd, "area": box[2] * box[3]}
                    for n, box, crowd in objs
                ],
            }
        )
    return records


def _report_class_case(names: list[str], quirks: Quirks) -> None:
    folded: dict[str, str] = {}
    for n in names:
        key = "".join(n.lower().split())
        if key in folded:
            quirks.add("class_case", f"'{folded[key]}' vs '{n}'")
        folded.setdefault(key, n)
