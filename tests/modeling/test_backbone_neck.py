"""Backbones and necks: stage shapes, 3-/4-scale pyramids, freezing, registry errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops import FrozenBatchNorm2d

from detlab.modeling import BACKBONE_REGISTRY, build_backbone, build_model, build_neck
from detlab.modeling.backbone.resnet import ResNet
from detlab.modeling.neck.fpn import FPN, PAFPN
from detlab.utils.errors import UnknownNameError, UserError


def _feats(channels=(8, 16, 32, 64), size=64):
    return {
        f"res{k + 2}": torch.randn(1, c, size // 2 ** (k + 2), size // 2 ** (k + 2))
        for k, c in enumerate(channels)
    }


@pytest.mark.parametrize("cls", [FPN, PAFPN])
@pytest.mark.parametrize(
    "stages, top, expected",
    [
        ((2, 3, 4), "none", {"p3": 8, "p4": 16, "p5": 32}),
        ((2, 3, 4), "P6", {"p3": 8, "p4": 16, "p5": 32, "p6": 64}),
        ((2, 3, 4), "P6P7", {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}),
        ((1, 2, 3, 4), "none", {"p2": 4, "p3": 8, "p4": 16, "p5": 32}),
        ((1, 2, 3, 4), "P6pool", {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}),
        ((1, 2, 3, 4), "P6P7", {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}),
    ],
)
def test_pyramid_levels_and_strides(cls, stages, top, expected):
    chans = (8, 16, 32, 64)
    neck = cls([chans[s - 1] for s in stages], in_stages=stages, out_channels=12, top_block=top)
    shapes = neck.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == expected
    size = 256
    out = neck(_feats(chans, size))
    assert list(out) == list(expected)
    for name, x in out.items():
        assert x.shape == (1, 12, size // expected[name], size // expected[name])


def test_fpn_rejects_bad_stages():
    with pytest.raises(UserError, match="IN_STAGES"):
        FPN([8, 16], in_stages=(3, 2))
    with pytest.raises(UserError, match="TOP_BLOCK"):
        FPN([8, 16, 32], top_block="P8")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "tiny_resnet"])
def test_resnet_stage_shapes_match_output_shape(name, tiny_cfg):
    cfg = tiny_cfg()
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.RESNETS.WIDTH_MULT = 1.0 if name != "tiny_resnet" else 0.5
    net = build_backbone(cfg)
    out = net(torch.randn(2, 1, 64, 96))
    for key, spec in net.output_shape().items():
        assert out[key].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride)
    assert [s.stride for s in net.output_shape().values()] == [4, 8, 16, 32]


def test_named_resnet_is_torchvision_layout():
    ours = ResNet("resnet18", in_channels=3, norm="BN").state_dict()
    theirs = torchvision.models.resnet18(weights=None).state_dict()
    assert set(ours) == set(theirs) - {"fc.weight", "fc.bias"}
    assert all(ours[k].shape == theirs[k].shape for k in ours)


def test_width_mult_and_three_channels():
    net = ResNet("tiny_resnet", in_channels=3, norm="GN", width_mult=0.25)
    assert [s.channels for s in net.output_shape().values()] == [16, 32, 64, 128]
    assert net(torch.randn(1, 3, 32, 32))["res5"].shape == (1, 128, 1, 1)
    wide = ResNet("resnet50", in_channels=1, norm="BN", width_mult=0.5)
    assert wide.output_shape()["res5"].channels == 1024


def test_freeze_at_and_frozen_bn():
    net = ResNet("tiny_resnet", norm="BN", freeze_at=2, width_mult=0.25)
    frozen = ("conv1", "bn1", "layer1")
    for name, p in net.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen)), name
    assert isinstance(net.bn1, FrozenBatchNorm2d)
    assert isinstance(net.layer2[0].bn1, torch.nn.BatchNorm2d)
    fbn = ResNet("resnet18", norm="FrozenBN")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fbn.modules())


def test_unknown_names_suggest(tiny_cfg):
    cfg = tiny_cfg()
    cfg.MODEL.BACKBONE.NAME = "resnet05"
    with pytest.raises(UnknownNameError, match="did you mean 'resnet50'"):
        build_backbone(cfg)
    cfg = tiny_cfg()
    cfg.MODEL.NECK.NAME = "PAFNP"
    with pytest.raises(UnknownNameError, match="did you mean 'PAFPN'"):
        build_neck(cfg, build_backbone(cfg).output_shape())
    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "FCSO"
    with pytest.raises(UnknownNameError, match="did you mean 'FCOS'"):
        build_model(cfg)
    assert {"resnet18", "resnet34", "resnet50", "resnet101", "tiny_resnet", "timm"} <= set(
        BACKBONE_REGISTRY.names()
    )


def test_pixel_mean_length_must_match_channels(tiny_cfg):
    cfg = tiny_cfg(channels=1)
    cfg.MODEL.PIXEL_MEAN = (1.0, 2.0, 3.0)
    cfg.MODEL.PIXEL_STD = (1.0, 2.0, 3.0)
    with pytest.raises(UserError, match="PIXEL_MEAN"):
        build_model(cfg)


def test_sync_bn_is_sync_batchnorm_with_bn_keys_and_refused_off_cuda(tiny_cfg, make_batch):
    from torch import nn

    from detlab.modeling.layers import check_sync_batchnorm

    keys = {}
    for norm in ("BN", "SyncBN"):
        cfg = tiny_cfg("FCOS")
        cfg.MODEL.BACKBONE.NORM = norm
        cfg.MODEL.FCOS.NORM = norm
        torch.manual_seed(0)
        model = build_model(cfg).train()
        keys[norm] = list(model.state_dict())
    assert keys["SyncBN"] == keys["BN"]  # checkpoints move between the two
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) > 5
    losses = model(make_batch())  # one process: plain batch statistics
    assert all(torch.isfinite(v) for v in losses.values())
    with pytest.raises(UserError, match="SyncBN, which synchronises batch statistics over GPUs"):
        check_sync_batchnorm(model, torch.device("cpu"))
    check_sync_batchnorm(model, torch.device("cuda"))  # allowed where it can work
