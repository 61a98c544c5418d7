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
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import cv2

from detlab.data.catalog import DatasetCatalog, MetadataCatalog
from detlab.data.datasets.coco import load_coco_json
from detlab.data.datasets.synthetic_sar import SyntheticSARSpec, render_scene
from detlab.utils.errors import UserError

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
_DONE = "COMPLETE"

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


def data_root() -> str:
    """``$DETLAB_DATA`` if set, else the user's cache folder (``~/.cache/detlab``)."""
    root = os.environ.get("DETLAB_DATA")
    if root:
        return os.path.abspath(os.path.expanduser(root))
    try:
        import platformdirs

        return platformdirs.user_cache_dir("detlab")
    except ImportError:  # pragma: no cover - platformdirs ships with pip-installed setuptools
        return os.path.join(os.path.expanduser("~"), ".cache", "detlab")


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


def build_folder_once(
    out_dir: str, fingerprint: str, fill: Callable[[str], None], what: str
) -> str:
    """Create ``out_dir`` by ``fill(temporary folder)`` and a rename, unless it already holds a
    complete copy with the same ``fingerprint``; returns ``out_dir``.

    Concurrent callers each fill a private temporary folder; the first rename wins and the
    others read its copy. A stale incomplete folder in the way is replaced. ``what`` names
    the content in messages ("synthetic SAR set").
    """
    out_dir = os.path.abspath(out_dir)
    done = os.path.join(out_dir, _DONE)
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            if f.read().strip() != fingerprint:
                raise UserError(
                    f"{out_dir} already holds a different {what}; choose another output "
                    "folder or delete it."
                )
        return out_dir
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UserError(f"{out_dir} exists and is not empty; choose another output folder.")
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.tmp-", dir=parent)
    try:
        t0 = time.time()
        fill(tmp)
        with open(os.path.join(tmp, _DONE), "w", encoding="utf-8") as f:
            f.write(fingerprint + "\n")
        try:
            os.rename(tmp, out_dir)
        except OSError:
            # Another process finished first (or a stale incomplete folder is in the way).
            if not os.path.isfile(done):
                stale = f"{out_dir}.stale-{uuid.uuid4().hex[:8]}"
                os.rename(out_dir, stale)
                shutil.rmtree(stale, ignore_errors=True)
                os.rename(tmp, out_dir)
        else:
            logger.info("Generated the %s in %s (%.1f s).", what, out_dir, time.time() - t0)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


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
    """Register the built-in synthetic SAR and event sets (idempotent)."""
    from detlab.data.datasets.builtin_events import register_builtin_events

    for name, spec in BUILTIN_SYNTHETIC.items():
        if name not in DatasetCatalog:
            register_synthetic_sar(name, spec)
    register_builtin_events()
