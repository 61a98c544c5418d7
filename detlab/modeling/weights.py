"""``MODEL.WEIGHTS``: load weights from a file or a named source into a detlab model.

``MODEL.WEIGHTS`` is a local path or a source of :mod:`detlab.modeling.weight_sources`
(``torchvision://``, ``timm://``, ``https://``, ``detectron2://``), downloaded once into the
library's cache. The file is read safely by :mod:`detlab.modeling.weight_files` (PyTorch with
``weights_only=True``, ``.safetensors``, Detectron2/Caffe2 ``.pkl`` by a restricted
unpickler), and its names are mapped onto the model by :mod:`detlab.modeling.weight_names`:

* a detlab checkpoint ``{"model": state_dict, ...}`` (or a bare state dict of the detector);
* a torchvision or timm classification ResNet (``conv1.weight``, ``layer1.0...``, ``fc``:
  the classifier shows as unexpected) onto ``backbone.*``;
* a torchvision detector (``backbone.body.*``, ``backbone.fpn.*``, RPN, box head, RetinaNet
  and FCOS heads);
* Detectron2 checkpoints (``backbone.bottom_up.res2.0.conv1.weight``, ...) and Caffe2 names
  (``res2_0_branch2a_w``, ...), ``.pth`` or ``.pkl``.

A 3-channel first convolution loaded into a 1-channel model is summed over its input
channels (the usual way to start a single-channel SAR model from RGB weights). Keys with a
different shape are skipped. A short table of missing, unexpected and skipped keys is logged
and returned; a file of which no tensor fits the model is an error.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from torch import nn

from detlab.modeling.weight_files import read_weights_file
from detlab.modeling.weight_names import map_state_dict
from detlab.modeling.weight_sources import resolve_weights
from detlab.utils.errors import UserError

__all__ = ["load_weights", "format_load_report"]

logger = logging.getLogger(__name__)

_SCHEME_NAMES = {
    "detlab": "detlab names",
    "detectron2": "Detectron2 names",
    "caffe2": "Caffe2 names",
    "torchvision": "torchvision/timm names",
}


def load_weights(model: nn.Module, path: str) -> dict[str, Any]:
    """Load ``path`` (a file or a ``MODEL.WEIGHTS`` source) into ``model`` non-strictly.

    Returns ``{"loaded": [...], "missing": [...], "unexpected": [...], "skipped": [...],
    "adapted": [...], "names": scheme}`` (key lists; ``skipped`` = shape mismatch,
    ``adapted`` = converted or filled in, e.g. first conv summed over input channels; ``names``
    = the naming scheme the file was read in) and logs it as a table.
    """
    target = model.state_dict()
    local = resolve_weights(path)
    mapped = map_state_dict(read_weights_file(local).state, model)
    state = mapped.state
    load, skipped, adapted = {}, [], list(mapped.adapted)
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
        "names": mapped.scheme,
    }
    if not load:
        raise UserError(
            f"MODEL.WEIGHTS {path} does not fit this model: none of its {len(state)} tensors "
            f"matches a weight of {type(model).__name__} by name and shape (read as "
            f"{_SCHEME_NAMES[mapped.scheme]}); check MODEL.META_ARCHITECTURE, the backbone "
            "and NUM_CLASSES, or the file."
        )
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
    names = _SCHEME_NAMES.get(report.get("names", "detlab"), "detlab names")
    lines = [f"{'loaded':<11}| {len(report['loaded'])} tensors ({names})"]
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
