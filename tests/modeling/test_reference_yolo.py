"""YOLO head against readable per-anchor loops on identical weights and inputs.

No library computes the YOLOv8 loss on its own, so the vectorised head is checked against
loops written from the definitions: anchor points at cell centres ``(x + 0.5)·s``, box sides
as the expectation of a softmax over the DFL bins, the CIoU/DIoU/GIoU losses of their papers,
DFL as the two-bin cross-entropy of GFL, BCE over every (anchor, class) pair, each positive's
box and DFL terms weighted by its summed soft target, everything divided by the summed soft
targets (or by the weighted sum under ``weight_sum`` size normalisation). The assignment is
taken from the head's assigner (itself checked against loops in ``test_yolo_assigners.py``).
Inference is checked the same way: every (anchor, class) pair decoded in a loop, then
torchvision's NMS.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import batched_nms

from detlab.modeling.heads.yolo_head import YOLOHead
from detlab.modeling.losses import SizeWeighting, iou_loss
from detlab.structures import Instances

SIZE = (48, 64)  # h, w of the network input
CHANNELS, STRIDES, K, R = (8, 16), (8, 16), 3, 6
WEIGHTS = (2.0, 3.0, 5.0)  # box, cls, dfl: distinct, so a swapped term shows

# Fractional corners: no anchor centre lies on a box edge.
TARGETS = [
    ([[3.3, 5.7, 29.9, 30.2], [20.5, 10.25, 60.75, 44.5], [40.1, 2.2, 58.3, 17.9]], [0, 2, 1]),
    ([[10.6, 12.1, 50.4, 40.9]], [1]),
]
AREAS = [[300.0, 5000.0, 250.0], [2000.0]]  # original-image px²


def _head(**kw) -> YOLOHead:
    torch.manual_seed(0)
    head = YOLOHead(list(CHANNELS), list(STRIDES), K, reg_max=R, loss_weights=WEIGHTS, **kw)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.rand(m.weight.shape, generator=g) * 0.2)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
            elif isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 1.5 / fan_in**0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return head.eval()  # BatchNorm from running statistics: the loops see the same features


def _features(batch: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    h, w = SIZE
    return [
        torch.randn(batch, c, h // s, w // s, generator=g)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]


def _targets() -> list[Instances]:
    return [
        Instances(
            SIZE,
            boxes=torch.tensor(b),
            classes=torch.tensor(c),
            areas=torch.tensor(a),
        )
        for (b, c), a in zip(TARGETS, AREAS, strict=True)
    ]


def _anchors(head: YOLOHead, feats: list[torch.Tensor], image: int) -> list[dict]:
    """Every anchor of one image, level by level, row by row: its centre, stride, class logits
    and decoded box, from the branches' raw outputs."""
    out = []
    with torch.no_grad():
        for level, (x, s) in enumerate(zip(feats, STRIDES, strict=True)):
            cls = head.cls_branch[level](x)[image].double()
            box = head.box_branch[level](x)[image].double()
            for y in range(x.shape[2]):
                for xi in range(x.shape[3]):
                    px, py = (xi + 0.5) * s, (y + 0.5) * s
                    bins = box[:, y, xi].reshape(4, R)  # side-major: l, t, r, b
                    logp = [[v - math.log(sum(math.exp(u) for u in row)) for v in row]
                            for row in bins.tolist()]  # fmt: skip
                    dist = [sum(math.exp(lp) * j for j, lp in enumerate(row)) for row in logp]
                    pred = [px - dist[0] * s, py - dist[1] * s, px + dist[2] * s, py + dist[3] * s]
                    out.append(
                        {
                            "point": (px, py),
                            "stride": s,
                            "logits": cls[:, y, xi].tolist(),
                            "logp": logp,
                            "box": pred,
                        }  # fmt: skip
                    )
    return out


