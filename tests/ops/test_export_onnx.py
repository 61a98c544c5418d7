"""ONNX export of the detectors: dynamic size, NMS in the graph, detections match eager."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from detlab.config import load_config
from detlab.export import compare_detections, export_onnx
from detlab.export.cli import main as export_main
from detlab.modeling import build_model


def _op_types(graph) -> set[str]:
    """Operator types of a graph and all its subgraphs (If/Loop bodies)."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attr in node.attribute:
            for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                ops |= _op_types(g)
    return ops


def _trained_like_weights(cfg_path: str, path: str) -> None:
    """A tiny model with spread-out weights (scores far from ties), saved as a checkpoint."""
    torch.manual_seed(0)
    model = build_model(load_config(cfg_path))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.03)
    torch.save({"model": model.state_dict(), "iteration": 0}, path)


@pytest.mark.parametrize("arch", ["FCOS", "FasterRCNN", "RetinaNet", "YOLO"])
def test_export_matches_eager_on_images_of_several_sizes(tmp_path, tiny_config, arch, capsys):
    cfg_path = tiny_config(arch)
    weights = str(tmp_path / "w.pth")
    _trained_like_weights(cfg_path, weights)
    out = str(tmp_path / f"{arch}.onnx")
    argv = ["--config-file", cfg_path, "MODEL.WEIGHTS", weights, "--output", out]
    argv += ["--num-samples", "2", "--repeats", "1", "--json"]
    assert export_main(argv) == 0
    report = json.loads(capsys.readouterr().out)  # stdout holds the JSON object only
    assert report["ok"] and report["arch"] == arch and report["output"] == out
    samples = report["samples"]
    assert len({(s["height"], s["width"]) for s in samples}) >= 2  # dynamic image size
    assert sum(s["eager_detections"] for s in samples) > 0
    for s in samples:
        assert s["matched"] == s["eager_detections"] == s["onnx_detections"]
        assert s["max_box_diff"] <= 0.1 and s["max_score_diff"] <= 1e-3
        assert s["eager_ms"] > 0 and s["onnx_ms"] > 0

    graph = onnx.load(out).graph
    assert "NonMaxSuppression" in _op_types(graph)
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[2:]] == ["height", "width"]

    # independent check on a new size: the ONNX model against the eager model directly
    cfg = load_config(cfg_path, ["MODEL.WEIGHTS", weights])
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    img = torch.rand(1, 72, 88, generator=torch.Generator().manual_seed(5)) * 255
    with torch.no_grad():
        ref = model([{"image": img, "height": 72, "width": 88}])[0]["instances"]
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    boxes, scores, classes = sess.run(None, {"image": img[None].numpy()})
    assert len(scores) == len(ref.scores)
    for b, sc, c in zip(ref.boxes.numpy(), ref.scores.numpy(), ref.classes.numpy(), strict=True):
        close = (np.abs(boxes - b).max(1) <= 0.1) & (np.abs(scores - sc) <= 1e-3) & (classes == c)
        assert close.any(), (b, sc, c)


def test_compare_detections_flags_shifted_boxes_and_forgives_cutoff_scores():
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.9, 0.5], np.float32)
    classes = np.array([0, 1])
    same = compare_detections(
        (boxes, scores, classes), (boxes + 0.01, scores, classes),
        score_thresh=0.05, max_detections=100,
    )  # fmt: skip
    assert same["matched"] == 2 and same["unmatched"] == 0
    shifted = boxes.copy()
    shifted[1] += 1.0
    bad = compare_detections(
        (boxes, scores, classes), (shifted, scores, classes), score_thresh=0.05, max_detections=100
    )
    assert bad["matched"] == 1 and bad["unmatched"] == 2
    other_class = compare_detections(
        (boxes, scores, classes), (boxes, scores, classes[::-1]),
        score_thresh=0.05, max_detections=100,
    )  # fmt: skip
    assert other_class["unmatched"] == 4
    # an extra ONNX detection right at the score threshold is a rounding case, not an error
    extra = compare_detections(
        (boxes, scores, classes),
        (np.vstack([boxes, [[1, 1, 5, 5]]]), np.append(scores, 0.0504), np.append(classes, 0)),
        score_thresh=0.05,
        max_detections=100,
    )
    assert extra["unmatched"] == 0 and extra["unmatched_borderline"] == 1


