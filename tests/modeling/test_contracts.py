"""Registry contracts: a deliberately broken component of each family (ResNet/FPN/FCOS and
CSP/PAN/YOLO alike) fails when it is built, in one sentence naming the component and the
mismatch; correct ones pass unchanged."""

from __future__ import annotations

import contextlib
import importlib.util
import math

import pytest
import torch
from torch import nn

from detlab.modeling import (
    BACKBONE_REGISTRY,
    DENSE_HEAD_REGISTRY,
    META_ARCH_REGISTRY,
    NECK_REGISTRY,
    PROPOSAL_GENERATOR_REGISTRY,
    ROI_HEADS_REGISTRY,
    SIZE_WEIGHT_REGISTRY,
    SizeWeighting,
    build_model,
)
from detlab.modeling.backbone.csp import CSPDarknet
from detlab.modeling.backbone.resnet import ResNet
from detlab.modeling.heads import FCOSHead, YOLOHead
from detlab.modeling.neck.fpn import FPN, PAFPN
from detlab.modeling.neck.pan import PAN
from detlab.structures import Instances, ShapeSpec
from detlab.utils.errors import ContractError, UserError
from detlab.utils.registry import Registry, instantiate


@contextlib.contextmanager
def registered(registry: Registry, obj, name: str | None = None):
    name = name or obj.__name__
    registry._do_register(name, obj)
    try:
        yield name
    finally:
        registry._obj_map.pop(name)


def build_error(cfg, registry: Registry, obj, key: str) -> pytest.ExceptionInfo:
    """Register ``obj``, name it in the config ``key`` (e.g. ``"MODEL.BACKBONE.NAME"``) and
    return the ContractError that building the model raises."""
    *path, leaf = key.split(".")
    node = cfg
    for p in path:
        node = node[p]
    with registered(registry, obj) as name, pytest.raises(ContractError) as err:
        node[leaf] = name
        build_model(cfg)
    return err


