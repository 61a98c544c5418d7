"""``timm`` backbone: any timm model created with ``features_only=True`` (``.[timm]`` extra).

timm is imported only when this backbone is built. Each feature map is named by its stride
(timm's "reduction"), as every detlab backbone names them: reduction 4 → ``res2``, 8 →
``res3``, 16 → ``res4``, 32 → ``res5`` (``res{log2(stride)}``), so a neck reading ``res3``
gets the stride-8 map whatever timm's stage numbering is.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from detlab.modeling.backbone.build import BACKBONE_REGISTRY
from detlab.modeling.backbone.resnet import convert_frozen_batchnorm
from detlab.modeling.contracts import level_name
from detlab.structures import ShapeSpec
from detlab.utils.errors import UserError
from detlab.utils.registry import instantiate

__all__ = ["TimmBackbone"]


class TimmBackbone(nn.Module):
    """Wrap ``timm.create_model(model_name, features_only=True, pretrained=False)``.

    Args:
        model_name: a timm model name, e.g. ``"resnet18"`` or ``"convnext_atto"``.
        in_channels: image channels (timm's ``in_chans``).
        norm: ``"FrozenBN"`` converts the model's BatchNorms to frozen ones; else unchanged.
        freeze_at: 0 trains all; k >= 1 freezes the first k feature stages' parameters
            (best effort: the modules before the k-th returned feature map).
    """

    def __init__(
        self, model_name: str, in_channels: int = 3, norm: str = "BN", freeze_at: int = 0
    ) -> None:
        super().__init__()
        try:
            timm = importlib.import_module("timm")
        except ImportError:
            raise UserError(
                "MODEL.BACKBONE.NAME is 'timm' but timm is not installed; run "
                "pip install 'detlab[timm]'."
            ) from None
        if model_name not in timm.list_models():
            hints = timm.list_models(f"*{model_name}*")[:5]
            raise UserError(
                f"MODEL.TIMM.MODEL_NAME '{model_name}' is not a timm model"
                + (f"; did you mean one of {', '.join(hints)}?" if hints else ".")
            )
        self.body = timm.create_model(
            model_name, pretrained=False, features_only=True, in_chans=in_channels
        )
        info = self.body.feature_info
        by_stride: dict[int, int] = {}  # stride -> index of the deepest map at that stride
        for idx, red in enumerate(info.reduction()):
            if red in (4, 8, 16, 32):
                by_stride[int(red)] = idx
        self._keep = {
            idx: (level_name("res", red), int(info.channels()[idx]), red)
            for red, idx in sorted(by_stride.items())
        }
        self.in_channels = int(in_channels)
        if len(self._keep) < 3 or not {8, 16, 32} <= set(by_stride):
            raise UserError(
                f"timm model '{model_name}' does not give feature maps at strides 8/16/32; "
                "choose a hierarchical (CNN-like) model."
            )
        if norm == "FrozenBN":
            convert_frozen_batchnorm(self.body)
        if freeze_at > 0:
            # Parameters are registered in forward order: freeze up to the end of the module
            # that produces the freeze_at-th feature map (the stem counts as the first).
            names = info.module_name()
            prefix = names[min(freeze_at, len(names)) - 1] + "."
            seen = False
            for pname, param in self.body.named_parameters():
                if pname.startswith(prefix):
                    seen = True
                elif seen:
                    break
                param.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {
            "model_name": cfg.MODEL.TIMM.MODEL_NAME,
            "in_channels": cfg.MODEL.BACKBONE.IN_CHANNELS,
            "norm": cfg.MODEL.BACKBONE.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
        }

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{"res2": ShapeSpec(C, 4), ..., "res5": ShapeSpec(C, 32)}`` (the strides timm has)."""
        return {name: ShapeSpec(c, s) for name, c, s in self._keep.values()}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: B×C×H×W → ``{"res{log2(stride)}": map}`` in ``output_shape()`` order."""
        feats = self.body(x)
        return {name: feats[i] for i, (name, _, _) in self._keep.items()}


def timm(cfg: Any) -> TimmBackbone:
    """``timm`` backbone named by ``MODEL.TIMM.MODEL_NAME`` (see :class:`TimmBackbone`)."""
    return instantiate(TimmBackbone, cfg)


BACKBONE_REGISTRY.register(timm)
