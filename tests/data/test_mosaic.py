"""Mosaic / mixup / affine / HSV pipeline: boxes follow the pixels, closing by batch index
resumes exactly, single-channel images skip HSV, letterbox resizing."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from detlab.data import build_detection_train_loader
from detlab.data.mappers.dataset_mapper import DatasetMapper
from detlab.data.mappers.mosaic import MosaicMapper, affine_boxes, hsv_jitter
from detlab.utils.errors import UserError


def _flat_set(root, n=6, size=64, value_step=20, box=True):
    """n images, image i a flat grey level 20·(i+1) with (optionally) one white box."""
    dicts = []
    for i in range(n):
        img = np.full((size, size), value_step * (i + 1), np.uint8)
        anns = []
        if box:
            x0, y0 = 8 + 3 * i, 10 + 2 * i
            img[y0 : y0 + 20, x0 : x0 + 16] = 255
            anns = [{"bbox": [x0, y0, 16, 20], "category_id": 0, "iscrowd": 0}]
        path = os.path.join(root, f"{i}.png")
        cv2.imwrite(path, img)
        dicts.append({"file_name": path, "height": size, "width": size, "image_id": i,
                      "annotations": anns})  # fmt: skip
    return dicts


def _mosaic(dicts, **kw):
    inner = DatasetMapper(True, out_channels=1, image_format="L")
    args = {"size": 64, "mosaic_prob": 1.0, "translate": 0.0, "scale": (1.0, 1.0)}
    return MosaicMapper(inner, dicts, **{**args, **kw})


def test_boxes_follow_the_pixels(tmp_path):
    dicts = _flat_set(str(tmp_path), value_step=10)  # backgrounds 10..60, boxes 255
    mapper = _mosaic(
        dicts, mixup_prob=0.5, degrees=5.0, scale=(0.8, 1.2), translate=0.1, pad_value=0
    )
    seen = 0
    for k in range(20):
        out = mapper(dicts[k % len(dicts)], np.random.default_rng(k))
        img = out["image"][0].numpy()
        assert img.shape == (64, 64)
        for x0, y0, x1, y1 in out["instances"].boxes.numpy():
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            inner = img[int(np.ceil(y0)) + 2 : int(y1) - 2, int(np.ceil(x0)) + 2 : int(x1) - 2]
            if inner.size >= 16:  # the box's core is the white rectangle (mixup dims it)
                assert inner.mean() > 90, (k, (x0, y0, x1, y1), inner.mean())
                seen += 1
    assert seen >= 10


def test_same_rng_same_output_and_mosaic_mixes_images(tmp_path):
    dicts = _flat_set(str(tmp_path), box=False)
    mapper = _mosaic(dicts)
    a = mapper(dicts[0], np.random.default_rng(3))["image"]
    b = mapper(dicts[0], np.random.default_rng(3))["image"]
    assert (a == b).all()
    levels = {v for v in np.unique(a.numpy()) if v % 20 == 0}
    assert len(levels) >= 2  # parts of several images
    closed = mapper.closed()(dicts[0], np.random.default_rng(3))["image"]
    assert set(np.unique(closed.numpy())) == {20.0}  # one letterboxed image, no padding


def _mosaic_loader_cfg(accum: int = 1):
    from detlab.config import get_cfg

    cfg = get_cfg()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.MAPPER = "DatasetMapper"
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    cfg.MODEL.BACKBONE.IN_CHANNELS = 1
    cfg.INPUT.FORMAT = "L"
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.INPUT.MOSAIC.ENABLED = True
    cfg.INPUT.MOSAIC.SIZE = 64
    cfg.INPUT.MOSAIC.CLOSE_ITERS = 3
    cfg.INPUT.RANDOM_AFFINE.TRANSLATE = 0.0
    cfg.INPUT.RANDOM_AFFINE.SCALE = (1.0, 1.0)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.GRAD_ACCUM_STEPS = accum
    cfg.SOLVER.MAX_ITER = 6
    cfg.SEED = 11
    return cfg


@pytest.mark.parametrize("accum", [1, 2])
def test_closing_by_batch_index_resumes_exactly(tmp_path, accum):
    """MAX_ITER 6, CLOSE_ITERS 3: iterations 3..5 (loader batches 3·accum and later) are
    closed; a loader restarted at iteration 4 gives the same images and boxes."""
    dicts = _flat_set(str(tmp_path), n=8, box=True)
    cfg = _mosaic_loader_cfg(accum)

    def batches(start, n):
        it = iter(build_detection_train_loader(cfg, start_iter=start, dataset=dicts))
        return [next(it) for _ in range(n)]

    full = batches(0, 6 * accum)
    grey = [[len({v for v in np.unique(x["image"].numpy()) if v != 255}) for x in b] for b in full]
    assert all(n == 1 for b in grey[3 * accum :] for n in b)  # closed: one image each
    assert all(max(b) > 1 for b in grey[: 3 * accum])  # mosaics in every batch before
    resumed = batches(4 * accum, 2 * accum)
    tail = [x for b in full[4 * accum :] for x in b]
    for x, y in zip(tail, [x for b in resumed for x in b], strict=True):
        assert (x["image"] == y["image"]).all()
        assert (x["instances"].boxes == y["instances"].boxes).all()


def test_mosaic_loader_draws_nothing_from_the_global_generators(tmp_path):
    """The mosaic pipeline honours the mapper contract: all randomness from the rng the loader
    passes (so the global generators are neither reseeded nor advanced), and the same seed
    gives the same batches whatever the global state."""
    import random

    import torch

    dicts = _flat_set(str(tmp_path), n=8, box=True)
    cfg = _mosaic_loader_cfg()
    cfg.INPUT.MOSAIC.MIXUP_PROB = 0.5
    cfg.INPUT.RANDOM_AFFINE.DEGREES = 10.0
    cfg.INPUT.HSV = (0.5, 0.5, 0.5)

    def run(global_seed):
        random.seed(global_seed)
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
        before = (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state())
        it = iter(build_detection_train_loader(cfg, dataset=dicts))
        out = [next(it) for _ in range(6)]  # mosaic batches and closed ones
        assert random.getstate() == before[0]
        assert (np.random.get_state()[1] == before[1]).all()
        assert torch.equal(torch.get_rng_state(), before[2])
        return out

    a, b = run(0), run(1)
    for x, y in zip([x for bt in a for x in bt], [x for bt in b for x in bt], strict=True):
        assert torch.equal(x["image"], y["image"])


def test_mosaic_mapper_is_called_with_the_loader_rng(tmp_path):
    """``MosaicMapper`` has the MAPPER contract's call shape and no generator of its own."""
    from detlab.data.mappers.build import check_mapper

    dicts = _flat_set(str(tmp_path), n=4)
    mapper = _mosaic(dicts)
    check_mapper(mapper)
    check_mapper(mapper.closed())
    with pytest.raises(TypeError):
        mapper(dicts[0])


