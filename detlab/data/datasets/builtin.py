"""Built-in synthetic SAR datasets: generated once into a cache folder, then read as COCO.

``sar_ships_synth_train`` / ``_val`` (one class, "ship") and ``sar_vessels_synth_train`` /
``_val`` (cargo 70 %, tanker 20 %, fishing 10 %) are registered by :func:`register_builtin`,
which ``import detlab.data`` calls. Nothing is generated on import: the files are written on
first use (``DatasetCatalog.get`` or reading ``MetadataCatalog.get(name).json_file``) into
``$DETLAB_DATA/synthetic_sar/<name>-<hash>/`` (default ``~/.cache/detlab``): 16-bit amplitude
PNGs and ``annotations.json``. Writing happens in a private temporary folder that is renamed
into place, so two processes racing to generate the same set both end up reading one
complete copy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import replace

import cv2

from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.data.datasets.coco import load_coco_json
from detlab.data.datasets.generated import build_folder_once, data_root
from detlab.data.datasets.synthetic_sar import SyntheticSARSpec, render_scene

__all__ = [
    "BUILTIN_SYNTHETIC",
    "build_folder_once",
    "data_root",
    "generate_synthetic_sar",
    "register_builtin",
    "register_synthetic_sar",
]

logger = logging.getLogger(__name__)
FORMAT_VERSION = 1

_SHIP = {"ship": (1.0, ("cargo", "tanker", "fishing", "generic"))}
_VESSELS = {
    "cargo": (0.7, ("cargo",)),
    "tanker": (0.2, ("tanker",)),
    "fishing": (0.1, ("fishing",)),
}
BUILTIN_SYNTHETIC: dict[str, SyntheticSARSpec] = {
    "sar_ships_synth_train": SyntheticSARSpec(num_images=1000, seed=1, classes=_SHIP),
    "sar_ships_synth_val": SyntheticSARSpec(num_images=200, seed=2, classes=_SHIP),
    "sar_vessels_synth_train": SyntheticSARSpec(num_images=1000, seed=3, classes=_VESSELS),
    "sar_vessels_synth_val": SyntheticSARSpec(num_images=200, seed=4, classes=_VESSELS),
}


def _coco(spec: SyntheticSARSpec, records: list[tuple[str, list[dict], dict]]) -> dict:
    images, annotations = [], []
    for i, (fname, anns, info) in enumerate(records):
        images.append(
            {"id": i + 1, "file_name": fname, "height": spec.height, "width": spec.width, **info}
        )
        for a in anns:
            x, y, bw, bh = a["bbox"]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": a["category"] + 1,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                    "ship_type": a["ship_type"],
                    "scr_db": a["scr_db"],
                }
            )
    cats = [{"id": i + 1, "name": n, "supercategory": "vessel"} for i, n in enumerate(spec.classes)]
    return {
        "info": {"description": "detlab synthetic SAR (16-bit amplitude)", "spec": repr(spec)},
        "images": images,
        "annotations": annotations,
        "categories": cats,
    }


def generate_synthetic_sar(out_dir: str, spec: SyntheticSARSpec) -> str:
    """Write ``spec`` as images + ``annotations.json`` into ``out_dir`` (atomically).

    Returns the json path. If ``out_dir`` already holds a complete copy, nothing is written.
    """

    def fill(tmp: str) -> None:
        os.makedirs(os.path.join(tmp, "images"))
        records = []
        params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if spec.ext == "png" else []
        for i in range(spec.num_images):
            image, anns, info = render_scene(spec, i)
            fname = f"images/{i:06d}.{spec.ext}"
            if not cv2.imwrite(os.path.join(tmp, fname), image, params):
                raise OSError(f"could not write {fname} into {tmp}")
            records.append((fname, anns, info))
        with open(os.path.join(tmp, "annotations.json"), "w", encoding="utf-8") as f:
            json.dump(_coco(spec, records), f)

    what = f"synthetic SAR set ({spec.num_images} images)"
    folder = build_folder_once(out_dir, spec.fingerprint(), fill, what)
    return os.path.join(folder, "annotations.json")


def _folder(name: str, spec: SyntheticSARSpec, root: str | None) -> str:
    digest = hashlib.sha1(f"v{FORMAT_VERSION}|{spec.fingerprint()}".encode()).hexdigest()[:10]
    return os.path.join(root or data_root(), "synthetic_sar", f"{name}-{digest}")


def register_synthetic_sar(
    name: str, spec: SyntheticSARSpec, root: str | None = None, **metadata
) -> None:
    """Register a synthetic SAR set generated on first use into ``root`` (default cache)."""
    spec = replace(spec)

    def folder() -> str:
        return _folder(name, spec, root)

    def ensure() -> str:
        return generate_synthetic_sar(folder(), spec)

    def load() -> list[dict]:
        path = ensure()
        return load_coco_json(path, os.path.dirname(path), name)

    DatasetCatalog.register(name, load)
    meta = MetadataCatalog.get(name)
    classes = list(spec.classes)
    meta.set(
        thing_classes=classes,
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(classes))},
        thing_contiguous_id_to_dataset_id={i: i + 1 for i in range(len(classes))},
        evaluator_type="coco",
        sar_kind="amplitude",
        bit_depth=16,
        **metadata,
    )
    meta.set_lazy("json_file", ensure, cache=False)
    meta.set_lazy("image_root", lambda: os.path.dirname(ensure()), cache=False)


def register_builtin() -> None:
    """Register the built-in synthetic SAR sets (idempotent)."""
    for name, spec in BUILTIN_SYNTHETIC.items():
        if name not in DatasetCatalog:
            register_synthetic_sar(name, spec)
