"""Detectron2 and Caffe2 checkpoints: .pkl through a restricted unpickler, names mapped onto
detlab's, round trips that give identical outputs, and checkpoints Detectron2 itself saved."""

from __future__ import annotations

import importlib.util
import os
import pickle

import numpy as np
import pytest
import torch

from detlab.modeling import build_model, load_model_weights
from detlab.modeling.weight_names import export_state_dict
from detlab.utils.errors import UserError
from detlab.utils.safe_pickle import UnsafePickleError, load_restricted_pickle

HAS_D2 = importlib.util.find_spec("detectron2") is not None
needs_d2 = pytest.mark.skipif(not HAS_D2, reason="detectron2 is not installed (interop check)")


def _randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights and BN statistics, so that every tensor matters to the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var") or name.endswith(
                ("norm.weight", "bn1.weight", "bn2.weight", "bn3.weight")
            ):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.05)
    return model


def _rcnn(tiny_cfg, arch="FasterRCNN"):
    cfg = tiny_cfg(arch, channels=3)
    cfg.MODEL.FPN.IN_STAGES = (1, 2, 3, 4)
    cfg.MODEL.FPN.TOP_BLOCK = "P6P7"
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.NUM_CLASSES = 2
    cfg.MODEL.RETINANET.NUM_CONVS = 2
    return cfg


def _outputs(model, batch):
    model.eval()
    with torch.no_grad():
        images, _ = model.preprocess(batch)
        feats = model.neck(model.backbone(images))
        out = model(batch)
    return feats, [o["instances"] for o in out]


def _assert_same_outputs(a, b, batch):
    fa, ia = _outputs(a, batch)
    fb, ib = _outputs(b, batch)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert torch.equal(fa[k], fb[k]), k
    for x, y in zip(ia, ib, strict=True):
        assert len(x) > 0
        assert torch.equal(x.boxes, y.boxes) and torch.equal(x.scores, y.scores)
        assert torch.equal(x.classes, y.classes)


def _numpy(state):
    return {k: v.numpy() for k, v in state.items()}


@pytest.mark.parametrize("arch", ["FasterRCNN", "RetinaNet"])
def test_caffe2_pkl_round_trip_gives_identical_outputs(tiny_cfg, make_batch, tmp_path, arch):
    src = _randomize(build_model(_rcnn(tiny_cfg, arch)), 1)
    names = export_state_dict(src, "caffe2")
    assert "res2_0_branch2a_w" in names and "res_conv1_bn_riv" in names
    assert "fpn_inner_res5_0_sum_w" in names and "fpn_inner_res2_0_sum_lateral_w" in names
    assert "fpn_6_w" in names and "fpn_7_b" in names
    if arch == "FasterRCNN":
        assert "conv_rpn_fpn2_w" in names and "fc6_w" in names and "fc7_b" in names
        assert names["cls_score_w"].shape[0] == 3 and names["bbox_pred_w"].shape[0] == 12
    else:
        assert "retnet_cls_conv_n1_fpn2_w" in names and "retnet_bbox_pred_fpn2_b" in names
    path = tmp_path / "model_final.pkl"
    with open(path, "wb") as f:  # Detectron1 layout, protocol 2 as Python 2 wrote it
        pickle.dump({"blobs": _numpy(names), "cfg": "yaml text"}, f, protocol=2)
    dst = _randomize(build_model(_rcnn(tiny_cfg, arch)), 2)
    report = load_model_weights(dst, str(path))
    assert report["names"] == "caffe2"
    assert not report["missing"] and not report["unexpected"] and not report["skipped"]
    _assert_same_outputs(src, dst, make_batch(channels=3))


@pytest.mark.parametrize(
    "container, arch", [("pth", "FasterRCNN"), ("zoo-pkl", "FasterRCNN"), ("pth", "RetinaNet")]
)
def test_detectron2_checkpoint_round_trip_gives_identical_outputs(
    tiny_cfg, make_batch, tmp_path, container, arch
):
    src = _randomize(build_model(_rcnn(tiny_cfg, arch)), 3)
    names = export_state_dict(src, "detectron2")
    assert "backbone.bottom_up.res2.0.conv1.weight" in names
    assert "backbone.fpn_lateral2.weight" in names and "backbone.top_block.p7.bias" in names
    head = (
        "roi_heads.box_predictor.bbox_pred.weight"
        if arch == "FasterRCNN"
        else "head.bbox_pred.weight"
    )
    assert head in names
    if container == "pth":  # what Detectron2's checkpointer writes
        path = tmp_path / "model_0004999.pth"
        torch.save({"model": names, "optimizer": {}, "iteration": 4999}, path)
    else:  # model-zoo model_final_*.pkl
        path = tmp_path / "model_final_abc123.pkl"
        with open(path, "wb") as f:
            pickle.dump(
                {"model": _numpy(names), "__author__": "Detectron2 Model Zoo"}, f, protocol=4
            )
    dst = _randomize(build_model(_rcnn(tiny_cfg, arch)), 4)
    report = load_model_weights(dst, str(path))
    assert report["names"] == "detectron2" and not report["missing"] and not report["unexpected"]
    _assert_same_outputs(src, dst, make_batch(channels=3))


