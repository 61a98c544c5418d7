"""RPN and ROI heads against torchvision's Faster R-CNN parts on identical weights.

Sampling is made deterministic on both sides (a sample larger than every candidate set with
positive fraction 1, so every labelled anchor / RoI is used) and both use smooth-L1 with
beta 1/9 as torchvision does; then the proposals (train and test top-k), the RPN losses, the
ROI-head losses and the ROI-head detections must agree."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from detlab.modeling.heads.anchors import AnchorGenerator
from detlab.modeling.heads.roi_heads import StandardROIHeads
from detlab.modeling.heads.rpn import RPN
from detlab.structures import Instances

C, K = 16, 3
SIZE = (128, 160)
SIZES, RATIOS = ((32,), (64,), (128,)), (0.25, 1.0, 4.0)
RPN_STRIDES = (8, 16, 32)
ALL = 100_000  # larger than any candidate set: nothing is subsampled
TOPK = {"pre": (120, 60), "post": (50, 20)}  # (train, test): different on purpose
BOXES = [
    ([[10.0, 12.0, 60.0, 40.0], [70.0, 20.0, 150.0, 120.0], [20.0, 60.0, 52.0, 124.0]], [0, 2, 1]),
    ([[40.0, 30.0, 104.0, 94.0]], [1]),
]


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def _targets():
    ours, ref = [], []
    for boxes, classes in BOXES:
        b, c = torch.tensor(boxes), torch.tensor(classes)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        ours.append(Instances(SIZE, boxes=b, classes=c, areas=area))
        ref.append({"boxes": b, "labels": c + 1})  # torchvision: 0 is background
    return ours, ref


def _features(strides, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = SIZE
    return OrderedDict(
        (f"p{s.bit_length() - 1}", torch.randn(2, C, h // s, w // s, generator=g)) for s in strides
    )


def _rpns():
    ours = RPN(
        C,
        AnchorGenerator([list(s) for s in SIZES], [list(RATIOS)], RPN_STRIDES),
        iou_thresholds=(0.3, 0.7),
        batch_size_per_image=ALL,
        positive_fraction=1.0,
        smooth_l1_beta=1.0 / 9,
        pre_nms_topk=TOPK["pre"],
        post_nms_topk=TOPK["post"],
        nms_thresh=0.7,
    )
    _randomize(ours, 5)
    head = RPNHead(C, len(RATIOS))
    head.load_state_dict(
        {
            "conv.0.0.weight": ours.conv.weight,
            "conv.0.0.bias": ours.conv.bias,
            "cls_logits.weight": ours.objectness_logits.weight,
            "cls_logits.bias": ours.objectness_logits.bias,
            "bbox_pred.weight": ours.anchor_deltas.weight,
            "bbox_pred.bias": ours.anchor_deltas.bias,
        }
    )
    ref = RegionProposalNetwork(
        TVAnchorGenerator(SIZES, (RATIOS,) * len(SIZES)),
        head,
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=ALL,
        positive_fraction=1.0,
        pre_nms_top_n={"training": TOPK["pre"][0], "testing": TOPK["pre"][1]},
        post_nms_top_n={"training": TOPK["post"][0], "testing": TOPK["post"][1]},
        nms_thresh=0.7,
    )
    return ours, ref


@pytest.mark.parametrize("training", [True, False])
def test_rpn_proposals_and_losses_match_torchvision(training):
    ours, ref = _rpns()
    ours.train(training)
    ref.train(training)
    feats = _features(RPN_STRIDES)
    targets, ref_targets = _targets()
    images = ImageList(torch.zeros(2, 1, *SIZE), [SIZE, SIZE])
    with torch.no_grad():
        props, losses = ours(list(feats.values()), [SIZE, SIZE], targets if training else None)
        ref_boxes, ref_losses = ref(images, feats, ref_targets if training else None)
    want = TOPK["post"][0 if training else 1]
    for p, r in zip(props, ref_boxes, strict=True):
        assert len(p) == len(r) == want  # the top-k of the mode the module is in
        torch.testing.assert_close(p.proposal_boxes, r, rtol=1e-5, atol=1e-3)
    if training:
        torch.testing.assert_close(losses["loss_rpn_cls"], ref_losses["loss_objectness"])
        torch.testing.assert_close(losses["loss_rpn_loc"], ref_losses["loss_rpn_box_reg"])
        assert losses["loss_rpn_loc"].item() > 0  # positive anchors were there
    else:
        assert losses == {}


def _roi_heads():
    names = ["p2", "p3", "p4", "p5"]
    ours = StandardROIHeads(
        names,
        C,
        K,
        in_strides=(4, 8, 16, 32),
        pooler_resolution=7,
        pooler_sampling_ratio=2,
        num_fc=2,
        fc_dim=32,
        iou_thresholds=(0.5,),
        batch_size_per_image=ALL,
        positive_fraction=1.0,
        smooth_l1_beta=1.0 / 9,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_image=100,
    )
    _randomize(ours, 7, scale=0.05)
    box_head = TwoMLPHead(C * 49, 32)
    predictor = FastRCNNPredictor(32, K + 1)
    fc6, fc7 = ours.box_head.layers[1], ours.box_head.layers[3]
    box_head.load_state_dict(
        {
            "fc6.weight": fc6.weight,
            "fc6.bias": fc6.bias,
            "fc7.weight": fc7.weight,
            "fc7.bias": fc7.bias,
        }
    )
    order = [K, *range(K)]  # torchvision's class 0 is background, ours is the last
    bg_deltas = torch.zeros(4, 32)
    predictor.load_state_dict(
        {
            "cls_score.weight": ours.cls_score.weight[order],
            "cls_score.bias": ours.cls_score.bias[order],
            "bbox_pred.weight": torch.cat([bg_deltas, ours.bbox_pred.weight]),
            "bbox_pred.bias": torch.cat([torch.zeros(4), ours.bbox_pred.bias]),
        }
    )
    ref = RoIHeads(
        MultiScaleRoIAlign(names, 7, 2),
        box_head,
        predictor,
        fg_iou_thresh=0.5,
        bg_iou_thresh=0.5,
        batch_size_per_image=ALL,
        positive_fraction=1.0,
        bbox_reg_weights=None,
        score_thresh=0.05,
        nms_thresh=0.5,
        detections_per_img=100,
    )
    return ours, ref


def _proposals(seed=0, n=60):
    g = torch.Generator().manual_seed(seed)
    h, w = SIZE
    out = []
    for boxes, _ in BOXES:
        gt = torch.tensor(boxes)
        near = (
            gt[torch.randint(len(gt), (n // 2,), generator=g)]
            + torch.randn(n // 2, 4, generator=g) * 8
        )
        xy = torch.rand(n - n // 2, 2, generator=g) * torch.tensor([w - 40.0, h - 40.0])
        far = torch.cat([xy, xy + 8 + torch.rand(n - n // 2, 2, generator=g) * 30], 1)
        p = torch.cat([near, far])
        p[:, 0::2] = p[:, 0::2].clamp(0, w)
        p[:, 1::2] = p[:, 1::2].clamp(0, h)
        p[:, 2:] = torch.maximum(p[:, 2:], p[:, :2] + 2)
        out.append(p)
    return out


def test_roi_head_losses_and_detections_match_torchvision():
    ours, ref = _roi_heads()
    feats = _features((4, 8, 16, 32), seed=3)
    targets, ref_targets = _targets()
    props = _proposals()
    ours_props = [
        Instances(SIZE, proposal_boxes=p, objectness_logits=torch.zeros(len(p))) for p in props
    ]
    sizes = [SIZE, SIZE]
    ours.train()
    ref.train()
    losses = ours(feats, ours_props, sizes, targets)
    _, ref_losses = ref(feats, [p.clone() for p in props], sizes, ref_targets)
    torch.testing.assert_close(
        losses["loss_cls"], ref_losses["loss_classifier"], rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        losses["loss_box_reg"], ref_losses["loss_box_reg"], rtol=1e-5, atol=1e-6
    )
    assert losses["loss_box_reg"].item() > 0  # foreground RoIs were there

    ours.eval()
    ref.eval()
    with torch.no_grad():
        dets = ours(feats, ours_props, sizes)
        ref_dets, _ = ref(feats, props, sizes)
    for d, r in zip(dets, ref_dets, strict=True):
        assert len(d) == len(r["boxes"]) > 0
        torch.testing.assert_close(d.scores, r["scores"], rtol=1e-5, atol=1e-6)
        assert torch.equal(d.classes + 1, r["labels"])
        torch.testing.assert_close(d.boxes, r["boxes"], rtol=1e-5, atol=1e-3)
