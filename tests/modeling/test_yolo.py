"""YOLO family: CSP backbone scales, PAN neck over 3/4 scales, head losses and inference."""

from __future__ import annotations

import os

import pytest
import torch

from detlab.config import load_config
from detlab.modeling import build_model
from detlab.modeling.backbone.csp import CSPDarknet
from detlab.modeling.heads.yolo_head import YOLOHead
from detlab.modeling.losses import SizeWeighting, distribution_focal_loss, iou_loss
from detlab.modeling.neck.pan import PAN
from detlab.structures import Instances
from detlab.utils.errors import UserError

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "yolo")


def _yolo_cfg(tiny_cfg, stages=(2, 3, 4), assigner="TAL", reg_max=8):
    cfg = tiny_cfg("YOLO")  # CSPDarknet at 1/8 width, PAN, two classes
    cfg.MODEL.FPN.IN_STAGES = stages
    cfg.MODEL.YOLO.ASSIGNER = assigner
    cfg.MODEL.YOLO.REG_MAX = reg_max
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def test_scales_have_the_yolov8_sizes():
    """Parameter counts of the n/s/m configs (80 classes, 3 channels) are YOLOv8's published
    3 157 200 / 11 166 560 / 25 902 640, less the 16 fixed DFL weights Ultralytics counts."""
    expected = {"n": 3_157_200, "s": 11_166_560, "m": 25_902_640}
    for scale, count in expected.items():
        model = build_model(
            load_config(os.path.join(CONFIGS, f"yolo_{scale}.yaml"), ["MODEL.DEVICE", "cpu"])
        )
        assert sum(p.numel() for p in model.parameters()) == count - 16


