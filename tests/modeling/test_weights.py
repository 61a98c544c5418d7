"""The one MODEL.WEIGHTS loader: no-match is an error, partial matches warn with what was
skipped, URI schemes resolve through WEIGHT_SOURCE_REGISTRY, and the inference path used by
visualize/export gets the same key mapping and 3→1 channel fold as training."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision

from detlab.modeling import (
    WEIGHT_SOURCE_REGISTRY,
    build_inference_model,
    build_model,
    load_model_weights,
)
from detlab.modeling.weights import register_weight_source
from detlab.utils.errors import UserError


def test_a_file_that_matches_nothing_is_an_error(resnet18_cfg, tmp_path):
    model = build_model(resnet18_cfg())
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as err:
        load_model_weights(model, str(path))
    msg = str(err.value)
    assert "matches nothing" in msg and "0 of 2 tensors" in msg and "\n" not in msg
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_partial_match_warns_with_what_was_skipped(resnet18_cfg, tmp_path, caplog):
    src_cfg = resnet18_cfg()
    src_cfg.MODEL.FCOS.NUM_CLASSES = 5  # another class count: the class logits do not fit
    src = build_model(src_cfg)
    path = tmp_path / "five_classes.pth"
    torch.save({"model": src.state_dict()}, path)
    model = build_model(resnet18_cfg())
    with caplog.at_level(logging.INFO, logger="detlab"):
        report = load_model_weights(model, str(path))
    assert [s.split()[0] for s in report["skipped"]] == [
        "head.cls_logits.weight",
        "head.cls_logits.bias",
    ]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warned and "head.cls_logits.weight (5, 32, 3, 3) -> (2, 32, 3, 3)" in warned[0].message
    torch.testing.assert_close(model.head.bbox_pred.weight, src.head.bbox_pred.weight)


def test_full_match_is_logged_at_info_only(resnet18_cfg, tmp_path, caplog):
    src = build_model(resnet18_cfg())
    path = tmp_path / "same.pth"
    torch.save({"model": src.state_dict()}, path)
    with caplog.at_level(logging.INFO, logger="detlab"):
        load_model_weights(build_model(resnet18_cfg()), f"file://{path}")
    assert [r.levelno for r in caplog.records if "Loaded weights" in r.message] == [logging.INFO]


def test_uri_schemes_resolve_through_the_source_registry(resnet18_cfg):
    model = build_model(resnet18_cfg())
    with pytest.raises(UserError, match="scheme nosuch://, which detlab cannot read"):
        load_model_weights(model, "nosuch://anything")
    tv = torchvision.models.resnet18(weights=None)
    asked = []

    @register_weight_source("testzoo")
    def _zoo(spec: str):
        asked.append(spec)
        return tv.state_dict()

    try:
        report = load_model_weights(model, "testzoo://resnet18")
    finally:
        WEIGHT_SOURCE_REGISTRY._obj_map.pop("testzoo")
    assert asked == ["testzoo://resnet18"]
    assert report["adapted"] == ["backbone.conv1.weight"]  # same key mapping as a file


def test_inference_model_gets_the_torchvision_mapping_and_channel_fold(resnet18_cfg, tmp_path):
    """visualize.py / export_onnx.py build their model here; they used to load strictly by
    name and so silently ignored a torchvision backbone file."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    cfg = resnet18_cfg(1)
    cfg.MODEL.WEIGHTS = str(path)
    model = build_inference_model(cfg)
    assert not model.training
    torch.testing.assert_close(model.backbone.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    cfg.MODEL.WEIGHTS = ""
    with pytest.raises(UserError, match="MODEL.WEIGHTS"):
        build_inference_model(cfg)
