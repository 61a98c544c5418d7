"""FCOS head against torchvision's FCOS on identical weights and targets: the same raw outputs,
the same positive locations and matched boxes, and the same classification (focal) and
centerness (BCE) losses from torchvision's ``compute_loss``. The box loss follows the FCOS
paper (GIoU weighted by the centerness target, as AdelaiDet and Detectron2 do) where
torchvision averages GIoU unweighted, so it is checked against torchvision's GIoU and box
decoding on torchvision's own matches."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.models.detection.fcos import FCOS as TVFCOS
from torchvision.models.detection.fcos import FCOSHead as TVFCOSHead
from torchvision.ops import generalized_box_iou_loss

from detlab.modeling.heads.fcos_head import FCOSHead, fcos_locations
from detlab.structures import Instances

STRIDES = (8, 16, 32)
SIZE = (128, 160)
K = 3

# Fractional corners keep every regression distance off the level boundaries (64, 128), where
# torchvision's upper bound is strict and FCOS's is inclusive.
TARGETS = [
    (
        [
            [10.3, 12.7, 40.9, 50.2],  # small: P3
            [30.5, 20.25, 140.75, 110.5],  # medium, overlaps the small one: smallest wins
            [5.5, 3.25, 155.5, 125.75],  # large: P4/P5
        ],
        [0, 2, 1],
    ),
    ([[60.6, 70.1, 90.4, 98.9], [2.2, 40.7, 70.3, 120.6]], [1, 1]),
]


def _heads(num_convs: int = 2):
    torch.manual_seed(0)
    ours = FCOSHead(32, STRIDES, K, num_convs=num_convs, norm="GN")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if name.startswith("scales"):
                continue  # torchvision has no per-level scale: keep 1.0
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.dim() > 1 else 0.5))
            if p.dim() == 1 and "tower" in name and p.numel() == 32:
                p.add_(1.0)  # GroupNorm gains around 1
    ref = TVFCOSHead(32, 1, K, num_convs=num_convs)
    state = {}
    for i, layer in enumerate(ours.cls_tower):
        for leaf, t in layer.named_parameters():
            state[f"classification_head.conv.{i}.{leaf}"] = t
    for i, layer in enumerate(ours.box_tower):
        for leaf, t in layer.named_parameters():
            state[f"regression_head.conv.{i}.{leaf}"] = t
    for ref_name, mod in (
        ("classification_head.cls_logits", ours.cls_logits),
        ("regression_head.bbox_reg", ours.bbox_pred),
        ("regression_head.bbox_ctrness", ours.centerness),
    ):
        state[f"{ref_name}.weight"], state[f"{ref_name}.bias"] = mod.weight, mod.bias
    for k, v in ref.state_dict().items():  # torchvision's tower convs have a (zero) bias
        state.setdefault(k, torch.zeros_like(v))
    ref.load_state_dict(state)
    return ours, ref


def _inputs():
    g = torch.Generator().manual_seed(2)
    h, w = SIZE
    feats = [torch.randn(2, 32, h // s, w // s, generator=g) for s in STRIDES]
    ours, ref = [], []
    for boxes, classes in TARGETS:
        b = torch.tensor(boxes)
        c = torch.tensor(classes)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        ours.append(Instances(SIZE, boxes=b, classes=c, areas=area))
        ref.append({"boxes": b, "labels": c})
    return feats, ours, ref


def _reference(ref_head, feats, targets):
    """torchvision's FCOS.compute_loss with anchors written out here (a box of the level's
    stride centred on each cell centre, ``(i + 0.5) · stride``); returns its losses and its
    matches."""
    shapes = [tuple(f.shape[-2:]) for f in feats]
    rows = []
    for (h, w), s in zip(shapes, STRIDES, strict=True):
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        cx, cy = xx.reshape(-1) * s, yy.reshape(-1) * s
        rows.append(torch.stack([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], 1))
    anchors = torch.cat(rows)
    outputs = ref_head(feats)
    seen = {}
    compute = ref_head.compute_loss

    def capture(targets, head_outputs, anchors, matched_idxs):
        seen["matched"] = matched_idxs
        return compute(targets, head_outputs, anchors, matched_idxs)

    fake_fcos = SimpleNamespace(center_sampling_radius=1.5, head=SimpleNamespace())
    fake_fcos.head.compute_loss = capture
    losses = TVFCOS.compute_loss(
        fake_fcos, targets, outputs, [anchors] * len(targets), [h * w for h, w in shapes]
    )
    return losses, seen["matched"], outputs, anchors


@pytest.mark.parametrize("num_convs", [0, 2])
def test_fcos_matches_torchvision_on_identical_weights_and_targets(num_convs):
    ours, ref = _heads(num_convs)
    feats, targets, ref_targets = _inputs()
    logits, deltas, ctrness = ours.predict(feats)
    ref_losses, matched, ref_out, anchors = _reference(ref, feats, ref_targets)

    # identical raw outputs (torchvision regresses distances in units of the stride)
    flat = [
        torch.cat([x.permute(0, 2, 3, 1).reshape(2, -1, x.shape[1]) for x in xs], 1)
        for xs in (logits, deltas, ctrness)
    ]
    per_loc_stride = (anchors[:, 2] - anchors[:, 0])[None, :, None]
    torch.testing.assert_close(flat[0], ref_out["cls_logits"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        flat[1] / per_loc_stride, ref_out["bbox_regression"], rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(flat[2], ref_out["bbox_ctrness"], rtol=1e-4, atol=1e-5)

    # identical assignment: positives, their classes and their boxes
    locations = fcos_locations([tuple(f.shape[-2:]) for f in feats], STRIDES, feats[0].device)
    labels, boxes, _ = ours.assign(locations, targets)  # our grid against the written-out one
    for i, (m, t) in enumerate(zip(matched, ref_targets, strict=True)):
        pos = m >= 0
        assert torch.equal(labels[i] < K, pos)
        assert int(pos.sum()) > 10
        assert torch.equal(labels[i][pos], t["labels"][m[pos]])
        assert torch.equal(boxes[i][pos], t["boxes"][m[pos]])
    assert {int(m.max()) for m in matched} == {2, 1}  # every box of image 0 got locations

    losses = ours(feats, [SIZE, SIZE], targets)
    torch.testing.assert_close(
        losses["loss_fcos_cls"], ref_losses["classification"], rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        losses["loss_fcos_ctr"], ref_losses["bbox_ctrness"], rtol=1e-5, atol=1e-6
    )

    # box loss: torchvision's GIoU on torchvision's decoded boxes, weighted by the centerness
    fg = torch.stack(matched) >= 0
    gt = torch.stack([t["boxes"][m.clip(min=0)] for m, t in zip(matched, ref_targets, strict=True)])
    pred = ref.box_coder.decode(ref_out["bbox_regression"], torch.stack([anchors] * 2))
    enc = ref.box_coder.encode(torch.stack([anchors] * 2), gt)
    lr, tb = enc[..., [0, 2]], enc[..., [1, 3]]
    ctr = torch.sqrt(
        lr.min(-1).values / lr.max(-1).values * (tb.min(-1).values / tb.max(-1).values)
    )
    giou = generalized_box_iou_loss(pred[fg], gt[fg], reduction="none")
    want = (giou * ctr[fg]).sum() / ctr[fg].sum()
    torch.testing.assert_close(losses["loss_fcos_loc"], want, rtol=1e-5, atol=1e-6)
