"""Shared pytest setup: keep tests on CPU, small thread counts and a private data cache."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def d2_zoo(tmp_path):
    """Detectron2 model-zoo configs (Detectron2's syntax) written under a temporary folder."""
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import d2_zoo

    return d2_zoo.write_zoo(tmp_path / "d2_configs")
