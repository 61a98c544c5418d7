"""Numeric references for the shared layers: FPN (with its P6/P7 and P6pool top blocks)
against torchvision's FeaturePyramidNetwork on identical weights, the anchor grid against
torchvision's AnchorGenerator, and R-CNN box coding against torchvision's BoxCoder."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection import _utils as tv_det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops.feature_pyramid_network import (
    FeaturePyramidNetwork,
    LastLevelMaxPool,
    LastLevelP6P7,
)

from detlab.modeling.box_coding import BoxCoder
from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.modeling.neck.fpn import FPN


def _randomize(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def _backbone_maps(channels, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        f"res{k}": torch.randn(2, c, h, w, generator=g)
        for k, c, (h, w) in zip((3, 4, 5), channels, sizes, strict=True)
    }


@pytest.mark.parametrize("top", ["P6P7", "P6pool"])
def test_fpn_matches_torchvision_fpn_on_identical_weights(top):
    channels, out = (8, 16, 24), 16
    ours = FPN(list(channels), in_stages=(2, 3, 4), out_channels=out, top_block=top)
    _randomize(ours, 1)
    extra = LastLevelP6P7(out, out) if top == "P6P7" else LastLevelMaxPool()
    ref = FeaturePyramidNetwork(list(channels), out, extra_blocks=extra)
    state = {}
    for i in range(3):
        for leaf in ("weight", "bias"):
            state[f"inner_blocks.{i}.0.{leaf}"] = getattr(ours.lateral[i], leaf)
            state[f"layer_blocks.{i}.0.{leaf}"] = getattr(ours.output[i], leaf)
    if top == "P6P7":
        for i, name in enumerate(("p6", "p7")):
            state[f"extra_blocks.{name}.weight"] = ours.top[i].weight
            state[f"extra_blocks.{name}.bias"] = ours.top[i].bias
    ref.load_state_dict(state)
    feats = _backbone_maps(channels, [(20, 26), (10, 13), (5, 7)])  # odd sizes on purpose
    got = ours(feats)
    want = ref(OrderedDict((k, v) for k, v in feats.items()))
    assert list(got) == ["p3", "p4", "p5", "p6"] + (["p7"] if top == "P6P7" else [])
    for (name, a), b in zip(got.items(), want.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_anchor_grid_matches_torchvision():
    """One size per level and ratios whose anchors have integer corners (torchvision rounds
    its cell anchors): both grids must agree exactly on non-square maps (torchvision derives
    each stride as image size // map size, so the image is a multiple of the largest stride)."""
    sizes, ratios, strides = ((32,), (64,), (128,)), (0.25, 1.0, 4.0), (8, 16, 32)
    shapes = [(12, 20), (6, 10), (3, 5)]
    ours = AnchorGenerator([list(s) for s in sizes], [list(ratios)], strides)(shapes)
    ref = TVAnchorGenerator(sizes, (ratios,) * 3)
    image = ImageList(torch.zeros(1, 3, 96, 160), [(96, 160)])
    feats = [torch.zeros(1, 1, h, w) for h, w in shapes]
    want = ref(image, feats)[0]
    assert [len(a) for a in ours] == [h * w * 3 for h, w in shapes]
    torch.testing.assert_close(torch.cat(ours), want, rtol=0, atol=0)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_box_coding_round_trip_and_torchvision_agreement(weights):
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(50, 2, generator=g) * 200
    src = torch.cat([xy, xy + 4 + torch.rand(50, 2, generator=g) * 100], 1)
    xy = src[:, :2] + torch.randn(50, 2, generator=g) * 10
    dst = torch.cat([xy, xy + 2 + torch.rand(50, 2, generator=g) * 150], 1)
    ours, ref = BoxCoder(weights), tv_det_utils.BoxCoder(weights)
    deltas = ours.encode(src, dst)
    torch.testing.assert_close(deltas, ref.encode_single(dst, src), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.decode(deltas, src), dst, rtol=1e-5, atol=1e-3)
    wild = torch.randn(50, 8, generator=g) * 8  # two boxes per reference, huge dw/dh clamped
    torch.testing.assert_close(
        ours.decode(wild, src), ref.decode_single(wild, src), rtol=1e-5, atol=1e-3
    )
