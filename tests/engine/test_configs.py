"""Every config file under configs/ (except sweep specs) loads over the defaults."""

from __future__ import annotations

import glob
import os

import pytest

from detlab.config import load_config

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
FILES = sorted(
    f
    for f in glob.glob(os.path.join(ROOT, "**", "*.yaml"), recursive=True)
    if os.sep + "sweeps" + os.sep not in f
)


def test_configs_exist():
    names = {os.path.relpath(f, ROOT) for f in FILES}
    assert {"Base-FCOS.yaml", "Base-FasterRCNN.yaml", "quickstart/sar_ships_cpu.yaml"} <= names
    assert len([n for n in names if n.startswith("etram/fcos")]) == 6


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.SOLVER.MAX_ITER > 0 and cfg.OUTPUT_DIR


def test_recipes_say_what_they_promise():
    sar = load_config(os.path.join(ROOT, "sar_ships", "faster_rcnn_R50_FPN.yaml"))
    assert sar.MODEL.META_ARCHITECTURE == "FasterRCNN"
    assert (sar.SOLVER.MAX_ITER, tuple(sar.SOLVER.STEPS), sar.SOLVER.BASE_LR) == (
        15000,
        (8000, 12000),
        1e-4,
    )
    assert sar.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE == 256
    clip = sar.SOLVER.CLIP_GRADIENTS
    assert (clip.ENABLED, clip.CLIP_TYPE, clip.CLIP_VALUE) == (True, "value", 1.0)
    assert tuple(sar.INPUT.MIN_SIZE_TRAIN) == (640, 800, 1024, 1280)
    assert sar.DATALOADER.MAPPER == "ShipSARMapper"
    infra = load_config(os.path.join(ROOT, "infra", "faster_rcnn_R50_FPN.yaml"))
    assert (infra.SOLVER.MAX_ITER, tuple(infra.SOLVER.STEPS), infra.SOLVER.BASE_LR) == (
        30000,
        (18000, 25000),
        2e-4,
    )
    # registered paths are resolved against the config file
    assert os.path.isabs(infra.DATASETS.REGISTER[0]["json_file"])
    seen = set()
    for f in glob.glob(os.path.join(ROOT, "etram", "fcos_*.yaml")):
        cfg = load_config(f)
        assert cfg.MODEL.FCOS.NUM_CLASSES == 8
        memory = cfg.MODEL.TEMPORAL.NAME
        seen.add((tuple(cfg.MODEL.FPN.IN_STAGES), cfg.MODEL.SIZE_AWARE_LOSS.ENABLED, memory))
    assert seen == {
        ((2, 3, 4), False, "ConvLSTM"),
        ((2, 3, 4), True, "ConvLSTM"),
        ((1, 2, 3, 4), False, "ConvLSTM"),
        ((1, 2, 3, 4), True, "ConvLSTM"),
        ((2, 3, 4), True, "none"),
        ((1, 2, 3, 4), True, "none"),
    }
