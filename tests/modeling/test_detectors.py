"""Every registered detector: trains on a tiny batch, gradients, output coordinates."""

from __future__ import annotations

import pytest
import torch

from detlab.modeling import META_ARCH_REGISTRY, build_model
from detlab.structures import Instances

DETECTORS = ["FCOS", "FasterRCNN", "RetinaNet", "YOLO"]


def test_every_registered_detector_is_tested():
    built_in = {
        n
        for n in META_ARCH_REGISTRY.names()
        if META_ARCH_REGISTRY.get(n).__module__.startswith("detlab.modeling.")
    }
    assert built_in == set(DETECTORS)


def _train(model, batch, iters, lr=3e-3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = []
    for _ in range(iters):
        losses = model(batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(total.item())
    return history


@pytest.mark.parametrize("meta", DETECTORS)
def test_loss_falls_on_tiny_batch(tiny_cfg, make_batch, meta):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(meta))
    model.train()
    batch = make_batch()
    losses = model(batch)
    assert losses and all(k.startswith("loss_") and v.dim() == 0 for k, v in losses.items())
    history = _train(model, batch, 30)
    assert sum(history[-3:]) / 3 < 0.5 * history[0], history[::5]


@pytest.mark.parametrize("meta", DETECTORS)
def test_every_trainable_parameter_gets_gradient(tiny_cfg, make_batch, meta):
    torch.manual_seed(0)
    cfg = tiny_cfg(meta)
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    if meta == "FasterRCNN":
        cfg.MODEL.FPN.TOP_BLOCK = "P6"  # P7 anchors (1024 px) would never be sampled here
    model = build_model(cfg)
    model.train()
    # FCOS: large enough that P7 (stride 128) is not a single cell, whose gradient vanishes.
    size = (256, 256) if meta == "FCOS" else (96, 128)
    sum(model(make_batch(size=size)).values()).backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            # A level's regression scale (FCOS) or box branch (YOLO: task-aligned positives
            # sit on the level whose initial boxes fit best) only moves when that level has
            # positives.
            if ".scales." not in name and ".box_branch." not in name:
                assert p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert any(not p.requires_grad for p in model.parameters())
    box = [p.grad.abs().sum() for n, p in model.named_parameters() if ".box_branch." in n]
    assert not box or max(box) > 0


@pytest.mark.parametrize("meta", DETECTORS)
@pytest.mark.parametrize("channels", [1, 3])
def test_inference_boxes_in_original_coordinates(tiny_cfg, make_batch, channels, meta):
    torch.manual_seed(0)
    cfg = tiny_cfg(meta, channels=channels)
    cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.YOLO.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
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


@pytest.mark.parametrize("meta", DETECTORS)
def test_images_without_boxes_train(tiny_cfg, make_batch, meta):
    model = build_model(tiny_cfg(meta)).train()
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


@pytest.mark.parametrize("meta", DETECTORS)
def test_channels_last_gives_the_same_losses_and_detections(tiny_cfg, make_batch, meta):
    outs = []
    for flag in (False, True):
        torch.manual_seed(0)
        cfg = tiny_cfg(meta)
        cfg.MODEL.CHANNELS_LAST = flag
        cfg.MODEL.FCOS.SCORE_THRESH_TEST = 0.0
        cfg.MODEL.YOLO.SCORE_THRESH_TEST = 0.0
        cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
        model = build_model(cfg).eval()
        with torch.no_grad():
            det = model(make_batch())[0]["instances"]
        model.train()
        torch.manual_seed(1)
        with torch.no_grad():
            losses = model(make_batch())
        outs.append((det, losses))
    (d0, l0), (d1, l1) = outs
    for k in l0:
        torch.testing.assert_close(l0[k], l1[k], rtol=1e-4, atol=1e-4)
    n = min(len(d0), len(d1), 5)
    torch.testing.assert_close(d0.scores[:n], d1.scores[:n], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("meta", DETECTORS)
def test_bf16_autocast_losses_are_float32_and_near_fp32(tiny_cfg, make_batch, meta):
    """SOLVER.AMP on CPU: convolutions in bf16, every loss computed in fp32.

    The second stage samples RoIs among the (precision-dependent) proposals, so its losses
    are compared only for type and finiteness; the rest must stay near the fp32 values."""
    torch.manual_seed(0)
    model = build_model(tiny_cfg(meta)).train()
    runs = []
    for amp in (False, True):
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            runs.append(model(make_batch()))
    fp32, bf16 = runs
    assert all(v.dtype == torch.float32 for v in bf16.values())
    compared = [k for k in fp32 if meta != "FasterRCNN" or "rpn" in k]
    assert compared
    for k in compared:
        torch.testing.assert_close(bf16[k], fp32[k], rtol=0.05, atol=0.02)
    assert all(torch.isfinite(v) for v in bf16.values())
    sum(bf16.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
