"""FCOS specifics: target assignment against a reference, input normalisation and padding."""

from __future__ import annotations

import torch

from detlab.modeling import build_model
from detlab.modeling.heads.fcos_head import FCOSHead, fcos_locations
from detlab.structures import Instances


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


def test_preprocess_normalises_and_pads(tiny_cfg, make_batch):
    cfg = tiny_cfg("FCOS")
    cfg.MODEL.SIZE_DIVISIBILITY = 64
    model = build_model(cfg)
    batch = make_batch(size=(70, 100))
    images, sizes = model.preprocess(batch)
    assert images.shape == (2, 1, 128, 128) and sizes == [(70, 100), (70, 100)]
    torch.testing.assert_close(images[0, :, :70, :100], (batch[0]["image"] - 100.0) / 50.0)
    assert images[:, :, 70:].abs().sum() == 0 and images[:, :, :, 100:].abs().sum() == 0


def test_fcos_losses_under_a_process_group(tiny_cfg, make_batch, tmp_path):
    """Normalisers are averaged over processes; with one process the losses are unchanged."""
    import torch.distributed as dist

    from detlab.modeling import build_model

    torch.manual_seed(0)
    model = build_model(tiny_cfg("FCOS")).train()
    with torch.no_grad():
        alone = model(make_batch())
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        with torch.no_grad():
            grouped = model(make_batch())
    finally:
        dist.destroy_process_group()
    for k in alone:
        torch.testing.assert_close(alone[k], grouped[k])
