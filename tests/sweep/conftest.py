"""Fixtures for sweep tests: a tiny base config, spec files and the stand-in trainer."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

FAKE_TRAIN = str(Path(__file__).with_name("fake_train_net.py"))


@pytest.fixture
def make_spec(tmp_path, monkeypatch):
    """``make_spec(parameters=..., **keys) -> path`` of a spec using the stand-in trainer."""
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_TRAIN_CALLS", str(calls))
    monkeypatch.delenv("FAKE_TRAIN_SLEEP", raising=False)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"SOLVER": {"MAX_ITER": 20, "BASE_LR": 0.01}}))

    def make(name: str = "spec.yaml", **keys) -> Path:
        spec = {
            "base_config": "base.yaml",
            "fixed": {"SOLVER.CLIP_GRADIENTS.ENABLED": True},
            "parameters": {
                "SOLVER.BASE_LR": [0.01, 0.02],
                "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": [0.5, 1.0],
            },
            "metric": "bbox/APs",
            "mode": "max",
            "output_root": str(tmp_path / "sweep"),
            "name_template": "lr{BASE_LR}_clip{CLIP_VALUE}",
            "train_script": FAKE_TRAIN,
            "python": sys.executable,
        }
        spec.update(keys)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    make.calls = calls
    make.root = tmp_path / "sweep"
    make.read_calls = lambda: _read_calls(calls)
    return make


def _read_calls(path: Path) -> list[dict]:
    """One record per stand-in trainer invocation (see fake_train_net.py)."""
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