def test_caffe2_imagenet_pkl_without_statistics(tiny_cfg, tmp_path):
    """R-50.pkl style: affine-only norms (no running stats), a classifier, momentum blobs."""
    cfg = _rcnn(tiny_cfg)
    cfg.MODEL.BACKBONE.NORM = "FrozenBN"
    src = _randomize(build_model(cfg), 5)
    names = {
        k: v for k, v in export_state_dict(src, "caffe2").items() if k.startswith(("res", "conv1"))
    }
    names = {k: v for k, v in names.items() if not k.endswith(("_rm", "_riv"))}
    blobs = _numpy(names)
    blobs["fc1000_w"] = np.zeros((1000, 8), np.float32)
    blobs["res2_0_branch2a_w_momentum"] = np.zeros(1, np.float32)
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps(blobs, protocol=2))
    dst = _randomize(build_model(cfg), 6)
    report = load_model_weights(dst, str(path))
    assert report["unexpected"] == ["fc1000_w"]
    assert [a for a in report["adapted"] if "running_mean/var = 0/1" in a] == [
        "running_mean/var = 0/1 in 12 norms without statistics in the file (backbone.bn1, ...)"
    ]
    assert torch.equal(dst.backbone.bn1.running_mean, torch.zeros_like(src.backbone.bn1.bias))
    assert torch.equal(
        dst.backbone.layer2[0].bn1.running_var,
        torch.ones(dst.backbone.layer2[0].bn1.running_var.shape),
    )
    assert torch.equal(dst.backbone.layer3[0].conv2.weight, src.backbone.layer3[0].conv2.weight)
    assert not any(k.startswith("backbone.") for k in report["missing"])


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["evil.pkl", "evil.pth"])
def test_a_pickle_that_names_os_system_is_refused_and_never_runs(tiny_cfg, tmp_path, name):
    marker = tmp_path / "ran"
    payload = {"model": {"w": np.zeros(3), "x": _Evil(str(marker))}, "__author__": "x"}
    path = tmp_path / name
    path.write_bytes(pickle.dumps(payload, protocol=2))
    model = build_model(_rcnn(tiny_cfg))
    with pytest.raises(UnsafePickleError) as info:
        load_model_weights(model, str(path))
    assert "system" in str(info.value) and "nothing in the file was run" in str(info.value)
    assert not marker.exists()


def test_restricted_unpickler_admits_only_arrays_and_containers():
    from collections import OrderedDict

    good = {"a": np.arange(3, dtype=np.float32), "b": [1, 2.5, "x", (b"y", None)]}
    good["c"] = OrderedDict(d=np.float64(2.0), e=np.int64(3))
    loaded = load_restricted_pickle(pickle.dumps(good, protocol=2))
    assert np.array_equal(loaded["a"], good["a"]) and loaded["b"] == good["b"]
    assert loaded["c"]["d"] == 2.0 and loaded["c"]["e"] == 3
    assert np.array_equal(
        load_restricted_pickle(pickle.dumps(np.ones((2, 2)), protocol=5)), np.ones((2, 2))
    )
    for bad in (eval, getattr, torch.nn.Linear(1, 1), pickle.loads):
        with pytest.raises(UnsafePickleError):
            load_restricted_pickle(pickle.dumps(bad))
    with pytest.raises(UserError, match="not a readable pickle"):
        load_restricted_pickle(b"\x80\x02}q\x00(X\x01")


def test_a_file_that_fits_nothing_is_an_error(tiny_cfg, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(3), "decoder.bias": torch.zeros(2)}}, path)
    with pytest.raises(UserError, match=r"matches nothing in this FasterRCNN \(0 of 2 tensors"):
        load_model_weights(build_model(_rcnn(tiny_cfg)), str(path))