def test_affine_boxes_and_filters():
    boxes = np.array([[10, 10, 30, 20], [0, 0, 1, 1]], np.float32)
    same, keep = affine_boxes(boxes, np.array([[1.0, 0, 0], [0, 1.0, 0]]), 64, 1.0)
    assert keep.tolist() == [True, False]  # the 1-px box is dropped
    np.testing.assert_allclose(same[0], boxes[0])
    # 90° rotation about (32, 32): x' = 64 - y, y' = x
    rot = np.array([[0.0, -1.0, 64.0], [1.0, 0.0, 0.0]])
    out, keep = affine_boxes(boxes[:1], rot, 64, 1.0)
    np.testing.assert_allclose(out[0], [44, 10, 54, 30])


def test_hsv_only_touches_three_channel_images():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (16, 16, 1), dtype=np.uint8)
    assert hsv_jitter(grey, (0.5, 0.7, 0.4), rng) is grey
    colour = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
    out = hsv_jitter(colour, (0.5, 0.7, 0.4), np.random.default_rng(1))
    assert out.shape == colour.shape and out.dtype == np.uint8 and (out != colour).any()
    as_float = hsv_jitter(
        colour.astype(np.float32) / 255, (0.5, 0.7, 0.4), np.random.default_rng(1)
    )
    assert as_float.dtype == np.float32 and 0 <= as_float.min() and as_float.max() <= 1.0001


def test_letterbox_mode_keeps_aspect(tmp_path):
    path = str(tmp_path / "wide.png")
    cv2.imwrite(path, np.zeros((50, 100), np.uint8))
    d = {"file_name": path, "height": 50, "width": 100, "image_id": 0,
         "annotations": [{"bbox": [10, 10, 20, 10], "category_id": 0}]}  # fmt: skip
    mapper = DatasetMapper(False, out_channels=1, max_size=64, resize_mode="letterbox")
    out = mapper(d, np.random.default_rng(0))
    assert out["image"].shape == (1, 32, 64)
    assert out["height"] == 50 and out["width"] == 100
    with pytest.raises(UserError, match="RESIZE_MODE"):
        DatasetMapper(False, resize_mode="pad")


def test_mosaic_refuses_a_mapper_without_stages(tmp_path):
    with pytest.raises(UserError, match="DatasetMapper"):
        MosaicMapper(lambda d, rng: d, [])