@pytest.mark.parametrize("channels", [1, 3])
def test_csp_stage_shapes_match_output_shape(channels):
    net = CSPDarknet.from_scale("n", in_channels=channels)
    shapes = net.output_shape()
    assert [(s.channels, s.stride) for s in shapes.values()] == [
        (32, 4), (64, 8), (128, 16), (256, 32)
    ]  # fmt: skip
    out = net(torch.randn(2, channels, 64, 96))
    for name, spec in shapes.items():
        assert out[name].shape == (2, spec.channels, 64 // spec.stride, 96 // spec.stride)
    with pytest.raises(UserError, match="scale"):
        CSPDarknet.from_scale("xl")
    with pytest.raises(UserError, match="STAGE_DEPTHS"):
        CSPDarknet(stage_depths=(1, 2, 3))


@pytest.mark.parametrize(
    "stages, width, expected",
    [
        ((2, 3, 4), 0, {"p3": (64, 8), "p4": (128, 16), "p5": (256, 32)}),
        ((1, 2, 3, 4), 0, {"p2": (32, 4), "p3": (64, 8), "p4": (128, 16), "p5": (256, 32)}),
        ((1, 2, 3), 24, {"p2": (24, 4), "p3": (24, 8), "p4": (24, 16)}),
    ],
)
def test_pan_levels(stages, width, expected):
    net = CSPDarknet.from_scale("n", in_channels=1)
    chans = [net.output_shape()[f"res{s + 1}"].channels for s in stages]
    neck = PAN(chans, in_stages=stages, out_channels=width)
    shapes = neck.output_shape()
    assert {k: (v.channels, v.stride) for k, v in shapes.items()} == expected
    out = neck(net(torch.randn(1, 1, 128, 96)))
    for k, (c, s) in expected.items():
        assert out[k].shape == (1, c, 128 // s, 96 // s)


def test_pan_rejects_stages_the_backbone_lacks(tiny_cfg):
    cfg = _yolo_cfg(tiny_cfg)
    cfg.MODEL.FPN.IN_STAGES = (2, 3, 4, 5)
    with pytest.raises(UserError, match="IN_STAGES"):
        build_model(cfg)


@pytest.mark.parametrize(
    "stages, assigner",
    [
        ((2, 3, 4), "TAL"),
        ((1, 2, 3, 4), "SimOTA"),
        pytest.param((1, 2, 3, 4), "TAL", marks=pytest.mark.slow),
        pytest.param((2, 3, 4), "SimOTA", marks=pytest.mark.slow),
    ],
)
def test_overfit_one_batch_and_infer(tiny_cfg, make_batch, stages, assigner):
    """Losses fall on one repeated batch; inference returns boxes in original pixels."""
    torch.manual_seed(0)
    model = build_model(_yolo_cfg(tiny_cfg, stages, assigner)).train()
    batch = make_batch(size=(64, 96), scale=2.0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    history = []
    for _ in range(20):
        losses = model(batch)
        history.append({k: float(v.detach()) for k, v in losses.items()})
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert set(history[0]) == {"loss_yolo_cls", "loss_yolo_box", "loss_yolo_dfl"}
    for k in history[0]:
        assert history[-1][k] < 0.7 * history[0][k], (k, history[0][k], history[-1][k])
    model.eval()
    with torch.no_grad():
        out = model(batch)
    inst = out[0]["instances"]
    assert inst.image_size == (128, 192)  # height/width of the original (2x) image
    assert len(inst) > 0 and inst.boxes[:, 2].max() <= 192 and inst.boxes[:, 3].max() <= 128


def _head_losses(head, feats, targets):
    torch.manual_seed(0)
    return head(feats, [(64, 64)] * len(targets), targets)


def test_size_aware_weights_reach_the_positives():
    """With a step weighting that gives every box weight 3, the box and DFL losses are exactly
    3x the unweighted ones (normalised by the positive count) and the classification loss
    rises; large boxes (weight 1) leave every loss unchanged."""
    torch.manual_seed(0)
    feats = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4)]
    small = [
        Instances((64, 64), boxes=torch.tensor([[4.0, 6.0, 20.0, 18.0]]),
                  classes=torch.tensor([1]), areas=torch.tensor([192.0])),
        Instances((64, 64), boxes=torch.tensor([[30.0, 30.0, 50.0, 44.0]]),
                  classes=torch.tensor([0]), areas=torch.tensor([280.0])),
    ]  # fmt: skip
    large = [
        Instances((64, 64), boxes=t.boxes, classes=t.classes, areas=t.areas * 1000) for t in small
    ]
    plain = YOLOHead([8, 8], [8, 16], 2, reg_max=8)
    weighted = YOLOHead([8, 8], [8, 16], 2, reg_max=8,
                        size_weighting=SizeWeighting("step", max_weight=3.0))  # fmt: skip
    weighted.load_state_dict(plain.state_dict())
    base = _head_losses(plain, feats, small)
    w = _head_losses(weighted, feats, small)
    torch.testing.assert_close(w["loss_yolo_box"], 3 * base["loss_yolo_box"])
    torch.testing.assert_close(w["loss_yolo_dfl"], 3 * base["loss_yolo_dfl"])
    assert w["loss_yolo_cls"] > base["loss_yolo_cls"] * 1.01
    unchanged = _head_losses(weighted, feats, large)
    for k, v in _head_losses(plain, feats, large).items():
        torch.testing.assert_close(unchanged[k], v)


def test_head_rejects_a_class_outside_num_classes():
    head = YOLOHead([8], [8], 1, reg_max=4)
    t = [Instances((32, 32), boxes=torch.tensor([[2.0, 2, 20, 20]]), classes=torch.tensor([3]))]
    with pytest.raises(UserError, match="NUM_CLASSES"):
        head([torch.randn(1, 8, 4, 4)], [(32, 32)], t)


def test_no_dfl_variant_and_empty_images():
    head = YOLOHead([8], [8], 1, reg_max=1, assigner="SimOTA", iou_loss="giou")
    empty = [Instances((32, 32), boxes=torch.zeros(0, 4), classes=torch.zeros(0, dtype=torch.long))]
    losses = head([torch.randn(1, 8, 4, 4)], [(32, 32)], empty)
    assert set(losses) == {"loss_yolo_cls", "loss_yolo_box"}
    assert float(losses["loss_yolo_box"].detach()) == 0
    assert float(losses["loss_yolo_cls"].detach()) > 0
    with pytest.raises(UserError, match="IOU_LOSS"):
        YOLOHead([8], [8], 1, iou_loss="eiou")


def test_box_losses_against_definitions():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    # IoU 1/3; the enclosing box equals the union, so GIoU loss = 1 - 1/3
    torch.testing.assert_close(iou_loss(a, b, "giou"), torch.tensor([2 / 3]))
    # DFL: a distance on a bin is the cross-entropy of that bin; between bins, a mixture
    logits = torch.log(torch.tensor([[[0.1, 0.2, 0.7, 0.0 + 1e-9]] * 4]))
    on_bin = distribution_focal_loss(logits, torch.full((1, 4), 2.0))
    torch.testing.assert_close(on_bin, -torch.log(torch.tensor([0.7])), rtol=1e-5, atol=1e-6)
    mid = distribution_focal_loss(logits, torch.full((1, 4), 1.25))
    ref = -(0.75 * torch.log(torch.tensor(0.2)) + 0.25 * torch.log(torch.tensor(0.7)))
    torch.testing.assert_close(mid, ref.reshape(1), rtol=1e-5, atol=1e-6)


def test_yolo_weights_go_through_the_one_loader(tiny_cfg, tmp_path, caplog):
    """Export and visualisation build YOLO with ``build_inference_model``: an RGB checkpoint
    loads into a single-channel YOLO (stem summed over its input channels), and one trained
    for other classes loads all but the class convolutions, which are reported as skipped."""
    from detlab.modeling import build_inference_model

    torch.manual_seed(0)
    rgb = build_model(tiny_cfg("YOLO", channels=3))
    path = tmp_path / "rgb.pth"
    torch.save({"model": rgb.state_dict(), "iteration": 7}, path)
    cfg = tiny_cfg("YOLO", channels=1)
    cfg.MODEL.WEIGHTS = str(path)
    model = build_inference_model(cfg)
    assert not model.training
    stem = rgb.backbone.stem[0].weight
    torch.testing.assert_close(model.backbone.stem[0].weight, stem.sum(1, keepdim=True))
    for k, v in rgb.state_dict().items():
        if k != "backbone.stem.0.weight":
            assert torch.equal(model.state_dict()[k], v), k

    cfg.MODEL.YOLO.NUM_CLASSES = 5
    with caplog.at_level("WARNING"):
        other = build_inference_model(cfg)
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage().lower()]
    assert skipped and "cls_branch" in skipped[0]
    torch.testing.assert_close(
        other.head.box_branch[0][0][0].weight, rgb.head.box_branch[0][0][0].weight
    )
