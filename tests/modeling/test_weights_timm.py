"""MODEL.WEIGHTS loading (detlab and torchvision formats) and the optional timm backbone."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torchvision

from detlab.modeling import build_model, load_model_weights
from detlab.utils.errors import UserError


def test_detlab_checkpoint_round_trip(resnet18_cfg, tmp_path):
    torch.manual_seed(0)
    src = build_model(resnet18_cfg())
    path = tmp_path / "model_final.pth"
    torch.save({"model": src.state_dict(), "iteration": 5}, path)
    torch.manual_seed(1)
    dst = build_model(resnet18_cfg())
    report = load_model_weights(dst, str(path))
    assert not report["missing"] and not report["unexpected"] and not report["skipped"]
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_torchvision_backbone_state_dict_into_single_channel(resnet18_cfg, tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    model = build_model(resnet18_cfg(1))
    report = load_model_weights(model, str(path))
    assert report["adapted"] == ["backbone.conv1.weight"]
    torch.testing.assert_close(model.backbone.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert sorted(report["unexpected"]) == ["backbone.fc.bias", "backbone.fc.weight"]
    assert report["missing"] and all(not k.startswith("backbone.") for k in report["missing"])


def test_torchvision_detection_state_dict(resnet18_cfg, tmp_path):
    tv = torchvision.models.detection.fcos_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=2
    )
    path = tmp_path / "tv_fcos.pth"
    torch.save(tv.state_dict(), path)
    cfg = resnet18_cfg(3)
    cfg.MODEL.BACKBONE.NAME = "resnet50"
    model = build_model(cfg)
    report = load_model_weights(model, str(path))
    torch.testing.assert_close(
        model.backbone.layer4[2].conv3.weight, tv.backbone.body.layer4[2].conv3.weight
    )
    assert not any(k.startswith("backbone.") for k in report["missing"])


def test_bad_weight_files_are_user_errors(resnet18_cfg, tmp_path):
    model = build_model(resnet18_cfg())
    with pytest.raises(UserError, match="does not exist"):
        load_model_weights(model, str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        load_model_weights(model, str(bad))
    torch.save({"model": "text"}, tmp_path / "odd.pth")
    with pytest.raises(UserError, match="no state dict"):
        load_model_weights(model, str(tmp_path / "odd.pth"))


@pytest.mark.skipif(
    importlib.util.find_spec("timm") is None,
    reason="timm is not installed (optional extra: pip install 'detlab[timm]')",
)
def test_timm_backbone_trains_in_fcos(tiny_cfg, make_batch):
    torch.manual_seed(0)
    cfg = tiny_cfg("FCOS", channels=1)
    cfg.MODEL.BACKBONE.NAME = "timm"
    cfg.MODEL.TIMM.MODEL_NAME = "resnet10t"
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    model = build_model(cfg).train()
    shapes = model.backbone.output_shape()
    assert [s.stride for s in shapes.values()] == [4, 8, 16, 32]
    losses = model(make_batch())
    sum(losses.values()).backward()
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert frozen and all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    cfg.MODEL.TIMM.MODEL_NAME = "resnet10tt"
    with pytest.raises(UserError, match="not a timm model"):
        build_model(cfg)
