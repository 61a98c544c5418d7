"""``MODEL.WEIGHTS``: load a detlab checkpoint or a torchvision-style backbone state dict.

Accepted files (read with ``torch.load(weights_only=True)``):

* a detlab checkpoint ``{"model": state_dict, ...}`` (or a bare state dict of the detector);
* a torchvision classification ResNet state dict (``conv1.weight``, ``layer1.0...``, ``fc``):
  its keys are mapped onto ``backbone.*`` (the classifier ``fc.*`` shows as unexpected);
* a torchvision detection state dict (``backbone.body.*``, ``backbone.fpn.*``): the body is
  mapped onto ``backbone.*``.

A 3-channel first convolution loaded into a 1-channel model is summed over its input
channels (the usual way to start a single-channel SAR model from RGB weights). Keys with a
different shape are skipped. A short table of missing, unexpected and skipped keys is logged
and returned.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch
from torch import nn

from detlab.utils.errors import UserError
from detlab.utils.file_io import read_torch_file

__all__ = ["load_weights", "format_load_report"]

logger = logging.getLogger(__name__)

_RESNET_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc.")


def _read(path: str) -> dict[str, torch.Tensor]:
    obj = read_torch_file(path, "MODEL.WEIGHTS file")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"MODEL.WEIGHTS file {path} holds no state dict; expected a detlab checkpoint "
            "{'model': state_dict} or a torchvision state dict."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _map_keys(state: dict[str, torch.Tensor], model_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename torchvision-style keys onto the detlab model's names when that is what they are."""
    if any(k in model_keys for k in state):
        return state
    if all(k.startswith(_RESNET_PREFIXES) for k in state):
        return {f"backbone.{k}": v for k, v in state.items()}
    if any(k.startswith("backbone.body.") for k in state):
        return {
            "backbone." + k.removeprefix("backbone.body."): v
            for k, v in state.items()
            if k.startswith("backbone.body.")
        } | {k: v for k, v in state.items() if not k.startswith("backbone.body.")}
    return state


def load_weights(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Load ``path`` into ``model`` non-strictly; returns and logs what did not match.

    Returns ``{"loaded": [...], "missing": [...], "unexpected": [...], "skipped": [...],
    "adapted": [...]}`` (key lists; ``skipped`` = shape mismatch, ``adapted`` = first conv
    summed over input channels).
    """
    target = model.state_dict()
    state = _map_keys(_read(path), set(target))
    load, skipped, adapted = {}, [], []
    for k, v in state.items():
        if k not in target:
            continue
        want = target[k].shape
        if v.shape == want:
            load[k] = v
        elif v.dim() == 4 and want[1] == 1 and v.shape[0] == want[0] and v.shape[2:] == want[2:]:
            load[k] = v.sum(dim=1, keepdim=True)
            adapted.append(k)
        else:
            skipped.append(f"{k} {tuple(v.shape)} -> {tuple(want)}")
    result = model.load_state_dict(load, strict=False)
    # Non-persistent or derived entries (e.g. FrozenBN's num_batches_tracked) are not missing.
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    report = {
        "loaded": sorted(load),
        "missing": missing,
        "unexpected": sorted(k for k in state if k not in target),
        "skipped": skipped,
        "adapted": adapted,
    }
    logger.info("Loaded weights from %s:\n%s", path, format_load_report(report))
    return report


def _group(keys: list[str]) -> list[str]:
    """Collapse keys by module prefix: ``layer1.0.conv1.weight`` → ``layer1.0.conv1.{weight}``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        head, _, leaf = k.rpartition(".")
        groups[head].append(leaf)
    return [f"{h}.{{{','.join(v)}}}" if len(v) > 1 else f"{h}.{v[0]}" for h, v in groups.items()]


def format_load_report(report: dict[str, Any], max_rows: int = 12) -> str:
    """A short plain-text table: one row per category with up to ``max_rows`` grouped keys."""
    lines = [f"{'loaded':<11}| {len(report['loaded'])} tensors"]
    for name in ("missing", "unexpected", "skipped", "adapted"):
        keys = report[name]
        if not keys:
            continue
        rows = _group(keys) if name in ("missing", "unexpected") else list(keys)
        shown = rows[:max_rows] + (
            [f"... {len(rows) - max_rows} more"] if len(rows) > max_rows else []
        )
        lines.append(f"{name:<11}| {len(keys)}: " + ("\n" + " " * 11 + "| ").join(shown))
    return "\n".join(lines)
