"""Data-test fixtures: a private DETLAB_DATA, tiny synthetic SAR sets in tmp folders, quirky
VOC/YOLO folder builders."""

from __future__ import annotations

import importlib
import itertools
import os
import sys

import pytest

from detlab.config import get_cfg
from detlab.data import DatasetCatalog, MetadataCatalog, SyntheticSARSpec, register_synthetic_sar

_counter = itertools.count()
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def folders():
    """The VOC/YOLO folder builders of ``_folders.py``."""
    return importlib.import_module("_folders")


@pytest.fixture
def forget():
    """``forget(*names)``: datasets to unregister (with metadata) after the test."""
    names: list[str] = []
    yield names.extend
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


@pytest.fixture(autouse=True)
def _private_data_root(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DETLAB_DATA", str(tmp_path_factory.getbasetemp() / "detlab-data"))


@pytest.fixture
def tiny_sar(tmp_path):
    """Factory: register a tiny synthetic SAR set, returns its name; removed afterwards."""
    names = []

    def make(num_images: int = 12, size: int = 64, classes=None, **kw) -> str:
        name = f"tiny_sar_{next(_counter)}"
        spec = SyntheticSARSpec(num_images=num_images, height=size, width=size, **kw)
        if classes is not None:
            spec.classes = classes
        register_synthetic_sar(name, spec, root=str(tmp_path))
        names.append(name)
        return name

    yield make
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


@pytest.fixture
def small_cfg():
    """Config for tiny single-channel SAR images: no resizing, batch 2, in-process loading."""
    cfg = get_cfg()
    cfg.DATALOADER.MAPPER = "ShipSARMapper"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MIN_SIZE_TEST = 64
    cfg.MODEL.BACKBONE.IN_CHANNELS = 1
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SEED = 7
    return cfg