def test_compare_detections_forgives_only_equal_score_nms_swaps():
    # eager kept box A, ONNX kept the overlapping box B of equal (saturated) score
    a, b = [0.0, 0.0, 20.0, 4.0], [0.0, 0.0, 28.0, 4.0]  # IoU 80/112 = 0.71
    keep = [40.0, 40.0, 50.0, 50.0]
    eager = (np.array([keep, a], np.float32), np.array([1.0, 1.0], np.float32), np.array([0, 0]))
    onnx = (np.array([keep, b], np.float32), np.array([1.0, 1.0], np.float32), np.array([0, 0]))
    kw = {"score_thresh": 0.001, "max_detections": 100}
    swap = compare_detections(eager, onnx, nms_thresh=0.7, **kw)
    assert swap["matched"] == 1 and swap["unmatched"] == 0 and swap["unmatched_borderline"] == 2
    # without the NMS threshold, at a stricter one, with unequal scores or another class: errors
    assert compare_detections(eager, onnx, **kw)["unmatched"] == 2
    assert compare_detections(eager, onnx, nms_thresh=0.75, **kw)["unmatched"] == 2
    lower = (onnx[0], np.array([1.0, 0.9], np.float32), onnx[2])
    assert compare_detections(eager, lower, nms_thresh=0.7, **kw)["unmatched"] == 2
    other = (onnx[0], onnx[1], np.array([0, 1]))
    assert compare_detections(eager, other, nms_thresh=0.7, **kw)["unmatched"] == 2


def test_export_without_weights_or_with_a_bad_key_is_one_line(tmp_path, tiny_config, capsys):
    cfg_path = tiny_config()
    assert export_main(["--config-file", cfg_path, "--output", str(tmp_path / "m.onnx")]) == 2
    assert "MODEL.WEIGHTS" in capsys.readouterr().err
    assert export_main(["--config-file", cfg_path, "MODEL.WEIGHT", "x.pth"]) == 2
    err = capsys.readouterr().err
    assert "Unknown config key MODEL.WEIGHT" in err and len(err.strip().splitlines()) == 1


def test_export_api_writes_a_checked_graph(tmp_path, tiny_config):
    model = build_model(load_config(tiny_config()))
    path = str(tmp_path / "api.onnx")
    export_onnx(model, path, torch.rand(1, 64, 64) * 255)
    onnx.checker.check_model(onnx.load(path))


def test_aligned_roi_pooling_exports_and_matches_eager(tmp_path, tiny_config):
    """Faster R-CNN with Detectron2's ROIAlignV2 pooler: the ONNX graph gives eager's output."""
    from detlab.export import verify_onnx

    cfg_path = tiny_config("FasterRCNN")
    weights = str(tmp_path / "w.pth")
    _trained_like_weights(cfg_path, weights)
    cfg = load_config(cfg_path, ["MODEL.ROI_BOX_HEAD.POOLER_TYPE", "ROIAlignV2"])
    model = build_model(cfg).eval()
    model.load_state_dict(torch.load(weights, weights_only=True)["model"])
    path = str(tmp_path / "aligned.onnx")
    g = torch.Generator().manual_seed(2)
    images = [torch.rand(1, 64, 64, generator=g) * 255, torch.rand(1, 72, 96, generator=g) * 255]
    export_onnx(model, path, images[0])
    checks = verify_onnx(model, path, images)
    assert all(c.ok for c in checks) and sum(c.eager_detections for c in checks) > 0
