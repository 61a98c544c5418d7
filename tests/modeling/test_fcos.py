"""FCOS: training on a tiny batch, gradients, target assignment, inference coordinates."""

from __future__ import annotations

import pytest
import torch

from detlab.modeling import build_model
from detlab.modeling.heads.fcos_head import FCOSHead, fcos_locations
from detlab.structures import Instances


def _train(model, batch, iters, lr=0.01):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9)
    history = []
    for _ in range(iters):
        losses = model(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    return history


def test_fcos_loss_falls_on_tiny_batch(tiny_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(tiny_cfg("FCOS"))
    model.train()
    batch = make_batch()
    losses = model(batch)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    history = _train(model, batch, 60)
    assert history[-1] < 0.4 * history[0], history[::10]


def test_fcos_every_trainable_parameter_gets_gradient(tiny_cfg, make_batch):
    torch.manual_seed(0)
    cfg = tiny_cfg("FCOS")
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    model = build_model(cfg)
    model.train()
    sum(model(make_batch()).values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            # A level's regression scale only moves when that level has positives.
            if ".scales." not in name:
                assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert any(not p.requires_grad for p in model.parameters())


def _reference_assign(head, locations, target):
    """Per-location loop over the FCOS rules, as an independent reference."""
    labels = []
    for lvl, loc in enumerate(locations):
        s, (lo, hi) = head.strides[lvl], head.size_ranges[lvl]
        for x, y in loc.tolist():
            best, best_area = head.num_classes, None
            for b, c in zip(target.boxes.tolist(), target.classes.tolist(), strict=True):
                x0, y0, x1, y1 = b
                d = [x - x0, y - y0, x1 - x, y1 - y]
                cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, s * head.center_sampling_radius
                inner = [
                    x - max(cx - r, x0),
                    y - max(cy - r, y0),
                    min(cx + r, x1) - x,
                    min(cy + r, y1) - y,
                ]
                ok = min(inner) > 0 and lo < max(d) <= hi
                area = (x1 - x0) * (y1 - y0)
                if ok and (best_area is None or area < best_area):
                    best, best_area = c, area
            labels.append(best)
    return torch.tensor(labels)


def test_vectorised_assignment_matches_reference():
    g = torch.Generator().manual_seed(3)
    head = FCOSHead(8, strides=[8, 16, 32], num_classes=3, num_convs=0)
    locations = fcos_locations([(12, 16), (6, 8), (3, 4)], [8, 16, 32], torch.device("cpu"))
    targets = []
    for n in (5, 0, 2):
        xy = torch.rand(n, 2, generator=g) * torch.tensor([100.0, 70.0])
        wh = torch.rand(n, 2, generator=g) * 90 + 4
        boxes = torch.cat([xy, xy + wh], 1)
        cls = torch.randint(0, 3, (n,), generator=g)
        targets.append(Instances((96, 128), boxes=boxes, classes=cls, areas=torch.ones(n)))
    labels, boxes, _ = head.assign(locations, targets)
    for i, t in enumerate(targets):
        assert torch.equal(labels[i], _reference_assign(head, locations, t))
    assert (labels[1] == 3).all()
    assert labels[0].lt(3).any()


@pytest.mark.parametrize("channels", [1, 3])
def test_inference_boxes_in_original_coordinates(tiny_cfg, make_batch, channels):
    torch.manual_seed(0)
    cfg = tiny_cfg("FCOS", channels=channels)
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0
    cfg.TEST.DETECTIONS_PER_IMAGE = 7
    model = build_model(cfg).eval()
    same = make_batch(channels=channels)
    double = make_batch(channels=channels, scale=2.5)
    with torch.no_grad():
        a, b = model(same), model(double)
    for ra, rb, x in zip(a, b, double, strict=True):
        ia, ib = ra["instances"], rb["instances"]
        assert ib.image_size == (x["height"], x["width"])
        assert 0 < len(ia) <= 7 and len(ia) == len(ib)
        torch.testing.assert_close(ib.boxes, ia.boxes * 2.5, rtol=1e-4, atol=1e-3)
        assert (ib.boxes[:, 2] <= x["width"]).all() and (ib.boxes[:, 3] <= x["height"]).all()
        assert ib.scores.shape == ib.classes.shape == (len(ib),)
        assert ib.classes.dtype == torch.int64


def test_preprocess_normalises_and_pads(tiny_cfg, make_batch):
    cfg = tiny_cfg("FCOS")
    cfg.MODEL.SIZE_DIVISIBILITY = 64
    model = build_model(cfg)
    batch = make_batch(size=(70, 100))
    images, sizes = model.preprocess(batch)
    assert images.shape == (2, 1, 128, 128) and sizes == [(70, 100), (70, 100)]
    torch.testing.assert_close(images[0, :, :70, :100], (batch[0]["image"] - 100.0) / 50.0)
    assert images[:, :, 70:].abs().sum() == 0 and images[:, :, :, 100:].abs().sum() == 0


def test_images_without_boxes_train(tiny_cfg, make_batch):
    model = build_model(tiny_cfg("FCOS")).train()
    batch = make_batch()
    batch[1]["instances"] = Instances(
        (96, 128), boxes=torch.zeros(0, 4), classes=torch.zeros(0, dtype=torch.int64)
    )
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    batch[0]["instances"] = batch[1]["instances"]
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
