"""Full-size built-in synthetic sets (slow): generation time budget and the promised mix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from detlab.data import DatasetCatalog, MetadataCatalog, dataset_stats


@pytest.mark.slow
def test_builtin_ship_sets_generate_quickly_with_promised_mix(tmp_path, monkeypatch):
    monkeypatch.setenv("DETLAB_DATA", str(tmp_path))
    t0 = time.time()
    train = DatasetCatalog.get("sar_ships_synth_train")
    elapsed = time.time() - t0
    assert len(train) == 1000 and elapsed < 90  # about a minute on a slow shared CPU
    stats = dataset_stats("sar_ships_synth_train", train)
    assert stats["per_size"]["small"] >= 0.4 * stats["instances"]
    assert stats["per_size"]["medium"] > 0 and stats["per_size"]["large"] > 0
    data = json.loads(Path(MetadataCatalog.get("sar_ships_synth_train").json_file).read_text())
    assert {im["looks"] for im in data["images"]} == {1, 2, 3, 4}
    assert np.mean([bool(im["hard_negatives"]) for im in data["images"]]) >= 0.25
    assert min(a["scr_db"] for a in data["annotations"]) < 4.0


@pytest.mark.slow
def test_builtin_vessel_classes_are_imbalanced(tmp_path, monkeypatch):
    monkeypatch.setenv("DETLAB_DATA", str(tmp_path))
    stats = dataset_stats("sar_vessels_synth_val")
    counts = stats["per_class"]
    assert len(counts) >= 3
    share = np.array(list(counts.values())) / stats["instances"]
    assert np.allclose(share, [0.7, 0.2, 0.1], atol=0.08)
