"""Loads the toy detector/loader module (``_toy.py``) for the trainer tests."""

from __future__ import annotations

import importlib
import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def toy():
    return importlib.import_module("_toy")


@pytest.fixture
def run_toy(toy, tmp_path):
    """``run_toy(**overrides) -> (trainer, final_metrics)`` in a fresh OUTPUT_DIR."""

    def run(output_dir=None, resume=False, **overrides):
        from detlab.engine import default_setup

        cfg = toy.toy_cfg(output_dir or tmp_path / "out", **overrides)
        cfg = default_setup(cfg)
        trainer = toy.ToyTrainer(cfg)
        trainer.resume_or_load(resume=resume)
        return trainer, trainer.train()

    return run
