"""Mappers: 16-bit scaling, channels, corrupt images, augmentation by name, class-aware rules."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from detlab.data import ClassAwareMapper, DatasetMapper, ShipSARMapper, build_mapper
from detlab.data.transforms import sar_to_unit
from detlab.utils.errors import ContractError, UserError

_RNG = np.random.default_rng(0)  # eval mappers draw nothing; the contract passes a Generator


def _dict(path, h, w, boxes=((10, 12, 20, 8),), cats=(0,)):
    anns = [
        {"bbox": list(b), "category_id": c, "iscrowd": 0} for b, c in zip(boxes, cats, strict=True)
    ]
    return {"file_name": str(path), "height": h, "width": w, "image_id": 3, "annotations": anns}


def test_16bit_full_range_scaling_dataset_mapper(tmp_path):
    img = np.zeros((40, 50), np.uint16)
    img[:, :25] = 65535
    img[:, 25:] = 257 * 100  # = 100 on the 8-bit scale
    cv2.imwrite(str(tmp_path / "a.png"), img)
    m = DatasetMapper(False, min_size=0, out_channels=3)
    out = m(_dict(tmp_path / "a.png", 40, 50), np.random.default_rng(0))
    assert out["image"].shape == (3, 40, 50) and out["image"].dtype == torch.float32
    assert torch.allclose(out["image"][:, :, 0], torch.full((3, 40), 255.0))
    assert torch.allclose(out["image"][:, :, -1], torch.full((3, 40), 100.0))
    assert out["instances"].boxes.tolist() == [[10.0, 12.0, 30.0, 20.0]]
    assert (out["height"], out["width"], out["image_id"]) == (40, 50, 3)


def test_sar_db_scaling_matches_numpy_reference():
    rng = np.random.default_rng(0)
    img = rng.integers(1, 60000, size=(30, 40, 1)).astype(np.uint16)
    got = sar_to_unit(img, "db", (2.0, 98.0))
    db = 10 * np.log10(img.astype(np.float64))
    lo, hi = np.percentile(db, [2.0, 98.0], method="inverted_cdf")
    ref = np.clip((db - lo) / (hi - lo), 0, 1)
    assert np.abs(got - ref).max() < 1e-3
    # float input takes the direct path and agrees
    assert np.abs(sar_to_unit(img.astype(np.float32), "db", (2.0, 98.0)) - ref).max() < 0.02


def test_ship_sar_mapper_resizes_replicates_and_keeps_16bit_detail(tmp_path):
    img = np.full((64, 80), 400, np.uint16)
    img[20:28, 30:50] = 20000  # a bright ship
    cv2.imwrite(str(tmp_path / "s.tif"), img)
    m = ShipSARMapper(False, min_size=128, max_size=1000, out_channels=3)
    out = m(_dict(tmp_path / "s.tif", 64, 80, boxes=((30, 20, 20, 8),)), _RNG)
    assert out["image"].shape == (3, 128, 160)
    assert torch.equal(out["image"][0], out["image"][1])
    assert out["instances"].boxes.tolist() == [[60.0, 40.0, 100.0, 56.0]]
    x = out["image"][0]
    assert x[45:52, 65:95].mean() > 200 and x[:30].mean() < 60  # ship bright, sea dark


def test_corrupt_and_missing_images_return_none(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    m = DatasetMapper(True, min_size=0)
    assert m(_dict(tmp_path / "bad.png", 10, 10), _RNG) is None
    assert m(_dict(tmp_path / "missing.png", 10, 10), _RNG) is None


def test_degenerate_and_outside_boxes(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 20), np.uint8))
    from detlab.data import counters

    m = DatasetMapper(False, min_size=0)
    d = _dict(
        tmp_path / "a.png",
        20,
        20,
        boxes=((15, 15, 10, 10), (5, 5, 0, 3), (30, 1, 2, 2)),
        cats=(1, 0, 0),
    )
    with counters.collect() as c:
        out = m(d, np.random.default_rng(0))
    assert out["instances"].boxes.tolist() == [[15.0, 15.0, 20.0, 20.0]]
    assert out["instances"].classes.tolist() == [1]
    assert c["clipped_boxes"] == 1 and c["dropped_boxes"] == 2


def test_augmentations_by_name_and_bad_names(tmp_path, small_cfg):
    small_cfg.INPUT.AUGMENTATIONS = [{"name": "GaussNoise", "p": 1.0}]
    assert build_mapper(small_cfg, True).augment is not None
    small_cfg.INPUT.AUGMENTATIONS = [
        {"name": "OneOf", "p": 1.0, "transforms": [{"name": "VerticalFlip"}, {"name": "Blur"}]}
    ]
    compose = build_mapper(small_cfg, True).augment
    assert [type(t).__name__ for t in compose.transforms[-1].transforms] == ["VerticalFlip", "Blur"]
    small_cfg.INPUT.AUGMENTATIONS = [{"name": "HorizontalFlipp"}]
    with pytest.raises(UserError, match="HorizontalFlip"):
        build_mapper(small_cfg, True)
    small_cfg.INPUT.AUGMENTATIONS = [{"name": "Rotate", "limit": "abc"}]
    with pytest.raises(UserError, match="invalid parameters"):
        build_mapper(small_cfg, True)


def test_class_aware_refuses_one_class_dataset(tiny_sar, small_cfg):
    small_cfg.DATASETS.TRAIN = (tiny_sar(num_images=2),)
    small_cfg.DATALOADER.MAPPER = "ClassAwareMapper"
    with pytest.raises(UserError, match="ShipSARMapper or DatasetMapper"):
        build_mapper(small_cfg, True)


def test_class_aware_policy_applies_only_to_rare_class_images(tmp_path):
    img = np.zeros((32, 32), np.uint8)
    img[4:10, 2:20] = 200
    cv2.imwrite(str(tmp_path / "a.png"), img)
    policy = {"classes": ["rare"], "augmentations": [{"name": "HorizontalFlip", "p": 1.0}]}
    m = ClassAwareMapper(
        True,
        thing_classes=["common", "rare"],
        policies=[policy],
        sar_augs=[],
        scaling="none",
        min_size=0,
        out_channels=1,
    )
    common = m(_dict(tmp_path / "a.png", 32, 32, boxes=((2, 4, 18, 6),), cats=(0,)), _RNG)
    rare = m(_dict(tmp_path / "a.png", 32, 32, boxes=((2, 4, 18, 6),), cats=(1,)), _RNG)
    assert common["instances"].boxes.tolist() == [[2.0, 4.0, 20.0, 10.0]]
    assert rare["instances"].boxes.tolist() == [[12.0, 4.0, 30.0, 10.0]]
    assert torch.equal(rare["image"], torch.flip(common["image"], dims=[2]))
    with pytest.raises(UserError, match="unknown class 'nope'"):
        ClassAwareMapper(True, thing_classes=["a", "b"], policies=[{"classes": ["nope"]}])


def test_color_input_to_one_or_three_channels(tmp_path):
    img = np.zeros((16, 24, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 30, 60, 90  # B, G, R
    cv2.imwrite(str(tmp_path / "c.png"), img)
    d = _dict(tmp_path / "c.png", 16, 24, boxes=((1, 1, 5, 5),))
    bgr = DatasetMapper(False, min_size=0, out_channels=3, image_format="BGR")(d, _RNG)["image"]
    rgb = DatasetMapper(False, min_size=0, out_channels=3, image_format="RGB")(d, _RNG)["image"]
    grey = DatasetMapper(False, min_size=0, out_channels=1)(d, _RNG)["image"]
    assert bgr[:, 0, 0].tolist() == [30.0, 60.0, 90.0]
    assert rgb[:, 0, 0].tolist() == [90.0, 60.0, 30.0]
    assert grey.shape == (1, 16, 24) and float(grey[0, 0, 0]) == pytest.approx(60.0)
    img16 = (img.astype(np.uint16) * 257)[..., :1]
    cv2.imwrite(str(tmp_path / "g.tif"), img16)
    out = DatasetMapper(False, min_size=0, out_channels=3)(_dict(tmp_path / "g.tif", 16, 24), _RNG)
    assert out["image"][:, 3, 3].tolist() == [30.0, 30.0, 30.0]


def test_mapper_drops_non_finite_boxes_from_any_reader(tmp_path):
    from detlab.data import counters

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 50), np.uint8))
    nan, inf = float("nan"), float("inf")
    boxes = ((10, 12, 20, 8), (nan, 1, 5, 5), (1, 1, inf, 5), (1, inf, 5, 5))
    d = _dict(tmp_path / "a.png", 40, 50, boxes=boxes, cats=(0, 0, 0, 0))
    with counters.collect() as c:
        out = DatasetMapper(True, min_size=0, out_channels=1)(d, np.random.default_rng(0))
    assert torch.isfinite(out["instances"].boxes).all()
    assert len(out["instances"]) == 1 and c["dropped_boxes"] == 3


def test_mapper_contract_is_checked_when_the_loader_is_built(small_cfg):
    """A mapper that takes only the dataset dict is refused in one sentence, before any image
    is mapped (not adapted per call, not seeded through the global generators)."""
    from detlab.data import MAPPER_REGISTRY, build_detection_train_loader

    def one_argument(d):
        return None

    record = {"file_name": "a.png", "height": 8, "width": 8, "image_id": 0}
    with pytest.raises(ContractError) as err:
        build_detection_train_loader(small_cfg, mapper=one_argument, dataset=[record])
    msg = str(err.value)
    assert "mapper(dataset_dict, rng)" in msg and "\n" not in msg

    class OldMapper:
        @classmethod
        def from_config(cls, cfg, is_train):
            return {}

        def __call__(self, dataset_dict):
            return None

    MAPPER_REGISTRY.register(OldMapper)
    try:
        small_cfg.DATALOADER.MAPPER = "OldMapper"
        with pytest.raises(ContractError, match="MAPPER 'OldMapper' breaks its contract"):
            build_mapper(small_cfg, True)
    finally:
        MAPPER_REGISTRY._obj_map.pop("OldMapper")