def _iou_terms(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union
    cw, ch = max(a[2], b[2]) - min(a[0], b[0]), max(a[3], b[3]) - min(a[1], b[1])
    rho2 = ((a[0] + a[2] - b[0] - b[2]) ** 2 + (a[1] + a[3] - b[1] - b[3]) ** 2) / 4
    return iou, union, cw, ch, rho2


def _box_loss(kind: str, pred, gt) -> float:
    """1 − IoU-family of the papers: GIoU (Rezatofighi 2019), DIoU and CIoU (Zheng 2020)."""
    iou, union, cw, ch, rho2 = _iou_terms(pred, gt)
    if kind == "giou":
        return 1 - iou + (cw * ch - union) / (cw * ch)
    diou = 1 - iou + rho2 / (cw**2 + ch**2)
    if kind == "diou":
        return diou
    v = (
        4
        / math.pi**2
        * (
            math.atan((gt[2] - gt[0]) / (gt[3] - gt[1]))
            - math.atan((pred[2] - pred[0]) / (pred[3] - pred[1]))
        )
        ** 2
    )
    return diou + v / (1 - iou + v) * v


def _dfl(logp, point, stride, gt) -> float:
    px, py = point
    sides = [px - gt[0], py - gt[1], gt[2] - px, gt[3] - py]
    total = 0.0
    for row, d in zip(logp, sides, strict=True):
        y = min(max(d / stride, 0.0), R - 1 - 0.01)
        lo = math.floor(y)
        total += -(lo + 1 - y) * row[lo] - (y - lo) * row[lo + 1]
    return total / 4


def _bce(logit: float, t: float) -> float:
    return max(logit, 0) - logit * t + math.log1p(math.exp(-abs(logit)))


def _reference_losses(head, feats, targets, res, kind, weighting):
    cls_sum = box_sum = dfl_sum = norm = norm_weighted = 0.0
    for i, t in enumerate(targets):
        gts, areas = t.boxes.double().tolist(), t.areas.tolist()
        for a, anc in enumerate(_anchors(head, feats, i)):
            soft = res.target_scores[i, a].double().tolist()
            w = 1.0
            if bool(res.fg[i, a]):
                g = int(res.gt_index[i, a])
                if weighting is not None:
                    w = float(weighting(torch.tensor([areas[g]]))[0])
                q = sum(soft) * w
                box_sum += _box_loss(kind, anc["box"], gts[g]) * q
                dfl_sum += _dfl(anc["logp"], anc["point"], anc["stride"], gts[g]) * q
            cls_sum += w * sum(_bce(lg, s) for lg, s in zip(anc["logits"], soft, strict=True))
            norm += sum(soft)
            norm_weighted += sum(soft) * w
    if weighting is not None and weighting.normalize == "weight_sum":
        norm = norm_weighted
    norm = max(norm, 1.0)
    wb, wc, wd = WEIGHTS
    return {
        "loss_yolo_box": wb * box_sum / norm,
        "loss_yolo_cls": wc * cls_sum / norm,
        "loss_yolo_dfl": wd * dfl_sum / norm,
    }


@pytest.mark.parametrize(
    "assigner, kind, weighting",
    [
        ("TAL", "ciou", None),
        ("SimOTA", "giou", None),
        ("TAL", "diou", SizeWeighting("step", max_weight=3.0, small_area=400.0)),
        ("TAL", "ciou", SizeWeighting("exponential", normalize="weight_sum")),
    ],
)
def test_losses_match_per_anchor_loops(assigner, kind, weighting):
    head = _head(assigner=assigner, iou_loss=kind, size_weighting=weighting)
    feats, targets = _features(), _targets()
    seen = {}
    assign = head.assigner

    def recording(*args):
        seen["res"] = assign(*args)
        return seen["res"]

    head.assigner = recording
    ours = head(feats, [SIZE] * 2, targets)
    res = seen["res"]
    assert int(res.fg[0].sum()) >= 3 and int(res.fg[1].sum()) >= 1  # every image has positives
    ref = _reference_losses(head, feats, targets, res, kind, weighting)
    assert set(ours) == set(ref)
    for k, v in ref.items():
        torch.testing.assert_close(ours[k].double(), torch.tensor(v).double(), rtol=1e-4, atol=1e-6)


def test_inference_matches_a_per_anchor_loop():
    """Every (anchor, class) pair above the threshold, decoded in a loop and clipped to the
    image, then torchvision's class-wise NMS: the head's detections exactly."""
    head = _head(score_thresh=0.3, nms_thresh=0.5, topk_candidates=10_000)
    feats = _features()
    sizes = [SIZE, (40, 56)]  # the second image is padded: boxes clip to its own size
    ours = head(feats, sizes)
    for i, (h, w) in enumerate(sizes):
        boxes, scores, classes = [], [], []
        for anc in _anchors(head, feats, i):
            x0, y0, x1, y1 = anc["box"]
            for c, logit in enumerate(anc["logits"]):
                p = 1 / (1 + math.exp(-logit))
                if p > 0.3:
                    boxes.append([min(max(x0, 0), w), min(max(y0, 0), h),
                                  min(max(x1, 0), w), min(max(y1, 0), h)])  # fmt: skip
                    scores.append(p)
                    classes.append(c)
        assert len(scores) > 5
        b, s, c = torch.tensor(boxes), torch.tensor(scores), torch.tensor(classes)
        keep = batched_nms(b.float(), s.float(), c, 0.5)[: head.detections_per_image]
        got = ours[i]
        assert got.image_size == (h, w)
        assert got.classes.tolist() == c[keep].tolist()
        torch.testing.assert_close(got.scores.double(), s[keep].double(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.boxes.double(), b[keep].double(), rtol=1e-5, atol=1e-4)


def test_iou_losses_match_their_definitions():
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(20, 2, generator=g) * 40
    a = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30 + 1], 1).double()
    xy = xy + (torch.rand(20, 2, generator=g) - 0.5) * 20
    b = torch.cat([xy, xy + torch.rand(20, 2, generator=g) * 30 + 1], 1).double()
    for kind in ("giou", "diou", "ciou"):
        ours = iou_loss(a, b, kind).double()
        ref = torch.tensor(
            [_box_loss(kind, p, t) for p, t in zip(a.tolist(), b.tolist(), strict=True)]
        )
        torch.testing.assert_close(ours, ref.double(), rtol=1e-5, atol=1e-6)