def one_sentence(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("."), msg
    for p in parts:
        assert p in msg, (p, msg)


class _MisnamedBackbone(nn.Module):
    """The old timm bug: the stride-4 map is called res3."""

    in_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.net = ResNet("tiny_resnet", in_channels=1, norm="BN", width_mult=0.25)

    @classmethod
    def from_config(cls, cfg):
        return {}

    def output_shape(self):
        return {f"res{k + 1}": s for k, s in enumerate(self.net.output_shape().values(), 2)}

    def forward(self, x):
        return dict(zip(self.output_shape(), self.net(x).values(), strict=True))


class _LyingBackbone(_MisnamedBackbone):
    """Declares stride 16 for res4 but returns the stride-8 map there."""

    def output_shape(self):
        return self.net.output_shape()

    def forward(self, x):
        out = self.net(x)
        out["res4"] = nn.functional.interpolate(out["res4"], scale_factor=2.0)
        return out


def test_backbone_with_stride_names_off_by_one_fails_at_build(tiny_cfg):
    err = build_error(tiny_cfg("FCOS"), BACKBONE_REGISTRY, _MisnamedBackbone, "MODEL.BACKBONE.NAME")
    one_sentence(err, "BACKBONE '_MisnamedBackbone'", "stride-4 map 'res3'", "'res2'")


def test_backbone_whose_maps_do_not_match_its_declared_strides_fails(tiny_cfg):
    err = build_error(tiny_cfg("FCOS"), BACKBONE_REGISTRY, _LyingBackbone, "MODEL.BACKBONE.NAME")
    one_sentence(err, "BACKBONE '_LyingBackbone'", "'res4'", "stride=16")


class _StageNamedCSP(CSPDarknet):
    """Names its maps by stage index (stage k -> 'res{k}'), not by stride."""

    def output_shape(self):
        return {f"res{k}": s for k, s in enumerate(super().output_shape().values(), 1)}

    def forward(self, x):
        return dict(zip(self.output_shape(), super().forward(x).values(), strict=True))


def test_csp_backbone_named_by_stage_index_fails_at_build(tiny_cfg):
    err = build_error(tiny_cfg("YOLO"), BACKBONE_REGISTRY, _StageNamedCSP, "MODEL.BACKBONE.NAME")
    one_sentence(err, "BACKBONE '_StageNamedCSP'", "stride-4 map 'res1'", "'res2'")


def test_backbone_builder_returning_no_module_fails(tiny_cfg):
    def not_a_module(cfg):
        return {"res2": torch.zeros(1)}

    err = build_error(tiny_cfg("FCOS"), BACKBONE_REGISTRY, not_a_module, "MODEL.BACKBONE.NAME")
    one_sentence(err, "BACKBONE 'not_a_module'", "not an nn.Module")


def test_from_config_must_return_constructor_arguments(tiny_cfg):
    class _OldStyle(_MisnamedBackbone):
        @classmethod
        def from_config(cls, cfg):
            return cls()  # an instance, not keyword arguments

    err = build_error(tiny_cfg("FCOS"), BACKBONE_REGISTRY, _OldStyle, "MODEL.BACKBONE.NAME")
    one_sentence(err, "_OldStyle.from_config returned _OldStyle", "keyword arguments")


class _NeckMissingLevel(FPN):
    """Declares P3..P7 but forgets P7 in forward."""

    def forward(self, features):
        out = super().forward(features)
        out.pop("p7")
        return out


def test_neck_that_drops_a_declared_level_fails(tiny_cfg):
    err = build_error(tiny_cfg("FCOS"), NECK_REGISTRY, _NeckMissingLevel, "MODEL.NECK.NAME")
    one_sentence(err, "NECK '_NeckMissingLevel'", "'p7'")


class _PANOneWidth(PAN):
    """Declares the finest level's width on every level, but its levels keep the backbone
    stages' widths (the per-level widths are what sets PAN apart from the FPN)."""

    def output_shape(self):
        return {
            k: ShapeSpec(self.level_channels[0], v.stride)
            for k, v in super().output_shape().items()
        }


def test_pan_that_misdeclares_its_level_widths_fails(tiny_cfg):
    err = build_error(tiny_cfg("YOLO"), NECK_REGISTRY, _PANOneWidth, "MODEL.NECK.NAME")
    one_sentence(
        err, "NECK '_PANOneWidth'", "'p4' of shape (1, 64, 2, 2)", "channels=32, stride=16"
    )


@pytest.mark.parametrize("neck", [FPN, PAFPN, PAN])
def test_necks_refuse_strides_other_than_their_stages_mean(neck):
    shapes = {
        "res2": ShapeSpec(16, 2),  # a backbone that thinks res2 has stride 2
        "res3": ShapeSpec(32, 4),
        "res4": ShapeSpec(64, 8),
        "res5": ShapeSpec(128, 16),
    }
    with pytest.raises(UserError) as err:
        neck(
            [s.channels for s in list(shapes.values())[1:]],
            in_stages=(2, 3, 4),
            in_strides=[s.stride for s in list(shapes.values())[1:]],
        )
    name = neck.__name__
    one_sentence(err, f"{name} reads backbone stages (2, 3, 4)", "[8, 16, 32]", "[4, 8, 16]")
    ok = neck([32, 64, 128], in_stages=(2, 3, 4), in_strides=[8, 16, 32], top_block="P6P7")
    assert {k: v.stride for k, v in ok.output_shape().items()} == {
        "p3": 8,
        "p4": 16,
        "p5": 32,
        "p6": 64,
        "p7": 128,
    }


def test_pan_reads_exactly_the_backbone_declared_maps(tiny_cfg):
    """The YOLO neck is given the backbone's names, channels and strides (4-scale here) and
    builds nothing for maps it does not read."""
    cfg = tiny_cfg("YOLO")
    cfg.MODEL.FPN.IN_STAGES = (1, 2, 3, 4)
    model = build_model(cfg)
    back = model.backbone.output_shape()
    assert model.neck.in_features == ["res2", "res3", "res4", "res5"]
    assert {k: (v.channels, v.stride) for k, v in model.neck.output_shape().items()} == {
        f"p{k[3:]}": (v.channels, v.stride) for k, v in back.items()
    }
    cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
    neck = NECK_REGISTRY.build("PAN", cfg, back)
    assert list(neck.output_shape()) == ["p3", "p4", "p5"]


class _HeadReturningDictAtTest(nn.Module):
    @classmethod
    def from_config(cls, cfg, input_shape):
        return {"channels": next(iter(input_shape.values())).channels}

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, features, image_sizes, targets=None):
        return {"scores": [self.conv(f) for f in features]}


