"""Config values checked at load time: ranges, list element types, ascending steps."""

from __future__ import annotations

import pytest

from detlab.config import ConfigError, check_config, get_cfg, load_config
from detlab.config.checks import RULES


def test_every_rule_names_an_existing_key_and_the_defaults_pass():
    cfg = get_cfg()
    keys = set(cfg.all_keys())
    assert [k for k, _, _ in RULES if k not in keys] == []
    check_config(cfg)


@pytest.mark.parametrize(
    "opts, message",
    [
        (["SOLVER.IMS_PER_BATCH", "0"], "SOLVER.IMS_PER_BATCH is 0; it must be an integer >= 1"),
        (["SOLVER.MAX_ITER", "-5"], "SOLVER.MAX_ITER is -5; it must be an integer >= 0"),
        (["SOLVER.STEPS", "abc"], "SOLVER.STEPS (from the command line) expects a list of int"),
        (["SOLVER.STEPS", "[100, 'x']"], "expects a list of int values, got 'x' in [100, 'x']"),
        (["SOLVER.STEPS", "(200, 100)"], "SOLVER.STEPS is [200, 100]; it must be strictly"),
        (["SOLVER.STEPS", "(100, 100)"], "strictly ascending"),
        (["SOLVER.STEPS", "(-1,)"], "a list whose every value is an integer >= 0"),
        (["INPUT.MIN_SIZE_TRAIN", "(640.5,)"], "INPUT.MIN_SIZE_TRAIN (from the command line)"),
        (["SOLVER.MOMENTUM", "1.5"], "SOLVER.MOMENTUM is 1.5; it must be a number >= 0 and < 1"),
        (["SOLVER.ADAMW_BETAS", "(0.9,)"], "SOLVER.ADAMW_BETAS is [0.9]; it must be a list of 2"),
        (["SOLVER.NAN_GUARD.LR_BACKOFF", "0"], "must be a number > 0 and <= 1"),
        (["SOLVER.NAN_GUARD.INJECT.ITERS", "abc"], "SOLVER.NAN_GUARD.INJECT.ITERS is ['abc']"),
        (["MODEL.PIXEL_STD", "(0, 1, 1)"], "MODEL.PIXEL_STD is [0.0, 1.0, 1.0]"),
        (["INPUT.SAR.CLIP_PERCENTILES", "(99, 1)"], "INPUT.SAR.CLIP_PERCENTILES is [99.0, 1.0]"),
        (["MODEL.SIZE_AWARE_LOSS.SMALL_AREA", "1e5"], "SMALL_AREA (100000) must be below"),
        (["TRAINER.EXTRA_HOOKS", "[3]"], "TRAINER.EXTRA_HOOKS is [3]"),
        (["MODEL.RETINANET.IOU_THRESHOLDS", "(0.5, 0.4)"], "IOU_THRESHOLDS is [0.5, 0.4]"),
        (["MODEL.RETINANET.NUM_CLASSES", "0"], "MODEL.RETINANET.NUM_CLASSES is 0"),
        (["INPUT.MOSAIC.PROB", "1.5"], "INPUT.MOSAIC.PROB is 1.5; it must be a number >= 0"),
        (["INPUT.RANDOM_AFFINE.SCALE", "(1.5, 0.5)"], "INPUT.RANDOM_AFFINE.SCALE is [1.5, 0.5]"),
        (["MODEL.YOLO.REG_MAX", "0"], "MODEL.YOLO.REG_MAX is 0; it must be an integer >= 1"),
    ],
)
def test_bad_values_fail_at_load_in_one_sentence(opts, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, opts)
    text = str(err.value)
    assert message in text and "\n" not in text and text.endswith(".")


@pytest.mark.parametrize(
    "opts, key, value",
    [
        (["SOLVER.STEPS", "500"], "SOLVER.STEPS", (500,)),  # a bare value is a one-item list
        (["SOLVER.STEPS", "(500.0, 600)"], "SOLVER.STEPS", (500, 600)),
        (["SOLVER.STEPS", "()"], "SOLVER.STEPS", ()),
        (["MODEL.PIXEL_MEAN", "(1, 2, 3)"], "MODEL.PIXEL_MEAN", (1.0, 2.0, 3.0)),
        (["DATASETS.TRAIN", "my_set"], "DATASETS.TRAIN", ("my_set",)),
        (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER", 0),
        (["SOLVER.WEIGHT_DECAY_BIAS", "None"], "SOLVER.WEIGHT_DECAY_BIAS", None),
    ],
)
def test_good_values_pass_and_keep_their_types(opts, key, value):
    cfg = load_config(None, opts)
    got = cfg
    for part in key.split("."):
        got = got[part]
    assert got == value and type(got) is type(value)
