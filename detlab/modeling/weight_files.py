"""Read a local weights file into a flat ``{name: Tensor}`` state dict, safely.

* ``.pkl`` / ``.pickle`` (Detectron2 and Caffe2 model zoos): unpickled by
  :func:`~detlab.utils.safe_pickle.load_restricted_pickle` (numpy arrays and plain containers
  only). ``{"model": ..., "__author__": ...}`` is Detectron2's format, ``{"blobs": ...}``
  Detectron1's, a flat dict Caffe2's ImageNet format; ``*_momentum`` entries (optimizer state)
  are dropped and arrays become tensors.
* ``.safetensors``: ``safetensors.torch.load_file`` (no pickle at all).
* anything else: ``torch.load(weights_only=True)``; a checkpoint ``{"model": ...}`` or
  ``{"state_dict": ...}`` is unwrapped and a ``module.`` prefix (DDP) removed. A plain pickle
  of numpy arrays under another suffix falls back to the restricted unpickler.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import torch

from detlab.utils.errors import UserError
from detlab.utils.file_io import torch_load_error
from detlab.utils.safe_pickle import UnsafePickleError, load_restricted_pickle

__all__ = ["WeightsFile", "read_weights_file", "unwrap_state_dict"]


@dataclass
class WeightsFile:
    """A state dict read from disk, with where it came from.

    Attributes:
        state: ``{name: Tensor}`` in the file's own naming.
        origin: ``"pytorch"``, ``"safetensors"``, ``"detectron2"`` (model-zoo pickle) or
            ``"caffe2"`` (Caffe2/Detectron1 pickle).
        skipped: entries that are not numeric arrays (kept out of ``state``).
    """

    state: dict[str, torch.Tensor]
    origin: str
    skipped: list[str]


def _tensors(obj: dict, path: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    import numpy as np

    out, skipped = {}, []
    for k, v in obj.items():
        key = str(k)
        if key.endswith("_momentum"):
            continue
        if isinstance(v, torch.Tensor):
            out[key] = v
        elif isinstance(v, np.ndarray) and v.dtype.kind in "biuf":
            out[key] = torch.from_numpy(np.array(v, copy=True))
        else:
            skipped.append(key)
    if not out:
        raise UserError(f"MODEL.WEIGHTS file {path} holds no arrays of weights.")
    return out, skipped


def _from_pickle(path: str) -> WeightsFile:
    data = load_restricted_pickle(path, what=f"MODEL.WEIGHTS file {path}")
    if not isinstance(data, dict):
        raise UserError(
            f"MODEL.WEIGHTS file {path} holds a {type(data).__name__}, not a dict of weights."
        )
    origin = "caffe2"
    if isinstance(data.get("model"), dict):
        origin = "detectron2" if "__author__" in data else "pytorch"
        data = data["model"]
    elif isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    state, skipped = _tensors(data, path)
    return WeightsFile(state, origin, skipped)


def _from_torch(path: str) -> WeightsFile:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a user-file problem
        if not zipfile.is_zipfile(path):
            try:  # a numpy pickle under another suffix (e.g. a renamed model_final.pkl)
                return _from_pickle(path)
            except UnsafePickleError:
                raise
            except UserError:
                pass
        raise torch_load_error(path, "MODEL.WEIGHTS file", err) from None
    return WeightsFile(unwrap_state_dict(obj, f"file {path}"), "pytorch", [])


def unwrap_state_dict(obj: object, where: str) -> dict[str, torch.Tensor]:
    """The flat state dict in a loaded object: a checkpoint's ``"model"`` or ``"state_dict"``,
    or the object itself, with a DDP ``module.`` prefix removed; else one sentence naming
    ``where`` (e.g. ``"file /path"``)."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"MODEL.WEIGHTS {where} holds no state dict; expected a detlab checkpoint "
            "{'model': state_dict} or a torchvision, timm or Detectron2 state dict."
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _from_safetensors(path: str) -> WeightsFile:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise UserError(
            f"MODEL.WEIGHTS file {path} is a .safetensors file; install safetensors to read it."
        ) from None
    try:
        return WeightsFile(load_file(path, device="cpu"), "safetensors", [])
    except Exception as err:  # noqa: BLE001 - a damaged file is a user-file problem
        raise UserError(
            f"MODEL.WEIGHTS file {path} is not a readable .safetensors file ({err})."
        ) from None


def read_weights_file(path: str) -> WeightsFile:
    """Read ``path`` by its format (see the module docstring); errors are one sentence."""
    if not os.path.isfile(path):
        raise UserError(f"MODEL.WEIGHTS file {path} does not exist; check the path.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in (".pkl", ".pickle"):
        return _from_pickle(path)
    if suffix == ".safetensors":
        return _from_safetensors(path)
    return _from_torch(path)
