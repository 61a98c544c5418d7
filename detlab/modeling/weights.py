"""``MODEL.WEIGHTS``: the one loader of initial / evaluation weights into a detlab model.

Training (when not resuming), ``--eval-only``, ``tools/visualize.py``, ``tools/export_onnx.py``
and the diagnostics call :func:`load_model_weights`; ``tools/eval.py`` runs its steps 1–3 and
then insists that every weight was found. The steps:

1. **resolve** the spec to a local file or a state dict: a path (or ``file://`` path), or
   ``<scheme>://...`` through ``WEIGHT_SOURCE_REGISTRY``. The built-in sources are the table
   of :mod:`detlab.modeling.weight_sources`: ``torchvision://<WeightsEnum>``,
   ``timm://<model>.<tag>``, ``https://``/``http://`` URLs and ``detectron2://<zoo path>``,
   each downloaded once into the library's cache (hash-checked where the source publishes
   one; offline, one sentence says which file to place where);
2. **read** the file safely (:mod:`detlab.modeling.weight_files`): ``torch.load(
   weights_only=True)`` (a detlab checkpoint ``{"model": ...}``, ``{"state_dict": ...}`` or a
   bare state dict, ``module.`` dropped), ``.safetensors``, and Detectron2 / Caffe2 ``.pkl``
   files through an unpickler that admits only numpy arrays and plain containers;
3. **map names** onto the model's: first the adapters in :data:`KEY_ADAPTERS` (formats detlab
   does not know; empty by default), else the naming among detlab's own, Detectron2's,
   Caffe2's and torchvision's/timm's that explains most of the file's tensors
   (:mod:`detlab.modeling.weight_names`: ResNet, FPN, RPN, box head, RetinaNet and FCOS heads,
   background class moved, affine-only norms given mean 0 / var 1);
4. **match shapes**: a 3-channel first convolution loaded into a 1-channel model is summed
   over its input channels (the usual start of a single-channel SAR model from RGB weights);
   other tensors of a different shape are skipped.

A file that matches nothing in the model (zero tensors loaded) is a :class:`UserError`. When
any tensor of the file was not used (unexpected or skipped) the report is logged at WARNING,
otherwise at INFO. The report is returned: ``{"loaded", "missing", "unexpected", "skipped",
"adapted"}`` key lists and ``"names"``, the naming the file was read in.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from detlab.modeling.weight_files import read_weights_file, unwrap_state_dict
from detlab.modeling.weight_names import map_state_dict
from detlab.modeling.weight_sources import SOURCES
from detlab.utils.errors import UserError
from detlab.utils.registry import Registry

__all__ = [
    "KEY_ADAPTERS",
    "WEIGHT_SOURCE_REGISTRY",
    "build_inference_model",
    "format_load_report",
    "load_model_weights",
    "map_names",
    "read_spec",
    "read_state_dict",
    "register_weight_source",
    "resolve_weights",
]

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
_SCHEME_NAMES = {
    "detlab": "detlab names",
    "detectron2": "Detectron2 names",
    "caffe2": "Caffe2 names",
    "torchvision": "torchvision/timm names",
}

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


for _scheme, _source in SOURCES.items():  # torchvision://, timm://, https://, detectron2://
    register_weight_source(_scheme)(_source)

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
    return read_weights_file(path).state


def read_spec(spec: str | StateDict) -> StateDict:
    """Steps 1 and 2: a ``MODEL.WEIGHTS`` spec (or a state dict) as a flat state dict."""
    name = spec if isinstance(spec, str) else "state dict"
    source = resolve_weights(spec) if isinstance(spec, str) else spec
    return read_state_dict(source) if isinstance(source, str) else unwrap_state_dict(source, name)


# ---------------------------------------------------------------- names (step 3)
#: ``adapter(state, model_keys) -> renamed state | None`` for formats detlab does not know,
#: tried in order before the built-in naming schemes; the first that recognises the file
#: renames it. Empty by default.
KEY_ADAPTERS: list[Callable[[StateDict, set[str]], StateDict | None]] = []


def map_names(state: StateDict, model: nn.Module) -> tuple[StateDict, str, list[str]]:
    """Step 3: ``(state renamed onto the model's keys, naming scheme, adaptation notes)``."""
    keys = set(model.state_dict())
    for adapter in KEY_ADAPTERS:
        mapped = adapter(state, keys)
        if mapped is not None:
            return mapped, getattr(adapter, "__name__", "adapter"), []
    result = map_state_dict(state, model)
    return result.state, result.scheme, result.adapted


# ---------------------------------------------------------------- the loader
def load_model_weights(model: nn.Module, spec: str | StateDict) -> dict[str, Any]:
    """Load ``MODEL.WEIGHTS`` (a path, a ``scheme://`` spec or a state dict) into ``model``.

    Non-strict: what the file lacks keeps the model's initialisation. Raises
    :class:`UserError` when not one tensor fits. Returns ``{"loaded", "missing",
    "unexpected", "skipped", "adapted"}`` (key lists; ``skipped``: shape mismatch,
    ``adapted``: converted or filled in, e.g. first conv summed over input channels) and
    ``"names"`` (``"detlab"``, ``"detectron2"``, ``"caffe2"``, ``"torchvision"`` or an adapter's
    name), also logged as a table.
    """
    name = spec if isinstance(spec, str) else "state dict"
    target = model.state_dict()
    state, scheme, notes = map_names(read_spec(spec), model)
    load, skipped, adapted = {}, [], list(notes)
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
        "names": scheme,
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
    rows = []
    for h, v in groups.items():
        if not h:  # names without a dot (Caffe2's fc1000_w) stand alone
            rows += v
        else:
            rows.append(f"{h}.{{{','.join(v)}}}" if len(v) > 1 else f"{h}.{v[0]}")
    return rows


def format_load_report(report: dict[str, Any], max_rows: int = 12) -> str:
    """A short plain-text table: one row per category with up to ``max_rows`` grouped keys."""
    names = _SCHEME_NAMES.get(report.get("names", "detlab"), f"{report.get('names')} names")
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