class _HeadWithoutSizes(_HeadReturningDictAtTest):
    def forward(self, features):  # the neck's dict only: wrong call shape
        return [self.conv(f) for f in features]


class _YOLOHeadRawAtTest(YOLOHead):
    """Returns the raw (class logits, box bins) at test time instead of detections."""

    def forward(self, features, image_sizes, targets=None):
        if targets is not None:
            return super().forward(features, image_sizes, targets)
        return self.predict(features)


@pytest.mark.parametrize(
    "meta, head, expected",
    [
        ("FCOS", _HeadReturningDictAtTest, "one Instances per image"),
        ("FCOS", _HeadWithoutSizes, "(features, image_sizes, targets=None)"),
        ("YOLO", _HeadWithoutSizes, "(features, image_sizes, targets=None)"),
        ("YOLO", _YOLOHeadRawAtTest, "one Instances per image"),
    ],
)
def test_dense_head_with_the_wrong_call_shape_fails(tiny_cfg, meta, head, expected):
    key = f"MODEL.{meta}.HEAD_NAME"
    err = build_error(tiny_cfg(meta), DENSE_HEAD_REGISTRY, head, key)
    one_sentence(err, f"DENSE_HEAD '{head.__name__}'", expected)


class _TwoArgumentAssigner:
    @classmethod
    def from_config(cls, cfg):
        return {}

    def __call__(self, scores, boxes):  # no anchors, strides or ground truth
        raise AssertionError("never called: refused when built")


def test_assigner_with_the_wrong_call_shape_fails(tiny_cfg):
    from detlab.modeling.heads.assigners import ASSIGNER_REGISTRY

    key = "MODEL.YOLO.ASSIGNER"
    err = build_error(tiny_cfg("YOLO"), ASSIGNER_REGISTRY, _TwoArgumentAssigner, key)
    one_sentence(err, "ASSIGNER '_TwoArgumentAssigner'", "assigner(scores, boxes, points")


@pytest.mark.parametrize("head", [FCOSHead, YOLOHead])
def test_dense_head_registered_as_proposal_generator_fails(tiny_cfg, head):
    """Dense heads answer with detections, not (proposals, losses): the split registries'
    point."""
    key = "MODEL.PROPOSAL_GENERATOR.NAME"
    err = build_error(tiny_cfg("FasterRCNN"), PROPOSAL_GENERATOR_REGISTRY, head, key)
    one_sentence(err, f"PROPOSAL_GENERATOR '{head.__name__}'", "(proposals, losses dict)")


def test_roi_heads_without_scores_fail(tiny_cfg):
    from detlab.modeling.heads import StandardROIHeads

    class _NoScores(StandardROIHeads):
        def forward(self, features, proposals, image_sizes, targets=None):
            out = super().forward(features, proposals, image_sizes, targets)
            if isinstance(out, list):
                return [Instances(r.image_size, boxes=r.boxes) for r in out]
            return out

    err = build_error(tiny_cfg("FasterRCNN"), ROI_HEADS_REGISTRY, _NoScores, "MODEL.ROI_HEADS.NAME")
    one_sentence(err, "ROI_HEADS '_NoScores'", "without ['scores']")


