"""ResNet backbones on torchvision's constructors, plus a width-scalable small ResNet.

``resnet18/34/50/101/152`` are built by ``torchvision.models.resnetXX(weights=None)`` (no
download), so their state-dict keys match torchvision checkpoints (``conv1``, ``bn1``,
``layer1``..``layer4``). ``stride_in_1x1`` moves the stride of downsampling bottlenecks from
the 3×3 conv (torchvision) to the first 1×1 conv (MSRA/Caffe2, the layout of Detectron2's
ImageNet weights); the parameters are the same either way. ``tiny_resnet`` stacks torchvision
``BasicBlock``s with widths ``64·WIDTH_MULT·(1, 2, 4, 8)`` and
``MODEL.RESNETS.BLOCKS_PER_STAGE`` blocks per stage: a light option for CPU training from
scratch. Stage k (1..4) is returned as ``res{k+1}`` with stride
``2**(k+1)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from detlab.modeling.backbone.build import BACKBONE_REGISTRY
from detlab.modeling.layers import get_norm
from detlab.structures import ShapeSpec
from detlab.utils.errors import UserError
from detlab.utils.registry import instantiate

__all__ = ["ResNet", "convert_frozen_batchnorm"]

_SPECS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` by a FrozenBatchNorm2d with its statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.running_mean is not None:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = convert_frozen_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


def _make_stage(block, inplanes: int, planes: int, blocks: int, stride: int, norm_layer) -> tuple:
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, 1, stride=stride, bias=False),
            norm_layer(planes * block.expansion),
        )
    layers = [block(inplanes, planes, stride, downsample, norm_layer=norm_layer)]
    inplanes = planes * block.expansion
    layers += [block(inplanes, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
    return nn.Sequential(*layers), inplanes


class ResNet(nn.Module):
    """A ResNet feature extractor returning ``res2``..``res5`` (strides 4, 8, 16, 32).

    Args:
        depth_name: ``"resnet18" | "resnet34" | "resnet50" | "resnet101" | "tiny_resnet"``.
        in_channels: input image channels (1 for SAR, 3 for RGB).
        norm: ``"BN" | "SyncBN" | "FrozenBN" | "GN"`` in the whole network.
        freeze_at: 0 trains everything; k >= 1 freezes the stem and stages 1..k-1 (their
            parameters get no gradient and their BatchNorms become frozen).
        width_mult: multiplies the stage widths (64, 128, 256, 512); 1.0 uses torchvision's
            constructor unchanged.
        blocks_per_stage: block counts for ``tiny_resnet`` (ignored by the named depths).
        stride_in_1x1: downsampling bottlenecks stride in their first 1×1 conv (MSRA layout)
            instead of the 3×3 conv (no effect on BasicBlock networks).
    """

    def __init__(
        self,
        depth_name: str = "resnet50",
        in_channels: int = 3,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        width_mult: float = 1.0,
        blocks_per_stage: Sequence[int] = (1, 1, 1, 1),
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        norm_layer = get_norm(norm)
        if norm_layer is None:
            raise UserError("MODEL.BACKBONE.NORM must be BN, SyncBN, FrozenBN or GN for a ResNet.")
        if not 0 <= freeze_at <= 5:
            raise UserError(f"MODEL.BACKBONE.FREEZE_AT is {freeze_at}; use 0..5.")
        if depth_name == "tiny_resnet":
            block, layers = BasicBlock, tuple(int(b) for b in blocks_per_stage)
            if len(layers) != 4 or min(layers) < 1:
                raise UserError(
                    f"MODEL.RESNETS.BLOCKS_PER_STAGE is {tuple(blocks_per_stage)}; give four "
                    "block counts >= 1."
                )
        else:
            block, layers = _SPECS[depth_name]
        widths = [max(1, round(w * width_mult)) for w in (64, 128, 256, 512)]

        if depth_name != "tiny_resnet" and width_mult == 1.0:
            net = getattr(torchvision.models, depth_name)(weights=None, norm_layer=norm_layer)
            self.conv1, self.bn1 = net.conv1, net.bn1
            self.layer1, self.layer2, self.layer3, self.layer4 = (
                net.layer1,
                net.layer2,
                net.layer3,
                net.layer4,
            )
        else:
            self.conv1 = nn.Conv2d(3, widths[0], 7, stride=2, padding=3, bias=False)
            self.bn1 = norm_layer(widths[0])
            inplanes = widths[0]
            for i, (w, n) in enumerate(zip(widths, layers, strict=True)):
                stage, inplanes = _make_stage(block, inplanes, w, n, 1 if i == 0 else 2, norm_layer)
                setattr(self, f"layer{i + 1}", stage)
            self._init_weights()
        if in_channels != 3:
            old = self.conv1
            self.conv1 = nn.Conv2d(
                in_channels, old.out_channels, 7, stride=2, padding=3, bias=False
            )
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.in_channels = in_channels
        self._out_channels = [w * block.expansion for w in widths]
        if stride_in_1x1:
            self._stride_in_1x1()
        self.freeze(freeze_at)

    def _stride_in_1x1(self) -> None:
        for k in range(1, 5):
            for block in getattr(self, f"layer{k}"):
                if isinstance(block, Bottleneck) and block.conv2.stride != (1, 1):
                    block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def freeze(self, freeze_at: int) -> None:
        """Freeze the stem (``freeze_at >= 1``) and stages 1..freeze_at-1."""
        parts = [("conv1", "bn1"), ("layer1",), ("layer2",), ("layer3",), ("layer4",)]
        for names in parts[:freeze_at]:
            for name in names:
                module = convert_frozen_batchnorm(getattr(self, name))
                setattr(self, name, module)
                for p in module.parameters():
                    p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {
            "depth_name": cfg.MODEL.BACKBONE.NAME,
            "in_channels": cfg.MODEL.BACKBONE.IN_CHANNELS,
            "norm": cfg.MODEL.BACKBONE.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "width_mult": float(cfg.MODEL.RESNETS.WIDTH_MULT),
            "blocks_per_stage": tuple(cfg.MODEL.RESNETS.BLOCKS_PER_STAGE),
            "stride_in_1x1": bool(cfg.MODEL.RESNETS.STRIDE_IN_1X1),
        }

    def output_shape(self) -> dict[str, ShapeSpec]:
        """``{"res2": ShapeSpec(C2, 4), ..., "res5": ShapeSpec(C5, 32)}``."""
        return {f"res{k + 2}": ShapeSpec(c, 2 ** (k + 2)) for k, c in enumerate(self._out_channels)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x``: B×C×H×W normalised image → stage outputs keyed ``res2``..``res5``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for k in range(4):
            x = getattr(self, f"layer{k + 1}")(x)
            out[f"res{k + 2}"] = x
        return out


def _register(name: str) -> None:
    def build(cfg: Any) -> ResNet:
        return instantiate(ResNet, cfg, depth_name=name)

    build.__name__ = name
    build.__qualname__ = name
    build.__doc__ = f"``{name}`` backbone from the config (see :class:`ResNet`)."
    BACKBONE_REGISTRY.register(build)


for _name in (*_SPECS, "tiny_resnet"):
    _register(_name)
