"""Task-aligned and SimOTA assignment: the batched code against a readable per-image loop."""

from __future__ import annotations

import math

import pytest
import torch

from detlab.modeling.heads.assigners import SimOTAAssigner, TaskAlignedAssigner, build_assigner
from detlab.modeling.heads.yolo_head import anchor_points
from detlab.utils.errors import UserError


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = lambda x: max(0.0, x[2] - x[0]) * max(0.0, x[3] - x[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def _inside(p, box):
    return min(p[0] - box[0], p[1] - box[1], box[2] - p[0], box[3] - p[1]) > 1e-9


def _case(seed: int, counts=(4, 0, 6)):
    """Random predictions on two levels (strides 8, 16) of a 64×48 image and random boxes,
    padded per image like the head pads them."""
    g = torch.Generator().manual_seed(seed)
    points, strides = anchor_points([(6, 8), (3, 4)], [8, 16], torch.device("cpu"))
    points, strides = points.double(), strides.double()
    b, a, k = len(counts), len(points), 3
    scores = torch.rand(b, a, k, generator=g, dtype=torch.float64) * 0.98 + 0.01
    half = (torch.rand(b, a, 2, generator=g, dtype=torch.float64) * 2 + 0.3) * strides[:, None]
    shift = (torch.rand(b, a, 2, generator=g, dtype=torch.float64) - 0.5) * strides[:, None]
    ctr = points + shift
    boxes = torch.cat([ctr - half, ctr + half], -1)
    gmax = max(counts)
    gt_boxes = torch.zeros(b, gmax, 4, dtype=torch.float64)
    gt_classes = torch.zeros(b, gmax, dtype=torch.int64)
    valid = torch.zeros(b, gmax, dtype=torch.bool)
    for i, n in enumerate(counts):
        xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([50.0, 36.0])
        wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30 + 3
        gt_boxes[i, :n] = torch.cat([xy, xy + wh], 1)
        gt_classes[i, :n] = torch.randint(0, k, (n,), generator=g)
        valid[i, :n] = True
    return scores, boxes, points, strides, gt_boxes, gt_classes, valid


def _tal_reference(assigner, scores, boxes, points, gt_boxes, gt_classes, n):
    """One image, loops only."""
    a, k = scores.shape
    pts, pred = points.tolist(), boxes.tolist()
    gts, cls = gt_boxes[:n].tolist(), gt_classes[:n].tolist()
    metric, iou, chosen = {}, {}, {}
    for g in range(n):
        cands = [j for j in range(a) if _inside(pts[j], gts[g])]
        for j in cands:
            iou[g, j] = _iou(gts[g], pred[j])
            s = float(scores[j, cls[g]])
            metric[g, j] = s**assigner.alpha * iou[g, j] ** assigner.beta
        cands.sort(key=lambda j: (-metric[g, j], j))
        chosen[g] = cands[: assigner.topk]
    owner = {}
    for j in range(a):
        gs = [g for g in range(n) if j in chosen[g]]
        if gs:
            owner[j] = max(gs, key=lambda g: (iou[g, j], -g))
    labels, target = {}, torch.zeros(a, k, dtype=torch.float64)
    for g in range(n):
        mine = [j for j, o in owner.items() if o == g]
        if not mine:
            continue
        best_m = max(metric[g, j] for j in mine)
        best_u = max(iou[g, j] for j in mine)
        for j in mine:
            labels[j] = g
            target[j, cls[g]] = metric[g, j] * best_u / (best_m + 1e-9)
    return labels, target


def _simota_reference(assigner, scores, boxes, points, strides, gt_boxes, gt_classes, n):
    a, k = scores.shape
    pts, pred, st = points.tolist(), boxes.tolist(), strides.tolist()
    gts, cls = gt_boxes[:n].tolist(), gt_classes[:n].tolist()
    r = assigner.center_radius

    def in_ctr(j, g):
        cx, cy = (gts[g][0] + gts[g][2]) / 2, (gts[g][1] + gts[g][3]) / 2
        d = r * st[j]
        return _inside(pts[j], [cx - d, cy - d, cx + d, cy + d])

    cand = [j for j in range(a) if any(_inside(pts[j], gts[g]) or in_ctr(j, g) for g in range(n))]
    cost, chosen, iou = {}, {}, {}
    for g in range(n):
        for j in cand:
            iou[g, j] = _iou(gts[g], pred[j])
            p = scores[j].clamp(1e-6, 1 - 1e-6).tolist()
            bce = sum(-math.log(p[c]) if c == cls[g] else -math.log(1 - p[c]) for c in range(k))
            both = _inside(pts[j], gts[g]) and in_ctr(j, g)
            cost[g, j] = bce + assigner.iou_weight * -math.log(iou[g, j] + 1e-8)
            cost[g, j] += 0.0 if both else 1e5
        top = sorted((iou[g, j] for j in cand), reverse=True)[: min(assigner.topk_iou, a)]
        dyn_k = max(1, int(sum(top)))
        chosen[g] = sorted(cand, key=lambda j: (cost[g, j], j))[:dyn_k]
    labels, target = {}, torch.zeros(a, k, dtype=torch.float64)
    for j in range(a):
        gs = [g for g in range(n) if j in chosen[g]]
        if gs:
            g = min(gs, key=lambda g: (cost[g, j], g))
            labels[j] = g
            target[j, cls[g]] = iou[g, j]
    return labels, target


def _check(res, refs):
    for i, (labels, target) in enumerate(refs):
        fg = [j for j in range(res.fg.shape[1]) if res.fg[i, j]]
        assert fg == sorted(labels), f"image {i}: foreground anchors differ"
        assert [int(res.gt_index[i, j]) for j in fg] == [labels[j] for j in sorted(labels)]
        torch.testing.assert_close(res.target_scores[i], target, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_task_aligned_matches_loop(seed):
    case = _case(seed)
    assigner = TaskAlignedAssigner(topk=5, alpha=0.5, beta=6.0)
    res = assigner(*case)
    scores, boxes, points, strides, gt_boxes, gt_classes, valid = case
    refs = [
        _tal_reference(assigner, scores[i], boxes[i], points, gt_boxes[i], gt_classes[i], n)
        for i, n in enumerate(valid.sum(1).tolist())
    ]
    _check(res, refs)
    assert res.fg[0].any() and not res.fg[1].any()  # image 1 has no boxes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_simota_matches_loop(seed):
    case = _case(seed)
    assigner = SimOTAAssigner(center_radius=2.5, topk_iou=10, iou_weight=3.0)
    res = assigner(*case)
    scores, boxes, points, strides, gt_boxes, gt_classes, valid = case
    refs = [
        _simota_reference(
            assigner, scores[i], boxes[i], points, strides, gt_boxes[i], gt_classes[i], n
        )
        for i, n in enumerate(valid.sum(1).tolist())
    ]
    _check(res, refs)
    assert res.fg[2].any() and not res.fg[1].any()


def test_conflicts_are_resolved_to_one_box():
    """Two nearly identical boxes compete for the same anchors: each anchor gets one."""
    case = list(_case(5, counts=(2,)))
    case[4][0, 1] = case[4][0, 0] + 0.5
    for assigner in (TaskAlignedAssigner(topk=8), SimOTAAssigner()):
        res = assigner(*case)
        assert res.fg.any()
        # every foreground anchor has exactly one non-zero target
        assert ((res.target_scores[res.fg] > 0).sum(-1) <= 1).all()


def test_no_boxes_and_bad_name():
    case = _case(0, counts=(0, 0))
    for assigner in (TaskAlignedAssigner(), SimOTAAssigner()):
        res = assigner(*case)
        assert not res.fg.any() and res.target_scores.abs().sum() == 0
    with pytest.raises(UserError, match="ASSIGNER"):
        build_assigner("ATSS")
