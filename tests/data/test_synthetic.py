"""Synthetic SAR sets: deterministic, real 16-bit files, promised size mix and clutter."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import cv2
import numpy as np

from detlab.data import (
    DatasetCatalog,
    MetadataCatalog,
    SyntheticSARSpec,
    dataset_stats,
    generate_synthetic_sar,
)
from detlab.data.datasets import BUILTIN_SYNTHETIC
from detlab.data.datasets.synthetic_sar import render_scene


def test_builtin_sets_registered():
    for name in ("sar_ships_synth_train", "sar_ships_synth_val"):
        assert name in DatasetCatalog.list()
        assert MetadataCatalog.get(name).thing_classes == ["ship"]
    vessels = MetadataCatalog.get("sar_vessels_synth_train").thing_classes
    assert len(vessels) >= 3
    freqs = [BUILTIN_SYNTHETIC["sar_vessels_synth_train"].classes[c][0] for c in vessels]
    assert freqs == sorted(freqs, reverse=True) and freqs[0] >= 3 * freqs[-1]


def test_deterministic_for_a_seed():
    spec = SyntheticSARSpec(num_images=3, height=96, width=96, seed=5)
    a = [render_scene(spec, i) for i in range(3)]
    b = [render_scene(spec, i) for i in reversed(range(3))][::-1]
    for (ia, aa, fa), (ib, ab, fb) in zip(a, b, strict=True):
        assert np.array_equal(ia, ib) and aa == ab and fa == fb
    other = render_scene(SyntheticSARSpec(num_images=3, height=96, width=96, seed=6), 0)[0]
    assert not np.array_equal(other, a[0][0])


def test_files_are_16bit_single_channel_and_boxes_fit(tmp_path):
    spec = SyntheticSARSpec(num_images=6, height=128, width=128, seed=1, ships_per_image=(2, 4))
    path = generate_synthetic_sar(str(tmp_path / "set"), spec)
    data = json.loads(Path(path).read_text())
    assert len(data["images"]) == 6 and data["annotations"]
    for img in data["images"]:
        arr = cv2.imread(str(tmp_path / "set" / img["file_name"]), cv2.IMREAD_UNCHANGED)
        assert arr.dtype == np.uint16 and arr.ndim == 2 and arr.shape == (128, 128)
        assert arr.max() > 255  # real 16-bit dynamic range, not 8-bit in a 16-bit file
        for a in (a for a in data["annotations"] if a["image_id"] == img["id"]):
            x, y, w, h = a["bbox"]
            assert 0 <= x and 0 <= y and x + w <= 128 and y + h <= 128 and w >= 1 and h >= 1
            # the box holds the target: its brightest pixel is well above the image median
            inside = arr[int(y) : int(y + h), int(x) : int(x + w)].astype(float)
            assert inside.max() > 2 * np.median(arr)
    # generating again is a no-op on a complete folder
    before = os.path.getmtime(path)
    generate_synthetic_sar(str(tmp_path / "set"), spec)
    assert os.path.getmtime(path) == before


def _generate(out: str, queue) -> None:
    spec = SyntheticSARSpec(num_images=8, height=64, width=64, seed=2)
    try:
        queue.put(generate_synthetic_sar(out, spec))
    except Exception as err:  # pragma: no cover - reported by the parent
        queue.put(repr(err))


def test_concurrent_generation_is_safe(tmp_path):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_generate, args=(str(tmp_path / "race"), queue)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert len(set(results)) == 1 and results[0].endswith("annotations.json"), results
    assert len(json.loads(Path(results[0]).read_text())["images"]) == 8
    assert sorted(os.listdir(tmp_path)) == ["race"]  # no temporary folders left behind


def test_physical_properties_and_size_mix(tiny_sar):
    name = tiny_sar(num_images=60, size=256)
    stats = dataset_stats(name)
    small = stats["per_size"]["small"] / stats["instances"]
    assert small >= 0.4 and stats["per_size"]["medium"] > 0
    data = json.loads(Path(MetadataCatalog.get(name).json_file).read_text())
    looks = {img["looks"] for img in data["images"]}
    assert looks == {1, 2, 3, 4}
    hard = np.mean([bool(img["hard_negatives"]) for img in data["images"]])
    assert hard >= 0.25
    scr = np.array([a["scr_db"] for a in data["annotations"]])
    assert scr.min() < 5.0 and scr.max() > 15.0