def test_meta_arch_that_is_not_a_module_fails(tiny_cfg):
    def plain_function(cfg):
        return lambda batch: {}

    err = build_error(
        tiny_cfg("FCOS"), META_ARCH_REGISTRY, plain_function, "MODEL.META_ARCHITECTURE"
    )
    one_sentence(err, "META_ARCH 'plain_function'", "not an nn.Module")


def test_size_weight_below_one_fails():
    def halves(area, *, max_weight, small_area, medium_area):
        return torch.full_like(area, 0.5)

    with registered(SIZE_WEIGHT_REGISTRY, halves) as name, pytest.raises(ContractError) as err:
        SizeWeighting(name)
    one_sentence(err, "SIZE_WEIGHT 'halves'", "weight >= 1")


def test_instantiate_merges_overrides_over_from_config(tiny_cfg):
    cfg = tiny_cfg("FCOS")
    net = instantiate(ResNet, cfg, depth_name="resnet18")  # overrides tiny_resnet
    assert [len(getattr(net, f"layer{k}")) for k in range(1, 5)] == [2, 2, 2, 2]
    assert net.layer1[0].conv1.out_channels == 16  # WIDTH_MULT 0.25 from the config
    assert net.in_channels == cfg.MODEL.BACKBONE.IN_CHANNELS


@pytest.mark.parametrize(
    "meta, parts", [("FCOS", (ResNet, FPN, FCOSHead)), ("YOLO", (CSPDarknet, PAN, YOLOHead))]
)
def test_building_checks_do_not_change_the_random_stream(tiny_cfg, meta, parts):
    """The build-time probes leave the global generator where model init left it, so a model
    built through the checked registries has the weights of one built without them."""
    cfg = tiny_cfg(meta)
    torch.manual_seed(0)
    model = build_model(cfg)
    after = torch.rand(3)
    torch.manual_seed(0)
    backbone_cls, neck_cls, head_cls = parts
    bb = instantiate(backbone_cls, cfg)
    neck = instantiate(neck_cls, cfg, bb.output_shape())
    head = instantiate(head_cls, cfg, neck.output_shape())
    torch.testing.assert_close(torch.rand(3), after)
    for k, v in head.state_dict().items():
        assert torch.equal(v, model.head.state_dict()[k]), k


@pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="timm is not installed")
@pytest.mark.parametrize(
    "meta, stages, top",
    [("FCOS", (1, 2, 3, 4), "P6P7"), ("FCOS", (2, 3, 4), "P6pool"), ("YOLO", (1, 2, 3, 4), "P6")],
)
def test_one_stage_on_timm_backbone_levels_match_their_strides(
    tiny_cfg, make_batch, meta, stages, top
):
    torch.manual_seed(0)
    cfg = tiny_cfg(meta, channels=1)
    cfg.MODEL.BACKBONE.NAME = "timm"
    cfg.MODEL.TIMM.MODEL_NAME = "resnet10t"
    cfg.MODEL.FPN.IN_STAGES = stages
    cfg.MODEL.FPN.TOP_BLOCK = top
    model = build_model(cfg)
    back = model.backbone.output_shape()
    assert {n: s.stride for n, s in back.items()} == {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
    seen = {}
    model.backbone.register_forward_hook(lambda m, i, o: seen.update(o))
    model.neck.register_forward_hook(lambda m, i, o: seen.update(o))
    model.eval()
    batch = make_batch(size=(96, 160))
    with torch.no_grad():
        model(batch)
    images, _ = model.preprocess(batch)
    hp, wp = images.shape[-2:]
    declared = {**back, **model.neck.output_shape()}
    assert set(model.neck.output_shape()) == {f"p{s + 1}" for s in stages} | (
        {"p6", "p7"} if top == "P6P7" else {"p6"}
    )  # P6 from PAN's top block too: a YOLO on a timm backbone reads its strides
    for name, spec in declared.items():
        k = int(name.lstrip("resp"))
        assert spec.stride == 2**k, name
        assert tuple(seen[name].shape[-2:]) == (math.ceil(hp / 2**k), math.ceil(wp / 2**k)), name
