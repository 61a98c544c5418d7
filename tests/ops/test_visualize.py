"""Visualizer: boxes drawn where the annotations are, class colours, SAR scaling, the tool."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
import torch

from detlab.visualization.cli import main as visualize_main
from detlab.visualization.draw import (
    class_colors,
    draw_boxes,
    draw_on_tensor,
    to_display_image,
)


def _edge_pixels(x, y, w, h):
    """Pixels on the four edges of an XYWH box (as drawn with width 1), without corners."""
    x1, y1 = x + w - 1, y + h - 1
    left = [(y + k, x) for k in range(2, h - 2)]
    right = [(y + k, x1) for k in range(2, h - 2)]
    bottom = [(y1, x + k) for k in range(2, w - 2)]
    return left + right + bottom


def _colour_fraction(img_rgb, pixels, colour):
    hits = sum(tuple(int(v) for v in img_rgb[r, c]) == tuple(colour) for r, c in pixels)
    return hits / len(pixels)


def test_gt_boxes_are_drawn_on_the_annotation_edges_in_the_class_colour(
    tmp_path, tiny_config, tiny_boxes
):
    cfg = tiny_config()
    out = tmp_path / "vis"
    status = visualize_main(["--config-file", cfg, "--output", str(out), "--num-images", "0"])
    assert status == 0
    folders = os.listdir(out)
    assert len(folders) == 1
    files = sorted(os.listdir(out / folders[0]))
    assert len(files) == len(tiny_boxes)
    colours = class_colors(2)
    for image_id, boxes in tiny_boxes.items():
        (name,) = [f for f in files if f.startswith(f"{image_id}_")]
        img = cv2.imread(str(out / folders[0] / name), cv2.IMREAD_COLOR)[:, :, ::-1]
        for (x, y, w, h), cat in boxes:
            colour = colours[cat - 1]  # category ids 1, 2 -> contiguous 0, 1
            assert _colour_fraction(img, _edge_pixels(x, y, w, h), colour) == 1.0
            # the box interior (bright target, grey) is left as it was
            inner = [(y + h // 2, x + w // 2), (y + 3, x + 3)]
            assert _colour_fraction(img, inner, colour) == 0.0


def test_predictions_json_drawn_dashed_above_threshold_only(tmp_path, tiny_config, tiny_coco):
    preds = [
        {"image_id": 2, "category_id": 1, "bbox": [10, 30, 30, 20], "score": 0.9},
        {"image_id": 2, "category_id": 2, "bbox": [4, 4, 50, 50], "score": 0.1},
    ]
    pred_file = tmp_path / "preds.json"
    pred_file.write_text(json.dumps(preds))
    out = tmp_path / "vis"
    args = ["--config-file", tiny_config(), "--output", str(out), "--image-ids", "2"]
    args += ["--predictions", str(pred_file), "--source", "pred", "--no-labels"]
    assert visualize_main(args) == 0
    (folder,) = os.listdir(out)
    (name,) = os.listdir(out / folder)
    img = cv2.imread(str(out / folder / name))[:, :, ::-1]
    c0, c1 = class_colors(2)
    shown = _colour_fraction(img, _edge_pixels(10, 30, 30, 20), c0)
    assert 0.4 < shown < 1.0  # dashed: coloured with gaps
    assert _colour_fraction(img, _edge_pixels(4, 4, 50, 50), c1) == 0.0  # below 0.3
    # ground truth not requested: its edges keep the image's grey pixels
    assert _colour_fraction(img, _edge_pixels(30, 6, 24, 12), c1) == 0.0


def test_sar_display_scaling_of_16bit_images_uses_the_range():
    rng = np.random.default_rng(1)
    img = (rng.gamma(1.0, 200.0, (40, 50)) + 1).astype(np.uint16)  # dark 16-bit amplitude
    naive = to_display_image(img, scaling="none")
    sar = to_display_image(img, scaling="auto")
    assert sar.shape == (40, 50, 3) and sar.dtype == np.uint8
    assert naive.max() <= 10  # full-range scaling of 16-bit data shows black
    assert np.percentile(sar, 99) >= 200 and np.percentile(sar, 1) <= 30
    assert (sar[..., 0] == sar[..., 1]).all()  # grey


def test_colours_differ_per_class_and_fixed_colour_overrides():
    cols = class_colors(6)
    assert len(set(cols)) == 6
    img = np.zeros((30, 30, 3), np.uint8)
    drawn = draw_boxes(img, [[2, 2, 20, 20], [5, 5, 25, 25]], [0, 3], labels=False)
    assert tuple(drawn[10, 2]) == cols[0] and tuple(drawn[10, 5]) == cols[3]
    fixed = draw_boxes(img, [[2, 2, 20, 20]], [4], color=(1, 2, 3), labels=False)
    assert tuple(fixed[10, 2]) == (1, 2, 3)
    assert (img == 0).all()  # input untouched


def test_tensor_helper_for_tensorboard_matches_numpy_drawing():
    image = torch.rand(1, 32, 40) * 255
    gt = torch.tensor([[4.0, 5.0, 20.0, 25.0]])
    out = draw_on_tensor(image, gt_boxes=gt, gt_classes=torch.tensor([1]), labels=False)
    assert out.shape == (3, 32, 40) and out.dtype == torch.uint8
    colour = class_colors(2)[1]
    assert tuple(out[:, 10, 4].tolist()) == colour and tuple(out[:, 24, 10].tolist()) == colour


def test_bad_inputs_are_one_line_errors(tmp_path, tiny_config, capsys):
    cfg = tiny_config()
    assert visualize_main(["--config-file", cfg, "--predictions", str(tmp_path / "no.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert visualize_main(["--config-file", cfg, "--image-ids", "99"]) == 2
    assert "99" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["FCOS"])
def test_predictions_from_a_model(tmp_path, tiny_config, arch):
    from detlab.config import load_config
    from detlab.modeling import build_model

    cfg_path = tiny_config(arch)
    model = build_model(load_config(cfg_path))
    weights = tmp_path / "m.pth"
    torch.save({"model": model.state_dict()}, weights)
    out = tmp_path / "vis"
    args = ["--config-file", cfg_path, "--output", str(out), "--num-images", "2"]
    args += ["--score-thresh", "0.0", "MODEL.WEIGHTS", str(weights)]
    assert visualize_main(args) == 0
    (folder,) = os.listdir(out)
    assert len(os.listdir(out / folder)) == 2


def test_tensorboard_samples_use_the_shared_drawing():
    from detlab.engine.samples import draw_detections

    image = torch.rand(3, 32, 32) * 255
    gt, pred = torch.tensor([[2.0, 2.0, 20.0, 20.0]]), torch.tensor([[8.0, 8.0, 30.0, 30.0]])
    out = draw_detections(image, gt, pred)
    same = draw_on_tensor(
        image, gt_boxes=gt, pred_boxes=pred, gt_color=(0, 255, 0), pred_color=(255, 0, 0),
        labels=False,
    )  # fmt: skip
    assert torch.equal(out, same)
    assert tuple(out[:, 10, 2].tolist()) == (0, 255, 0)
    assert tuple(out[:, 29, 8].tolist()) == (255, 0, 0)  # first dash of the bottom edge


def test_a_coco_json_without_config_uint8_images(tmp_path, make_tiny_coco, tiny_boxes):
    json_file = make_tiny_coco("rgb8", dtype=np.uint8)
    out = tmp_path / "vis"
    argv = ["--gt", json_file, "--output", str(out), "--image-ids", "3", "--thickness", "2"]
    assert visualize_main(argv) == 0
    (folder,) = os.listdir(out)
    (name,) = os.listdir(out / folder)
    img = cv2.imread(str(out / folder / name))[:, :, ::-1]
    colour = class_colors(2)[0]
    for (x, y, w, h), _ in tiny_boxes[3]:
        assert _colour_fraction(img, _edge_pixels(x, y, w, h), colour) == 1.0
        # 2 px lines: the second pixel row/column inside the box is coloured too
        inner = [(y + h // 2, x + 1), (y + h // 2, x + w - 2)]
        assert _colour_fraction(img, inner, colour) == 1.0
