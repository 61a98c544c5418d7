"""Value checks run when a config is loaded, so a bad value fails in one sentence at once.

Types are checked while merging (:mod:`detlab.config.config`, list elements included); this
module checks what types cannot say: ranges, ascending ``SOLVER.STEPS``, the element type of
lists whose default is empty, pairs that must be ordered. :func:`check_config` raises
:class:`~detlab.utils.errors.ConfigError` for the first failure, e.g.

    SOLVER.IMS_PER_BATCH is 0; it must be an integer >= 1 (images per step over all processes).

Names of registered components and other choices are checked where they are built, with the
list of valid names. Keys that a config does not have (an area that is not installed) are
skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from detlab.utils.errors import ConfigError

__all__ = ["RULES", "check_config"]

# A check returns None when the value is fine, else what the value must be.
Check = Callable[[Any], "str | None"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and not (isinstance(v, float) and math.isnan(v))


def int_at_least(low: int) -> Check:
    return lambda v: None if _is_int(v) and v >= low else f"an integer >= {low}"


def num_in(low: float, high: float = math.inf, low_open: bool = False, high_open=False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_num(v) and (v > low if low_open else v >= low)
        ok = ok and (v < high if high_open else v <= high)
        if ok:
            return None
        lo = f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high == math.inf else f" and {'<' if high_open else '<='} {high:g}"
        return f"a number {lo}{hi}"

    return check


def optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def each(check: Check, min_len: int = 0, length: int | None = None) -> Check:
    """A list whose every element passes ``check`` (with a length condition)."""

    def run(v: Any) -> str | None:
        if not isinstance(v, (list, tuple)):
            return "a list"
        if length is not None and len(v) != length:
            return f"a list of {length} values"
        if len(v) < min_len:
            return f"a list of at least {min_len} value{'s' if min_len > 1 else ''}"
        bad = next((check(e) for e in v if check(e) is not None), None)
        return None if bad is None else f"a list whose every value is {bad}"

    return run


def ascending(check: Check, strict: bool = True, **kw: Any) -> Check:
    inner = each(check, **kw)

    def run(v: Any) -> str | None:
        problem = inner(v)
        if problem is not None:
            return problem
        pairs = list(zip(v, v[1:], strict=False))
        ok = all(a < b if strict else a <= b for a, b in pairs)
        return None if ok else f"{'strictly ' if strict else ''}ascending"

    return run


PROB = num_in(0.0, 1.0)
POS = num_in(0.0, low_open=True)
NON_NEG = num_in(0.0)
COUNT = int_at_least(1)
NON_NEG_INT = int_at_least(0)

#: ``(key, check, meaning)``: the value of ``key`` must pass ``check``; ``meaning`` ends the
#: message in brackets.
RULES: list[tuple[str, Check, str]] = [
    # solver
    ("SOLVER.BASE_LR", NON_NEG, "learning rate"),
    ("SOLVER.MOMENTUM", num_in(0.0, 1.0, high_open=True), "SGD momentum"),
    ("SOLVER.ADAMW_BETAS", each(num_in(0.0, 1.0, high_open=True), length=2), "AdamW betas"),
    ("SOLVER.WEIGHT_DECAY", NON_NEG, "weight decay"),
    ("SOLVER.WEIGHT_DECAY_NORM", NON_NEG, "weight decay of norm layers"),
    ("SOLVER.WEIGHT_DECAY_BIAS", optional(NON_NEG), "weight decay of biases, or null"),
    ("SOLVER.MAX_ITER", NON_NEG_INT, "iterations to train, 0 = none"),
    ("SOLVER.STEPS", ascending(NON_NEG_INT), "iterations where the LR decays"),
    ("SOLVER.GAMMA", POS, "LR factor at each step"),
    ("SOLVER.COSINE_END_FACTOR", NON_NEG, "final LR factor"),
    ("SOLVER.WARMUP_ITERS", NON_NEG_INT, "warmup iterations"),
    ("SOLVER.WARMUP_FACTOR", PROB, "LR factor at iteration 0"),
    ("SOLVER.IMS_PER_BATCH", COUNT, "images per step over all processes"),
    ("SOLVER.GRAD_ACCUM_STEPS", COUNT, "loader batches per optimizer step"),
    ("SOLVER.CHECKPOINT_PERIOD", NON_NEG_INT, "iterations between checkpoints, 0 = none"),
    ("SOLVER.CHECKPOINT_MAX_KEEP", NON_NEG_INT, "checkpoints kept, 0 = all"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", POS, "clipping threshold"),
    ("SOLVER.CLIP_GRADIENTS.NORM_TYPE", POS, "p of the p-norm"),
    ("SOLVER.EMA.DECAY", num_in(0.0, 1.0, True, True), "EMA decay"),
    ("SOLVER.EARLY_STOPPING.PATIENCE", COUNT, "evaluations without improvement"),
    ("SOLVER.EARLY_STOPPING.MIN_DELTA", NON_NEG, "smallest improvement"),
    ("SOLVER.NAN_GUARD.MAX_CONSECUTIVE", COUNT, "skipped steps in a row before a rollback"),
    ("SOLVER.NAN_GUARD.WINDOW", COUNT, "iterations of the skip-rate window"),
    ("SOLVER.NAN_GUARD.MAX_SKIP_RATE", PROB, "fraction of skipped steps"),
    ("SOLVER.NAN_GUARD.LR_BACKOFF", num_in(0.0, 1.0, low_open=True), "LR factor per rollback"),
    ("SOLVER.NAN_GUARD.MAX_ROLLBACKS", NON_NEG_INT, "rollbacks before stopping"),
    ("SOLVER.NAN_GUARD.INJECT.ITERS", each(NON_NEG_INT), "iterations to make non-finite"),
    ("SOLVER.NAN_GUARD.HEALTHY.WINDOW", COUNT, "iterations judged before a checkpoint"),
    ("SOLVER.NAN_GUARD.HEALTHY.MAX_LOSS_RATIO", num_in(1.0), "loss median / lowest median"),
    # data
    ("DATALOADER.NUM_WORKERS", NON_NEG_INT, "loader worker processes, 0 = in-process"),
    ("DATALOADER.TEST_BATCH_SIZE", COUNT, "images per inference batch"),
    ("DATALOADER.REPEAT_THRESHOLD", NON_NEG, "repeat-factor sampling threshold"),
    ("INPUT.MIN_SIZE_TRAIN", each(NON_NEG_INT, min_len=1), "shortest-edge sizes in pixels"),
    ("INPUT.MAX_SIZE_TRAIN", NON_NEG_INT, "longest-edge cap in pixels, 0 = none"),
    ("INPUT.MIN_SIZE_TEST", NON_NEG_INT, "shortest edge in pixels, 0 = no resize"),
    ("INPUT.MAX_SIZE_TEST", NON_NEG_INT, "longest-edge cap in pixels, 0 = none"),
    ("INPUT.SAR.CLIP_PERCENTILES", ascending(num_in(0, 100), length=2), "percentile range"),
    ("INPUT.SAR.HFLIP_PROB", PROB, "probability"),
    ("INPUT.SAR.VFLIP_PROB", PROB, "probability"),
    ("INPUT.SAR.ROT90_PROB", PROB, "probability"),
    ("INPUT.SAR.ROTATION_ANGLE", num_in(0.0, 180.0), "degrees"),
    ("INPUT.SAR.ROTATION_PROB", PROB, "probability"),
    ("INPUT.SAR.BRIGHTNESS", NON_NEG, "brightness jitter"),
    ("INPUT.SAR.CONTRAST", NON_NEG, "contrast jitter"),
    ("INPUT.SAR.BRIGHTNESS_CONTRAST_PROB", PROB, "probability"),
    ("INPUT.SAR.SPECKLE_PROB", PROB, "probability"),
    ("INPUT.SAR.SPECKLE_LOOKS", ascending(POS, strict=False, length=2), "looks range"),
    ("INPUT.MOSAIC.SIZE", COUNT, "side of the training image in pixels"),
    ("INPUT.MOSAIC.PROB", PROB, "probability"),
    ("INPUT.MOSAIC.MIXUP_PROB", PROB, "probability"),
    ("INPUT.MOSAIC.CLOSE_ITERS", NON_NEG_INT, "last iterations without mosaic"),
    ("INPUT.MOSAIC.PAD_VALUE", num_in(0, 255), "canvas fill on the 0..255 scale"),
    ("INPUT.RANDOM_AFFINE.DEGREES", num_in(0.0, 180.0), "degrees"),
    ("INPUT.RANDOM_AFFINE.TRANSLATE", num_in(0.0, 1.0), "fraction of the image side"),
    ("INPUT.RANDOM_AFFINE.SCALE", ascending(POS, strict=False, length=2), "scale range"),
    ("INPUT.RANDOM_AFFINE.SHEAR", num_in(0.0, 90.0, high_open=True), "degrees"),
    ("INPUT.HSV", each(PROB, length=3), "hue, saturation, value gains"),
    # model
    ("MODEL.PIXEL_STD", each(POS, min_len=1), "per-channel standard deviations"),
    ("MODEL.BACKBONE.IN_CHANNELS", COUNT, "input channels"),
    ("MODEL.RESNETS.WIDTH_MULT", POS, "width multiplier"),
    ("MODEL.RESNETS.BLOCKS_PER_STAGE", each(COUNT, length=4), "blocks of each ResNet stage"),
    ("MODEL.FPN.OUT_CHANNELS", COUNT, "FPN channels"),
    ("MODEL.FCOS.NUM_CLASSES", COUNT, "object classes"),
    ("MODEL.FCOS.NUM_CONVS", NON_NEG_INT, "head convolutions"),
    ("MODEL.FCOS.PRIOR_PROB", num_in(0.0, 1.0, True, True), "initial foreground probability"),
    ("MODEL.FCOS.SCORE_THRESH_TEST", PROB, "score threshold"),
    ("MODEL.FCOS.TOPK_CANDIDATES_TEST", COUNT, "candidates per level"),
    ("MODEL.FCOS.NMS_THRESH_TEST", PROB, "NMS IoU threshold"),
    ("MODEL.YOLO.NUM_CLASSES", COUNT, "object classes"),
    ("MODEL.YOLO.REG_MAX", COUNT, "DFL bins per box side, 1 = no DFL"),
    ("MODEL.YOLO.LOSS_WEIGHTS", each(NON_NEG, length=3), "box, classification, DFL weights"),
    ("MODEL.YOLO.TAL.TOPK", COUNT, "positives per box"),
    ("MODEL.YOLO.TAL.ALPHA", NON_NEG, "exponent of the class score"),
    ("MODEL.YOLO.TAL.BETA", NON_NEG, "exponent of the IoU"),
    ("MODEL.YOLO.SIMOTA.CENTER_RADIUS", POS, "candidate radius in strides"),
    ("MODEL.YOLO.SIMOTA.TOPK_IOU", COUNT, "IoUs summed per box"),
    ("MODEL.YOLO.SIMOTA.IOU_WEIGHT", NON_NEG, "weight of -log(IoU)"),
    ("MODEL.YOLO.SCORE_THRESH_TEST", PROB, "score threshold"),
    ("MODEL.YOLO.TOPK_CANDIDATES_TEST", COUNT, "candidates before NMS"),
    ("MODEL.YOLO.NMS_THRESH_TEST", PROB, "NMS IoU threshold"),
    ("MODEL.RETINANET.NUM_CLASSES", COUNT, "object classes"),
    ("MODEL.RETINANET.NUM_CONVS", NON_NEG_INT, "subnet convolutions"),
    ("MODEL.RETINANET.IOU_THRESHOLDS", ascending(PROB, strict=False, length=2), "IoU thresholds"),
    ("MODEL.RETINANET.PRIOR_PROB", num_in(0.0, 1.0, True, True), "initial foreground probability"),
    ("MODEL.RETINANET.FOCAL_LOSS_ALPHA", PROB, "focal loss positive weight"),
    ("MODEL.RETINANET.FOCAL_LOSS_GAMMA", NON_NEG, "focal loss exponent"),
    ("MODEL.RETINANET.SMOOTH_L1_LOSS_BETA", NON_NEG, "smooth L1 transition"),
    ("MODEL.RETINANET.SCORE_THRESH_TEST", PROB, "score threshold"),
    ("MODEL.RETINANET.TOPK_CANDIDATES_TEST", COUNT, "candidates per level"),
    ("MODEL.RETINANET.NMS_THRESH_TEST", PROB, "NMS IoU threshold"),
    ("MODEL.RPN.IOU_THRESHOLDS", ascending(PROB, strict=False, length=2), "IoU thresholds"),
    ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", COUNT, "sampled anchors per image"),
    ("MODEL.RPN.POSITIVE_FRACTION", PROB, "fraction of positives"),
    ("MODEL.RPN.PRE_NMS_TOPK_TRAIN", COUNT, "proposals before NMS"),
    ("MODEL.RPN.PRE_NMS_TOPK_TEST", COUNT, "proposals before NMS"),
    ("MODEL.RPN.POST_NMS_TOPK_TRAIN", COUNT, "proposals after NMS"),
    ("MODEL.RPN.POST_NMS_TOPK_TEST", COUNT, "proposals after NMS"),
    ("MODEL.RPN.NMS_THRESH", PROB, "NMS IoU threshold"),
    ("MODEL.ROI_HEADS.NUM_CLASSES", COUNT, "object classes"),
    ("MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", COUNT, "sampled proposals per image"),
    ("MODEL.ROI_HEADS.POSITIVE_FRACTION", PROB, "fraction of positives"),
    ("MODEL.ROI_HEADS.SCORE_THRESH_TEST", PROB, "score threshold"),
    ("MODEL.ROI_HEADS.NMS_THRESH_TEST", PROB, "NMS IoU threshold"),
    ("MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", COUNT, "RoIAlign output size"),
    ("MODEL.SIZE_AWARE_LOSS.MAX_WEIGHT", num_in(1.0), "largest loss weight"),
    ("MODEL.SIZE_AWARE_LOSS.SMALL_AREA", POS, "area in pixels²"),
    ("MODEL.SIZE_AWARE_LOSS.MEDIUM_AREA", POS, "area in pixels²"),
    # evaluation, logging, run
    ("TEST.EVAL_PERIOD", NON_NEG_INT, "iterations between evaluations, 0 = at the end"),
    ("TEST.DETECTIONS_PER_IMAGE", COUNT, "detections kept per image"),
    ("TEST.MATCH_SCORE_THRESH", PROB, "score threshold"),
    ("TEST.MATCH_IOU_THRESH", PROB, "IoU threshold"),
    ("TEST.WORST_K", NON_NEG_INT, "classes listed"),
    ("LOGGING.PERIOD", COUNT, "iterations between console lines"),
    ("LOGGING.METRICS_PERIOD", COUNT, "iterations between metrics rows"),
    ("LOGGING.NUM_SAMPLE_IMAGES", NON_NEG_INT, "validation images drawn"),
    ("LOGGING.SAMPLE_SCORE_THRESH", PROB, "score threshold"),
    ("TRAINER.CPU_THREADS", NON_NEG_INT, "torch threads, 0 = default"),
    ("TRAINER.EXTRA_HOOKS", each(lambda v: None if isinstance(v, str) else "a name"), "names"),
    ("SEED", int_at_least(-1), "-1 = random"),
]


def _get(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def check_config(cfg: Any) -> None:
    """Raise :class:`ConfigError` (one sentence) for the first value that breaks a rule."""
    for key, check, meaning in RULES:
        try:
            value = _get(cfg, key)
        except KeyError:
            continue
        need = check(value)
        if need is not None:
            shown = list(value) if isinstance(value, tuple) else value
            raise ConfigError(f"{key} is {shown!r}; it must be {need} ({meaning}).")
    pairs = [("MODEL.SIZE_AWARE_LOSS.SMALL_AREA", "MODEL.SIZE_AWARE_LOSS.MEDIUM_AREA")]
    for low_key, high_key in pairs:
        try:
            low, high = _get(cfg, low_key), _get(cfg, high_key)
        except KeyError:
            continue
        if low >= high:
            raise ConfigError(
                f"{low_key} ({low:g}) must be below {high_key} ({high:g}); they bound the "
                "small and medium object sizes in pixels²."
            )
