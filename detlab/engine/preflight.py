"""Pre-flight check: one batch through mapper and model before iteration 0.

It fails in one sentence (:class:`PreflightError`) on wrong image shapes or channel counts,
malformed boxes, an empty or non-scalar loss dict, or a non-finite loss, instead of an hour
into training. Model buffers (e.g. BatchNorm statistics) are restored afterwards, so the check
does not change the run.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from detlab.utils.errors import UserError

__all__ = ["PreflightError", "parameters_without_grad", "preflight_check"]


class PreflightError(UserError):
    """The first batch or the model's first forward pass is unusable."""


def _check_inputs(batch: Any, channels: int | None) -> None:
    if not isinstance(batch, (list, tuple)) or not batch:
        raise PreflightError(
            f"Pre-flight check failed: the train loader yielded {type(batch).__name__}, not a "
            "non-empty list of mapper outputs; check DATALOADER.MAPPER."
        )
    for i, d in enumerate(batch):
        if not isinstance(d, dict) or "image" not in d:
            raise PreflightError(
                f"Pre-flight check failed: item {i} of the first batch has no 'image'; the "
                "mapper must return dicts with image, instances, height, width, image_id."
            )
        img = d["image"]
        if not torch.is_tensor(img) or img.ndim != 3 or not img.is_floating_point():
            shape = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
            raise PreflightError(
                f"Pre-flight check failed: image {d.get('image_id')} is {shape}, expected a "
                "float C×H×W tensor; check the mapper and INPUT.FORMAT."
            )
        if channels is not None and img.shape[0] != channels:
            raise PreflightError(
                f"Pre-flight check failed: image {d.get('image_id')} has {img.shape[0]} channels "
                f"but MODEL.PIXEL_MEAN has {channels} values; make MODEL.PIXEL_MEAN/PIXEL_STD "
                "and MODEL.BACKBONE.IN_CHANNELS match the data."
            )
        inst = d.get("instances")
        boxes = getattr(inst, "boxes", None) if inst is not None else None
        if boxes is not None and (boxes.ndim != 2 or boxes.shape[-1] != 4):
            raise PreflightError(
                f"Pre-flight check failed: boxes of image {d.get('image_id')} have shape "
                f"{tuple(boxes.shape)}, expected N×4 XYXY; check the mapper."
            )


@torch.no_grad()
def preflight_check(model: nn.Module, batch: list[dict], channels: int | None = None) -> dict:
    """Run ``model(batch)`` in training mode without gradients; return the float losses."""
    _check_inputs(batch, channels)
    with _trial_training_pass(model):
        try:
            losses = model(batch)
        except UserError:
            raise
        except Exception as err:  # noqa: BLE001 - report any forward failure as one sentence
            raise PreflightError(
                f"Pre-flight check failed: the model's forward pass on the first batch raised "
                f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}; run "
                "with --debug for the traceback."
            ) from err
    if not isinstance(losses, dict) or not losses:
        raise PreflightError(
            "Pre-flight check failed: the model returned no loss dict in training mode; a "
            "meta-architecture must return {'loss_*': scalar tensor} when training."
        )
    out = {}
    for k, v in losses.items():
        if not torch.is_tensor(v) or v.numel() != 1:
            raise PreflightError(
                f"Pre-flight check failed: loss '{k}' is not a scalar tensor; the model must "
                "return one scalar per loss term."
            )
        out[k] = float(v)
        if not math.isfinite(out[k]):
            raise PreflightError(
                f"Pre-flight check failed: loss '{k}' is {out[k]} on the first batch; check the "
                "input scaling (MODEL.PIXEL_MEAN/PIXEL_STD) and the annotations."
            )
    return out


def parameters_without_grad(model: nn.Module, batch: list[dict]) -> list[str]:
    """Names of trainable parameters that get no gradient from the loss on ``batch``.

    One forward/backward pass; gradients and buffers are restored afterwards.
    """
    with _trial_training_pass(model):
        losses = model(batch)
        total = sum(v.float().sum() for v in losses.values())
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(
            total, [p for _, p in params], allow_unused=True, retain_graph=False
        )
        return [n for (n, _), g in zip(params, grads, strict=True) if g is None]


@contextlib.contextmanager
def _trial_training_pass(model: nn.Module) -> Iterator[None]:
    """Training mode for one trial pass; buffers (BN statistics), recurrent stream states and
    the mode restored after."""
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    # recurrent stream states (event models) are restored too
    streams = [(m, m.stream_state()) for m in model.modules() if hasattr(m, "load_stream_state")]
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                if n in buffers:
                    b.copy_(buffers[n])
        for m, state in streams:
            m.load_stream_state(state)
        model.train(was_training)
