"""RetinaNet against torchvision's RetinaNet on identical weights (features, head outputs,
losses, detections), its config keys, the size-aware loss, and Detectron2 checkpoints."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torchvision
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNet as TVRetinaNet
from torchvision.models.detection.retinanet import RetinaNetHead as TVRetinaNetHead
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from detlab.config import get_cfg
from detlab.modeling import build_model, load_model_weights
from detlab.modeling.heads.retinanet_head import retinanet_anchor_sizes
from detlab.structures import Instances
from detlab.utils.errors import UserError

HAS_D2 = importlib.util.find_spec("detectron2") is not None
K = 3
MEAN, STD = (100.0, 110.0, 120.0), (50.0, 55.0, 60.0)


def _cfg(**overrides):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    cfg.MODEL.BACKBONE.NAME = "resnet18"
    cfg.MODEL.BACKBONE.NORM = "FrozenBN"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = MEAN, STD
    cfg.MODEL.FPN.IN_STAGES = (2, 3, 4)
    cfg.MODEL.FPN.TOP_BLOCK = "P6P7C5"
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.RETINANET.NUM_CLASSES = K
    cfg.MODEL.RETINANET.NUM_CONVS = 2
    cfg.MODEL.RETINANET.SMOOTH_L1_LOSS_BETA = 0.0  # torchvision's L1
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _torchvision_model(score_thresh: float = 0.05) -> TVRetinaNet:
    body = torchvision.models.resnet18(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=[128, 256, 512],
        out_channels=32,
        extra_blocks=LastLevelP6P7(512, 32),  # P6 from C5, as detlab's P6P7C5
    )
    head = TVRetinaNetHead(32, num_anchors=9, num_classes=K)
    head.classification_head.conv = head.classification_head.conv[:2]  # 2 convs per subnet
    head.regression_head.conv = head.regression_head.conv[:2]
    return TVRetinaNet(
        backbone, K, head=head, score_thresh=score_thresh, detections_per_img=100,
        image_mean=[m / 255 for m in MEAN], image_std=[s / 255 for s in STD],
    )  # fmt: skip


def _randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                lo = 0.5 if name.endswith(("running_var", "bn1.weight", "bn2.weight")) else 0.0
                t.copy_(
                    torch.rand(t.shape, generator=g) + lo
                    if lo
                    else torch.randn(t.shape, generator=g) * 0.05
                )


def _pair(tmp_path, seed=0, **overrides):
    tv = _torchvision_model().eval()
    _randomize(tv, seed)
    path = tmp_path / "tv_retinanet.pth"
    torch.save(tv.state_dict(), path)
    ours = build_model(_cfg(**overrides)).eval()
    report = load_model_weights(ours, str(path))
    assert report["names"] == "torchvision"
    assert not report["missing"] and not report["unexpected"] and not report["skipped"]
    return tv, ours


def _targets(size=(128, 160)):
    h, w = size
    boxes = [
        torch.tensor([[10.0, 12.0, 50.0, 60.0], [70.0, 20.0, 150.0, 100.0], [30, 80, 62, 120]]),
        torch.tensor([[5.0, 5.0, 120.0, 90.0], [100.0, 60.0, 140.0, 126.0]]),
    ]
    classes = [torch.tensor([0, 2, 1]), torch.tensor([1, 1])]
    return [
        Instances((h, w), boxes=b, classes=c, areas=(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
        for b, c in zip(boxes, classes, strict=True)
    ]


def _features(ours, x):
    return ours.features(x.contiguous(memory_format=torch.channels_last))


def _close(a, b):
    """Equal up to float rounding, measured against the scale of ``b`` (random weights give
    large activations, and channels-last convolutions sum in another order)."""
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))


@pytest.mark.parametrize("loss_type", ["smooth_l1", "giou"])
def test_matches_torchvision_retinanet_on_identical_weights(tmp_path, loss_type):
    tv, ours = _pair(tmp_path, **{"MODEL.RETINANET.BBOX_REG_LOSS_TYPE": loss_type})
    tv.head.regression_head._loss_type = "l1" if loss_type == "smooth_l1" else "giou"
    x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f_tv = list(tv.backbone(x).values())
        f_ours = _features(ours, x)
        assert [f.shape for f in f_tv] == [f.shape for f in f_ours]
        for a, b in zip(f_ours, f_tv, strict=True):  # ResNet, FPN, P6/P7 from C5
            _close(a, b)
        out_tv = tv.head(f_tv)
        logits, deltas = ours.head.predict(f_ours)
        _close(torch.cat(logits, 1), out_tv["cls_logits"])
        _close(torch.cat(deltas, 1), out_tv["bbox_regression"])
        # Losses on the same head outputs and anchors. torchvision normalises each image by its
        # foreground count and averages images; detlab (Detectron2) divides the batch sum by
        # the batch's foreground count. Per image they agree; the batch is their weighted mean.
        anchors = ours.head.anchor_generator([tuple(f.shape[-2:]) for f in f_ours])
        all_anchors = torch.cat(anchors)
        counts = [len(a) for a in anchors]
        logits = list(out_tv["cls_logits"].split(counts, 1))
        deltas = list(out_tv["bbox_regression"].split(counts, 1))
        targets = _targets()
        tv_targets = [{"boxes": t.boxes, "labels": t.classes} for t in targets]
        per_image, n_pos = [], []
        for i, t in enumerate(targets):
            one = {k: v[i : i + 1] for k, v in out_tv.items()}
            ref = tv.compute_loss([tv_targets[i]], one, [all_anchors])
            mine = ours.head.losses(
                [lg[i : i + 1] for lg in logits], [d[i : i + 1] for d in deltas], anchors, [t]
            )
            torch.testing.assert_close(
                mine["loss_cls"], ref["classification"], rtol=1e-5, atol=1e-6
            )
            torch.testing.assert_close(
                mine["loss_box_reg"], ref["bbox_regression"], rtol=1e-5, atol=1e-6
            )
            labels, _, _ = ours.head.label_anchors(all_anchors, [t])
            n_pos.append(float(((labels >= 0) & (labels < K)).sum()))
            per_image.append(ref)
        assert min(n_pos) >= 3
        batch = ours.head.losses(logits, deltas, anchors, targets)
        for ours_key, tv_key in (
            ("loss_cls", "classification"),
            ("loss_box_reg", "bbox_regression"),
        ):
            expected = sum(r[tv_key] * n for r, n in zip(per_image, n_pos, strict=True)) / sum(
                n_pos
            )
            torch.testing.assert_close(batch[ours_key], expected, rtol=1e-5, atol=1e-6)


def test_detections_match_torchvision(tmp_path):
    tv, ours = _pair(tmp_path, seed=2)
    with torch.no_grad():  # small box deltas: boxes near their anchors, inside the image
        for w in (tv.head.regression_head.bbox_reg.weight, ours.head.bbox_pred.weight):
            w.mul_(0.02)
    # same anchors on both sides (torchvision rounds its cell anchors; detlab does not)
    detlab_anchors = ours.head.anchor_generator

    class SameAnchors(torch.nn.Module):
        def forward(self, images, features):
            a = torch.cat(detlab_anchors([tuple(f.shape[-2:]) for f in features]))
            return [a for _ in range(len(images.image_sizes))]

        def num_anchors_per_location(self):
            return [9] * 5

    tv.anchor_generator = SameAnchors()
    tv.transform.min_size, tv.transform.max_size = (128,), 160
    g = torch.Generator().manual_seed(3)
    images = [
        torch.rand(3, 128, 160, generator=g) * 255,
        torch.rand(3, 128, 160, generator=g) * 255,
    ]
    with torch.no_grad():
        theirs = tv([im / 255 for im in images])
        mine = ours([{"image": im, "height": 128, "width": 160} for im in images])
    for t, m in zip(theirs, mine, strict=True):
        inst = m["instances"]
        # detlab drops boxes clipped to zero width or height, as Detectron2; torchvision keeps them
        b = t["boxes"]
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        t = {k: v[keep] for k, v in t.items()}
        assert len(inst) == len(t["scores"]) > 10
        torch.testing.assert_close(inst.scores, t["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(inst.boxes, t["boxes"], rtol=1e-3, atol=1e-3)  # px
        assert torch.equal(inst.classes, t["labels"])


def test_defaults_are_detectron2s_and_anchors_are_three_octaves():
    cfg = _cfg()
    c = cfg.MODEL.RETINANET
    assert (c.IOU_THRESHOLDS, c.IOU_LABELS, c.FOCAL_LOSS_ALPHA, c.FOCAL_LOSS_GAMMA) == (
        (0.4, 0.5), (0, -1, 1), 0.25, 2.0,
    )  # fmt: skip
    assert (c.PRIOR_PROB, c.SCORE_THRESH_TEST, c.TOPK_CANDIDATES_TEST, c.NMS_THRESH_TEST) == (
        0.01, 0.05, 1000, 0.5,
    )  # fmt: skip
    model = build_model(cfg)
    head = model.head
    assert head.strides == [8, 16, 32, 64, 128] and head.anchor_generator.num_anchors == 9
    cell = head.anchor_generator.cell0
    sizes = ((cell[:, 2] - cell[:, 0]) * (cell[:, 3] - cell[:, 1])).sqrt()
    torch.testing.assert_close(
        sizes[::3], torch.tensor([32.0, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)])
    )
    assert retinanet_anchor_sizes([8])[0][0] == 32.0
    # prior probability on the class logits
    torch.testing.assert_close(torch.sigmoid(head.cls_score.bias), torch.full((9 * K,), 0.01))


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"MODEL.RETINANET.BBOX_REG_LOSS_TYPE": "diou"}, "use smooth_l1 or giou"),
        ({"MODEL.RETINANET.IOU_LABELS": (0, 1)}, "one label (0, -1 or 1) per interval"),
    ],
)
def test_bad_settings_are_one_sentence(overrides, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        build_model(_cfg(**overrides))


def test_size_aware_loss_weights_foreground_anchors():
    torch.manual_seed(0)
    cfg = _cfg(**{"MODEL.BACKBONE.NAME": "tiny_resnet", "MODEL.RESNETS.WIDTH_MULT": 0.25})
    model = build_model(cfg).train()
    feats = [torch.randn(2, 32, 16 // 2**i, 20 // 2**i) for i in range(5)]
    sizes, targets = [(128, 160)] * 2, _targets()
    base = model.head(feats, sizes, targets)
    on = model.head
    from detlab.modeling.losses.size_weights import SizeWeighting

    # every object tiny relative to SMALL_AREA: weight = MAX_WEIGHT for all of them
    on.size_weighting = SizeWeighting("step", max_weight=3.0, small_area=1e9, medium_area=2e9)
    weighted = model.head(feats, sizes, targets)
    torch.testing.assert_close(weighted["loss_box_reg"], 3.0 * base["loss_box_reg"])
    assert base["loss_cls"] < weighted["loss_cls"] < 3.0 * base["loss_cls"]
    on.size_weighting = SizeWeighting(
        "step", max_weight=3.0, small_area=1e9, medium_area=2e9, normalize="weight_sum"
    )
    torch.testing.assert_close(
        model.head(feats, sizes, targets)["loss_box_reg"], base["loss_box_reg"]
    )


def test_images_without_objects_train(tmp_path):
    cfg = _cfg(**{"MODEL.BACKBONE.NAME": "tiny_resnet", "MODEL.RESNETS.WIDTH_MULT": 0.25})
    model = build_model(cfg).train()
    empty = Instances((64, 64), boxes=torch.zeros(0, 4), classes=torch.zeros(0, dtype=torch.int64))
    batch = [{"image": torch.rand(3, 64, 64) * 255, "instances": empty, "height": 64, "width": 64}]
    losses = model(batch)
    assert losses["loss_box_reg"] == 0 and losses["loss_cls"] > 0
    sum(losses.values()).backward()


@pytest.mark.skipif(not HAS_D2, reason="detectron2 is not installed (interop check)")
def test_retinanet_checkpoint_saved_by_detectron2(d2_zoo, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.modeling import build_model as d2_build

    from detlab.config import load_config

    zoo = str(d2_zoo / "COCO-Detection/retinanet_R_50_FPN_1x.yaml")
    opts = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64",
            "MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RETINANET.NUM_CLASSES", "3",
            "MODEL.RETINANET.NUM_CONVS", "2", "MODEL.DEVICE", "cpu"]  # fmt: skip
    d2cfg = d2_get_cfg()
    d2cfg.merge_from_file(zoo, allow_unsafe=True)  # our own fixture; Detectron2 runs the eval
    d2cfg.merge_from_list(opts)
    theirs = d2_build(d2cfg).eval()
    _randomize(theirs, 4)
    DetectionCheckpointer(theirs, save_dir=str(tmp_path)).save("model_final")
    ours = build_model(load_config(zoo, [*opts, "MODEL.WEIGHTS", ""])).eval()
    report = load_model_weights(ours, str(tmp_path / "model_final.pth"))
    assert report["names"] == "detectron2" and not report["missing"] and not report["unexpected"]
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        f_theirs = theirs.backbone(x)
        f_ours = _features(ours, x)
        assert list(f_theirs) == ["p3", "p4", "p5", "p6", "p7"]
        for a, b in zip(f_ours, f_theirs.values(), strict=True):
            _close(a, b)
        cls_t, box_t = theirs.head(list(f_theirs.values()))
        logits, deltas = ours.head.predict(f_ours)
        for lo, lt in zip(logits, cls_t, strict=True):  # Detectron2: B×(A·K)×H×W
            b, _, h, w = lt.shape
            ref = lt.view(b, -1, K, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, K)
            _close(lo, ref)
        for do, dt in zip(deltas, box_t, strict=True):
            b, _, h, w = dt.shape
            ref = dt.view(b, -1, 4, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, 4)
            _close(do, ref)
