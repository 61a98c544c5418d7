"""Property-based checks (hypothesis): boxes stay valid and classes stay attached."""

from __future__ import annotations

import cv2
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detlab.data import ShipSARMapper
from detlab.data.mappers.ship_sar import sar_augmentations

VALUES = (70, 140, 210)  # pixel value painted inside the objects of class 0, 1, 2

GEOMETRIC = st.lists(
    st.sampled_from(
        [
            {"name": "HorizontalFlip", "p": 1.0},
            {"name": "VerticalFlip", "p": 1.0},
            {"name": "RandomRotate90", "p": 1.0},
            {"name": "Transpose", "p": 1.0},
            {"name": "Affine", "scale": (0.8, 1.2), "translate_percent": (-0.1, 0.1), "p": 1.0},
        ]
    ),
    max_size=3,
)


@st.composite
def scenes(draw):
    """An 8-bit image with up to 4 separated rectangles, each painted with its class value."""
    h = draw(st.integers(48, 96))
    w = draw(st.integers(48, 96))
    img = np.zeros((h, w), np.uint8)
    boxes, classes = [], []
    cells = [(r, c) for r in range(2) for c in range(2)]
    for r, c in draw(st.lists(st.sampled_from(cells), min_size=1, max_size=4, unique=True)):
        ch, cw = h // 2, w // 2
        bw = draw(st.integers(8, cw - 4))
        bh = draw(st.integers(8, ch - 4))
        x = c * cw + draw(st.integers(2, cw - bw - 2))
        y = r * ch + draw(st.integers(2, ch - bh - 2))
        k = draw(st.integers(0, 2))
        img[y : y + bh, x : x + bw] = VALUES[k]
        boxes.append([x, y, bw, bh])
        classes.append(k)
    return img, boxes, classes


def _run(tmp_path, img, boxes, classes, mapper, seed):
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), img)
    d = {
        "file_name": str(path),
        "height": img.shape[0],
        "width": img.shape[1],
        "image_id": 1,
        "annotations": [
            {"bbox": b, "category_id": c, "iscrowd": 0} for b, c in zip(boxes, classes, strict=True)
        ],
    }
    return mapper(d, np.random.default_rng(seed))


def _check_valid(out):
    inst = out["instances"]
    h, w = out["image"].shape[1:]
    assert inst.image_size == (h, w)
    b = inst.boxes
    assert b.dtype.is_floating_point and b.shape == (len(inst.classes), 4)
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scene=scenes(),
    augs=GEOMETRIC,
    angle=st.sampled_from([0.0, 15.0, 45.0]),
    size=st.sampled_from([0, 40, 120]),
    seed=st.integers(0, 2**32 - 1),
)
def test_geometric_augmentations_keep_boxes_valid_and_classes_attached(
    tmp_path, scene, augs, angle, size, seed
):
    img, boxes, classes = scene
    sar = sar_augmentations(rotation_angle=angle, rotation_prob=1.0, brightness=0.0, contrast=0.0)
    mapper = ShipSARMapper(
        True,
        scaling="none",
        sar_augs=sar,
        augmentations=augs,
        min_size=size,
        max_size=0,
        out_channels=1,
    )
    out = _run(tmp_path, img, boxes, classes, mapper, seed)
    _check_valid(out)
    image = out["image"][0].numpy()
    h, w = image.shape
    assert len(out["instances"]) <= len(boxes)
    for (x0, y0, x1, y1), k in zip(
        out["instances"].boxes.tolist(), out["instances"].classes.tolist(), strict=True
    ):
        if min(x1 - x0, y1 - y0) < 4:
            continue  # mostly cut away at the border; nothing left to look at
        if x0 < 1 or y0 < 1 or x1 > w - 1 or y1 > h - 1:
            continue  # clipped at the border: its centre is no longer the object's centre
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        # the object painted for this class is under the centre of its box
        assert abs(float(image[cy, cx]) - VALUES[k]) < 30, (k, image[cy, cx])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(scene=scenes(), seed=st.integers(0, 2**32 - 1), speckle=st.booleans())
def test_photometric_augmentations_leave_boxes_alone(tmp_path, scene, seed, speckle):
    img, boxes, classes = scene
    sar = sar_augmentations(
        hflip=0, vflip=0, rot90=0, brightness=0.3, contrast=0.3, brightness_contrast_prob=1.0
    )
    mapper = ShipSARMapper(
        True,
        sar_augs=sar,
        augmentations=[{"name": "GaussNoise", "p": 1.0}],
        min_size=0,
        speckle_prob=1.0 if speckle else 0.0,
        out_channels=3,
    )
    out = _run(tmp_path, img, boxes, classes, mapper, seed)
    _check_valid(out)
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    assert out["instances"].boxes.tolist() == xyxy
    assert out["instances"].classes.tolist() == classes
    assert 0 <= float(out["image"].min()) and float(out["image"].max()) <= 255