# ---------------------------------------------------------------------- Detectron2 itself
def _d2_and_detlab(zoo_file: str, opts: list[str]):
    from detectron2.config import get_cfg as d2_get_cfg
    from detectron2.modeling import build_model as d2_build

    from detlab.config import load_config

    d2cfg = d2_get_cfg()
    d2cfg.merge_from_file(zoo_file, allow_unsafe=True)  # our own fixture; Detectron2 runs eval
    d2cfg.merge_from_list([*opts, "MODEL.DEVICE", "cpu"])
    ours = load_config(zoo_file, [*opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    return d2_build(d2cfg).eval(), build_model(ours).eval()


@needs_d2
@pytest.mark.parametrize("depth", [18, pytest.param(50, marks=pytest.mark.slow)])
def test_checkpoint_saved_by_detectron2_loads_with_identical_features(d2_zoo, tmp_path, depth):
    """R-18 (BasicBlocks) in the default suite; R-50 also checks the stride in the 1x1 conv."""
    from detectron2.checkpoint import DetectionCheckpointer

    opts = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
            "MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.RESNETS.DEPTH", str(depth),
            "MODEL.RESNETS.RES2_OUT_CHANNELS", "64" if depth < 50 else "256"]  # fmt: skip
    theirs, ours = _d2_and_detlab(str(d2_zoo / "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"), opts)
    _randomize(theirs, 7)
    DetectionCheckpointer(theirs, save_dir=str(tmp_path)).save("model_final")
    report = load_model_weights(ours, str(tmp_path / "model_final.pth"))
    assert report["names"] == "detectron2"
    assert not report["missing"] and not report["unexpected"] and not report["skipped"]
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f_theirs = theirs.backbone(x)
        f_ours = ours.neck(ours.backbone(x.contiguous(memory_format=torch.channels_last)))
        assert list(f_theirs) == list(f_ours) == ["p2", "p3", "p4", "p5", "p6"]
        for k in f_theirs:  # ResNet, FPN, max-pooled P6
            # float rounding over 50 random layers: compare relative to the feature scale
            scale = float(f_theirs[k].abs().max())
            torch.testing.assert_close(f_ours[k], f_theirs[k], rtol=1e-5, atol=1e-5 * scale)
        levels = [f_theirs[k] for k in theirs.proposal_generator.in_features]
        logits_t, deltas_t = theirs.proposal_generator.rpn_head(levels)
        logits_o, deltas_o = ours.proposal_generator.predict(
            [f_ours[k] for k in ours.rpn_in_features]
        )
        for lt, lo in zip(logits_t, logits_o, strict=True):
            scale = float(lt.abs().max())
            torch.testing.assert_close(
                lo, lt.permute(0, 2, 3, 1).flatten(1), rtol=1e-5, atol=1e-5 * scale
            )
        pooled = torch.randn(5, 32, 7, 7, generator=torch.Generator().manual_seed(1))
        scores_t, deltas_t = theirs.roi_heads.box_predictor(theirs.roi_heads.box_head(pooled))
        h = ours.roi_heads.box_head(pooled)
        torch.testing.assert_close(ours.roi_heads.cls_score(h), scores_t, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.roi_heads.bbox_pred(h), deltas_t, rtol=1e-4, atol=1e-4)


@needs_d2
def test_detections_of_a_detectron2_faster_rcnn_checkpoint_match_detectron2(d2_zoo, tmp_path):
    """The whole Faster R-CNN (anchors, RPN top-k and NMS, ROIAlignV2 pooling, box head,
    class-wise NMS, rescaling) gives Detectron2's detections on a checkpoint it saved."""
    from detectron2.checkpoint import DetectionCheckpointer

    from detlab.export import compare_detections

    opts = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
            "MODEL.ROI_HEADS.NUM_CLASSES", "3", "MODEL.RESNETS.DEPTH", "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]  # fmt: skip
    torch.manual_seed(0)
    theirs, ours = _d2_and_detlab(str(d2_zoo / "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"), opts)
    assert ours.roi_heads.pooler.aligned and ours.roi_heads.pooler.level_rule == "detectron2"
    torch.manual_seed(8)  # Detectron2's own initialisation, predictors spread out
    with torch.no_grad():  # so that scores and boxes differ and ties are rare
        theirs.roi_heads.box_predictor.cls_score.weight.normal_(0, 0.003)
        theirs.roi_heads.box_predictor.bbox_pred.weight.normal_(0, 0.02)
        theirs.proposal_generator.rpn_head.objectness_logits.weight.normal_(0, 0.2)
    DetectionCheckpointer(theirs, save_dir=str(tmp_path)).save("model_final")
    load_model_weights(ours, str(tmp_path / "model_final.pth"))
    g = torch.Generator().manual_seed(9)
    batch = [
        {"image": torch.rand(3, 128, 160, generator=g) * 255, "height": 256, "width": 320},
        {"image": torch.rand(3, 96, 128, generator=g) * 255, "height": 96, "width": 128},
    ]
    with torch.no_grad():
        d2_out = theirs(batch)
        our_out = ours(batch)
    for t, o in zip(d2_out, our_out, strict=True):
        t, o = t["instances"], o["instances"]
        assert len(t) > 20 and len(set(t.pred_classes.tolist())) > 1
        res = compare_detections(
            (t.pred_boxes.tensor.numpy(), t.scores.numpy(), t.pred_classes.numpy()),
            (o.boxes.numpy(), o.scores.numpy(), o.classes.numpy()),
            score_thresh=0.05,
            max_detections=100,
            box_tol=0.05,
            score_tol=1e-4,
        )
        assert res["unmatched"] == 0 and res["matched"] >= len(t) - 2, res
