"""``MODEL.WEIGHTS``: the one loader of initial / evaluation weights into a detlab model.

Training (when not resuming), ``--eval-only``, ``tools/visualize.py``, ``tools/export_onnx.py``
and the diagnostics all call :func:`load_model_weights`. It runs four steps:

1. **resolve** the spec to a local file or a state dict: a path (or ``file://`` path), or
   ``<scheme>://...`` through ``WEIGHT_SOURCE_REGISTRY`` (a source registered for the scheme
   returns a local path or a state dict — e.g. a download into a cache);
2. **read** the file with ``torch.load(weights_only=True)``: a detlab checkpoint
   ``{"model": state_dict, ...}``, ``{"state_dict": ...}`` or a bare state dict (a leading
   ``module.`` is dropped);
3. **map keys** onto the model's names with the first adapter in :data:`KEY_ADAPTERS` that
   recognises the file: keys the model already has are used as they are; a torchvision
   classification ResNet (``conv1``, ``layer1``.., ``fc``) maps onto ``backbone.*``; a
   torchvision detection model's ``backbone.body.*`` onto ``backbone.*``;
4. **match shapes**: a 3-channel first convolution loaded into a 1-channel model is summed
   over its input channels (the usual start of a single-channel SAR model from RGB weights);
   other tensors of a different shape are skipped.

A file that matches nothing in the model (zero tensors loaded) is a :class:`UserError`. When
any tensor of the file was not used (unexpected or skipped) the report is logged at WARNING,
otherwise at INFO. The report is returned: ``{"loaded", "missing", "unexpected", "skipped",
"adapted"}`` key lists.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from detlab.utils.errors import UserError
from detlab.utils.file_io import read_torch_file
from detlab.utils.registry import Registry

__all__ = [
    "KEY_ADAPTERS",
    "WEIGHT_SOURCE_REGISTRY",
    "build_inference_model",
    "format_load_report",
    "load_model_weights",
    "read_state_dict",
    "register_weight_source",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

WEIGHT_SOURCE_REGISTRY = Registry(
    "WEIGHT_SOURCE",
    doc="""Sources of ``MODEL.WEIGHTS`` by URI scheme (``<scheme>://rest``).

A registered function ``fn(spec: str) -> str | dict[str, Tensor]`` takes the whole spec and
returns a local file path (read like any ``MODEL.WEIGHTS`` file) or a state dict; either then
goes through the same key mapping and shape matching. Register with
``@register_weight_source("scheme")``. A source must not execute what it reads
(``torch.load(weights_only=True)``), and offline it raises a UserError saying which file to put
where.
""",
)


def register_weight_source(scheme: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn(spec) -> path | state_dict`` for ``scheme://`` specs."""

    def deco(fn: Callable) -> Callable:
        WEIGHT_SOURCE_REGISTRY._do_register(scheme, fn)
        return fn

    return deco


_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def resolve_weights(spec: str) -> str | StateDict:
    """A ``MODEL.WEIGHTS`` spec → a local path or a state dict (step 1)."""
    m = _SCHEME.match(spec)
    if m is None:
        return spec
    scheme = m.group(1)
    if scheme == "file":
        return spec[len("file://") :]
    if scheme not in WEIGHT_SOURCE_REGISTRY:
        known = ", ".join(f"{s}://" for s in WEIGHT_SOURCE_REGISTRY.names()) or "none"
        raise UserError(
            f"MODEL.WEIGHTS '{spec}' uses the scheme {scheme}://, which detlab cannot read "
            f"(known: {known}); give a file path instead."
        )
    return WEIGHT_SOURCE_REGISTRY.get(scheme)(spec)


def read_state_dict(path: str) -> StateDict:
    """Read a weights file safely into a flat ``{key: Tensor}`` dict (step 2)."""
    return _unwrap(read_torch_file(path, "MODEL.WEIGHTS file"), path)


def _unwrap(obj: Any, where: str) -> StateDict:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"MODEL.WEIGHTS {where} holds no state dict; expected a detlab checkpoint "
            "{'model': state_dict} or a torchvision state dict."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


# ---------------------------------------------------------------- key adapters (step 3)
_RESNET_PREFIXES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc.")


def _same_names(state: StateDict, model_keys: set[str]) -> StateDict | None:
    return state if any(k in model_keys for k in state) else None


def _torchvision_classifier(state: StateDict, model_keys: set[str]) -> StateDict | None:
    if not all(k.startswith(_RESNET_PREFIXES) for k in state):
        return None
    return {f"backbone.{k}": v for k, v in state.items()}


def _torchvision_detector(state: StateDict, model_keys: set[str]) -> StateDict | None:
    if not any(k.startswith("backbone.body.") for k in state):
        return None
    body = "backbone.body."
    return {
        ("backbone." + k.removeprefix(body) if k.startswith(body) else k): v
        for k, v in state.items()
    }


#: ``adapter(state, model_keys) -> renamed state | None`` tried in order; the first that
#: recognises the file renames it. Other formats (e.g. Detectron2 checkpoints) add theirs here.
KEY_ADAPTERS: list[Callable[[StateDict, set[str]], StateDict | None]] = [
    _same_names,
    _torchvision_classifier,
    _torchvision_detector,
]


def _map_keys(state: StateDict, model_keys: set[str]) -> StateDict:
    for adapter in KEY_ADAPTERS:
        mapped = adapter(state, model_keys)
        if mapped is not None:
            return mapped
    return state


# ---------------------------------------------------------------- the loader
def load_model_weights(model: nn.Module, spec: str | StateDict) -> dict[str, list[str]]:
    """Load ``MODEL.WEIGHTS`` (a path, a ``scheme://`` spec or a state dict) into ``model``.

    Non-strict: what the file lacks keeps the model's initialisation. Raises
    :class:`UserError` when not one tensor fits. Returns ``{"loaded", "missing",
    "unexpected", "skipped", "adapted"}`` (key lists; ``skipped``: shape mismatch,
    ``adapted``: first conv summed over input channels), also logged as a table.
    """
    name = spec if isinstance(spec, str) else "state dict"
    source = resolve_weights(spec) if isinstance(spec, str) else spec
    state = read_state_dict(source) if isinstance(source, str) else _unwrap(source, name)
    target = model.state_dict()
    state = _map_keys(state, set(target))
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
    if not load:
        theirs = ", ".join(list(state)[:2]) or "none"
        ours = ", ".join(list(target)[:2])
        raise UserError(
            f"MODEL.WEIGHTS {name} matches nothing in this {type(model).__name__} (0 of "
            f"{len(state)} tensors fit; the file has keys like {theirs}, the model {ours}); it "
            "was written for another model, so check MODEL.META_ARCHITECTURE, the backbone and "
            "NUM_CLASSES."
        )
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
    level = logging.WARNING if report["unexpected"] or report["skipped"] else logging.INFO
    logger.log(level, "Loaded weights from %s:\n%s", name, format_load_report(report))
    return report


def build_inference_model(cfg: Any) -> nn.Module:
    """``build_model(cfg)`` with ``MODEL.WEIGHTS`` loaded by :func:`load_model_weights`, in
    eval mode (what ``tools/visualize.py`` and ``tools/export_onnx.py`` run)."""
    from detlab.modeling.meta_arch.build import build_model

    if not cfg.MODEL.WEIGHTS:
        raise UserError("This needs a trained model: pass MODEL.WEIGHTS path/to/model.pth.")
    model = build_model(cfg)
    load_model_weights(model, cfg.MODEL.WEIGHTS)
    return model.eval()


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
