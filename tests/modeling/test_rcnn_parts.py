"""Faster R-CNN parts: box coding, matching, sampling, anchors, size-aware ROI/RPN losses."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder as TVBoxCoder
from torchvision.ops import box_iou

from detlab.modeling import build_model
from detlab.modeling.box_coding import BoxCoder, Matcher, subsample_labels
from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.utils.errors import UserError


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 200
    return torch.cat([xy, xy + 4 + torch.rand(n, 2, generator=g) * 100], 1)


def test_box_coder_matches_torchvision_and_round_trips():
    src, dst = _boxes(50, 0), _boxes(50, 1)
    ours = BoxCoder((10.0, 10.0, 5.0, 5.0))
    ref = TVBoxCoder((10.0, 10.0, 5.0, 5.0))
    d = ours.encode(src, dst)
    torch.testing.assert_close(d, ref.encode_single(dst, src))
    torch.testing.assert_close(ours.decode(d, src), dst, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(ours.decode(d, src), ref.decode_single(d, src), rtol=1e-4, atol=1e-3)
    two = torch.cat([d, d * 0], 1)  # class-specific deltas N×8
    out = ours.decode(two, src)
    assert out.shape == (50, 8)
    torch.testing.assert_close(out[:, 4:], src)


def test_matcher_labels_and_low_quality_matches():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 200.0, 200.0]])
    anchors = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 14], [0, 0, 10, 40], [100, 100, 300, 300], [500, 500, 510, 510]]
    ).float()
    iou = box_iou(gt, anchors)
    idx, labels = Matcher((0.3, 0.7), (0, -1, 1), allow_low_quality_matches=True)(iou)
    # IoU: 1.0, 0.714, 0.25 | gt1-a3 = 0.25 (its best: kept as low-quality) | 0.
    assert labels.tolist() == [1, 1, 0, 1, 0]
    assert idx[:4].tolist() == [0, 0, 0, 1]
    _, strict = Matcher((0.3, 0.7), (0, -1, 1))(iou)
    assert strict.tolist() == [1, 1, 0, 0, 0]
    _, empty = Matcher((0.5,), (0, 1))(torch.zeros(0, 5))
    assert empty.tolist() == [0] * 5


def test_subsample_respects_budget_and_fraction():
    labels = torch.tensor([1] * 100 + [0] * 1000 + [-1] * 50)
    pos, neg = subsample_labels(labels, 256, 0.25, bg_label=0)
    assert pos.numel() == 64 and neg.numel() == 192
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 64
    pos, neg = subsample_labels(torch.tensor([1, 1, 0, 0, 0]), 256, 0.5, bg_label=0)
    assert pos.numel() == 2 and neg.numel() == 3


def test_anchor_generator_layout():
    gen = AnchorGenerator([[32.0], [64.0]], [[0.5, 1.0, 2.0]], strides=[8, 16])
    a0, a1 = gen([(4, 5), (2, 3)])
    assert a0.shape == (4 * 5 * 3, 4) and a1.shape == (2 * 3 * 3, 4)
    wh = a0[:, 2:] - a0[:, :2]
    torch.testing.assert_close(wh[:, 0] * wh[:, 1], torch.full((60,), 32.0**2))
    torch.testing.assert_close(wh[:3, 1] / wh[:3, 0], torch.tensor([0.5, 1.0, 2.0]))
    centres = (a0[:, :2] + a0[:, 2:]) / 2
    # Order is (y, x, anchor): the 4th cell (index 3) is x = 3·8, y = 0.
    torch.testing.assert_close(centres[9], torch.tensor([24.0, 0.0]))
    torch.testing.assert_close(centres[15], torch.tensor([0.0, 8.0]))
    with pytest.raises(UserError, match="ANCHOR_GENERATOR"):
        AnchorGenerator([[32.0], [64.0], [128.0]], [[1.0]], strides=[8, 16])


def _rcnn_losses(tiny_cfg, make_batch, enabled, scale, rpn=False):
    torch.manual_seed(0)
    cfg = tiny_cfg("FasterRCNN")
    cfg.MODEL.SIZE_AWARE_LOSS.ENABLED = enabled
    cfg.MODEL.RPN.SIZE_AWARE_LOSS = rpn
    model = build_model(cfg).train()
    torch.manual_seed(1)  # same proposal/anchor sampling in every call
    with torch.no_grad():
        return {k: v.item() for k, v in model(make_batch(scale=scale)).items()}


def test_size_weights_in_roi_and_rpn_losses(tiny_cfg, make_batch):
    plain = _rcnn_losses(tiny_cfg, make_batch, False, 0.5)
    roi = _rcnn_losses(tiny_cfg, make_batch, True, 0.5)
    both = _rcnn_losses(tiny_cfg, make_batch, True, 0.5, rpn=True)
    # ROI box head weighted, RPN only when MODEL.RPN.SIZE_AWARE_LOSS is set.
    assert roi["loss_box_reg"] > 1.15 * plain["loss_box_reg"]
    assert roi["loss_cls"] > plain["loss_cls"]
    assert roi["loss_rpn_loc"] == pytest.approx(plain["loss_rpn_loc"])
    assert both["loss_rpn_loc"] > 1.15 * plain["loss_rpn_loc"]
    # Large objects in the original image: all weights 1, nothing changes.
    big = _rcnn_losses(tiny_cfg, make_batch, True, 8.0, rpn=True)
    assert big == pytest.approx(plain)
    assert math.isfinite(sum(both.values()))
