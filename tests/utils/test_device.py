"""MODEL.DEVICE "auto": CUDA when present, else CPU; explicit names pass through."""

from __future__ import annotations

import torch

from detlab.config import get_cfg
from detlab.utils.env import resolve_device


def test_explicit_devices_pass_through():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("cuda:1") == "cuda:1"


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("AUTO") == "cuda"


def test_default_config_device_is_auto():
    assert get_cfg().MODEL.DEVICE == "auto"
