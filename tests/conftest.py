"""Shared pytest setup: keep tests on CPU, small thread counts and a private data cache."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

from hypothesis import settings  # noqa: E402

# Property tests draw the same examples on every run, so a suite that passed keeps passing on
# a clean checkout; set DETLAB_HYPOTHESIS_EXPLORE=1 to search with fresh random examples.
settings.register_profile("detlab", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("DETLAB_HYPOTHESIS_EXPLORE") else "detlab")


@pytest.fixture
def d2_zoo(tmp_path):
    """Detectron2 model-zoo configs (Detectron2's syntax) written under a temporary folder."""
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import d2_zoo

    return d2_zoo.write_zoo(tmp_path / "d2_configs")
