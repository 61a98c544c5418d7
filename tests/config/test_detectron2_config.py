"""Detectron2 YAML files read unchanged: tuple syntax, key and name mapping, D2 defaults,
ignored keys, all problems at once, and the restricted arithmetic evaluator."""

from __future__ import annotations

import importlib.util
import logging
import math
import textwrap
from pathlib import Path

import pytest

from detlab.config import ConfigError, get_cfg, load_config
from detlab.config.arith import ArithmeticRefused, evaluate_arithmetic
from detlab.config.detectron2 import translate_detectron2

HAS_D2 = importlib.util.find_spec("detectron2") is not None
needs_d2 = pytest.mark.skipif(not HAS_D2, reason="detectron2 is not installed (interop check)")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# ---------------------------------------------------------------------- tuple syntax
def test_tuple_syntax_in_a_file_reads_like_the_command_line(tmp_path):
    f = write(
        tmp_path / "t.yaml",
        """\
        SOLVER:
          STEPS: (60000, 80000)
          BASE_LR: 1e-3
          MAX_ITER: "1e3"
        INPUT:
          MIN_SIZE_TRAIN: (640, 672, 704)
        DATASETS:
          TRAIN: ("coco_2017_train",)
          TEST: my_val
        OUTPUT_DIR: "(1, 2)"
        MODEL:
          WEIGHTS: "[not, a, list]"
        """,
    )
    from_file = load_config(str(f))
    from_cli = load_config(
        None,
        [
            "SOLVER.STEPS", "(60000, 80000)", "SOLVER.BASE_LR", "1e-3", "SOLVER.MAX_ITER", "1e3",
            "INPUT.MIN_SIZE_TRAIN", "(640, 672, 704)", "DATASETS.TRAIN", '("coco_2017_train",)',
            "DATASETS.TEST", "my_val", "OUTPUT_DIR", "(1, 2)", "MODEL.WEIGHTS", "[not, a, list]",
        ],
    )  # fmt: skip
    assert from_file == from_cli
    assert from_file.SOLVER.STEPS == (60000, 80000)
    assert from_file.SOLVER.BASE_LR == pytest.approx(1e-3) and from_file.SOLVER.MAX_ITER == 1000
    assert from_file.INPUT.MIN_SIZE_TRAIN == (640, 672, 704)
    assert from_file.DATASETS.TRAIN == ("coco_2017_train",)
    assert from_file.DATASETS.TEST == ("my_val",)
    # Keys whose default is text keep text, however it looks.
    assert from_file.OUTPUT_DIR == "(1, 2)" and from_file.MODEL.WEIGHTS == "[not, a, list]"


def test_text_that_is_not_a_literal_is_a_type_error_not_a_crash(tmp_path):
    f = write(tmp_path / "t.yaml", "SOLVER:\n  STEPS: (60000, eighty)\n")
    with pytest.raises(ConfigError, match=r"SOLVER.STEPS \(from .*t.yaml\) expects a list"):
        load_config(str(f))


# ---------------------------------------------------------------------- the zoo files
def test_faster_rcnn_zoo_files_map_onto_detlab(d2_zoo, caplog):
    r50 = load_config(str(d2_zoo / "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    m = r50.MODEL
    assert m.META_ARCHITECTURE == "FasterRCNN" and m.BACKBONE.NAME == "resnet50"
    assert m.NECK.NAME == "FPN" and m.FPN.IN_STAGES == (1, 2, 3, 4) and m.FPN.TOP_BLOCK == "P6pool"
    assert m.RPN.IN_FEATURES == ("p2", "p3", "p4", "p5", "p6")
    assert m.ROI_HEADS.IN_FEATURES == ("p2", "p3", "p4", "p5")
    assert m.WEIGHTS == "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    # Detectron2's defaults underneath the file, where they differ from detlab's.
    assert m.PIXEL_STD == (1.0, 1.0, 1.0) and m.BACKBONE.FREEZE_AT == 2
    assert m.RESNETS.STRIDE_IN_1X1 is True
    assert (r50.SOLVER.STEPS, r50.SOLVER.MAX_ITER) == ((60000, 80000), 90000)
    r101 = load_config(str(d2_zoo / "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml"))
    assert r101.MODEL.BACKBONE.NAME == "resnet101"
    assert (r101.SOLVER.STEPS, r101.SOLVER.MAX_ITER) == ((210000, 250000), 270000)


def test_retinanet_zoo_file_maps_onto_detlab(d2_zoo):
    cfg = load_config(str(d2_zoo / "COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    m = cfg.MODEL
    assert m.META_ARCHITECTURE == "RetinaNet" and m.BACKBONE.NAME == "resnet50"
    assert m.FPN.IN_STAGES == (2, 3, 4) and m.FPN.TOP_BLOCK == "P6P7C5"
    expected = [[x, x * 2 ** (1 / 3), x * 2 ** (2 / 3)] for x in (32, 64, 128, 256, 512)]
    got = [list(s) for s in m.ANCHOR_GENERATOR.SIZES]
    assert len(got) == 5 and all(map(math.isclose, sum(got, []), sum(expected, [])))
    assert m.RETINANET.IOU_THRESHOLDS == (0.4, 0.5) and m.RETINANET.IOU_LABELS == (0, -1, 1)
    assert m.RETINANET.SMOOTH_L1_LOSS_BETA == 0.0 and cfg.SOLVER.BASE_LR == 0.01


def test_ignored_keys_are_listed_once(d2_zoo, tmp_path):
    from detlab.engine.defaults import default_setup

    cfg = load_config(
        str(d2_zoo / "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"),
        ["OUTPUT_DIR", str(tmp_path / "out")],
    )
    notes = [text for level, text in cfg.load_notes() if level == logging.WARNING]
    assert len(notes) == 1 and notes[0].startswith("Ignored in faster_rcnn_R_50_FPN_1x.yaml")
    for key in ("MODEL.MASK_ON", "MODEL.ROI_MASK_HEAD.{NAME,NUM_CONV,POOLER_RESOLUTION}"):
        assert key in notes[0]
    default_setup(cfg)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert log.count("Ignored in faster_rcnn_R_50_FPN_1x.yaml") == 1
    assert "GeneralizedRCNN -> FasterRCNN" in log and "MODEL.PIXEL_STD=(1.0, 1.0, 1.0)" in log


def test_d2_defaults_do_not_override_deliberate_values(d2_zoo):
    cfg = get_cfg()
    cfg.MODEL.PIXEL_STD = (2.0, 2.0, 2.0)
    cfg.merge_from_file(str(d2_zoo / "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
    assert cfg.MODEL.PIXEL_STD == (2.0, 2.0, 2.0)
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 2  # still at detlab's default before: D2's applies


def test_detlab_files_get_no_d2_defaults(tmp_path):
    root = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(str(root / "Base-FasterRCNN.yaml"))
    assert cfg.MODEL.PIXEL_STD == get_cfg().MODEL.PIXEL_STD
    assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is False
    # Detectron2 names in a file without VERSION: 2 are translated, detlab's defaults stay
    f = write(tmp_path / "mine.yaml", "MODEL:\n  RESNETS: {DEPTH: 101}\n")
    cfg = load_config(str(f))
    assert cfg.MODEL.BACKBONE.NAME == "resnet101"
    assert cfg.MODEL.PIXEL_STD == get_cfg().MODEL.PIXEL_STD and cfg.MODEL.BACKBONE.FREEZE_AT == 0


@needs_d2
@pytest.mark.parametrize(
    "name",
    [
        "COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml",
        "COCO-Detection/faster_rcnn_R_101_FPN_3x.yaml",
        "COCO-Detection/retinanet_R_50_FPN_3x.yaml",
    ],
)
def test_same_values_as_detectron2_resolves(d2_zoo, name):
    """Every key the two config systems share holds the same value after loading the file."""
    from detectron2.config import get_cfg as d2_get_cfg

    d2 = d2_get_cfg()
    d2.merge_from_file(str(d2_zoo / name), allow_unsafe=True)  # our own fixture; D2 runs eval
    ours = load_config(str(d2_zoo / name))
    # Shared keys whose meaning differs on purpose (device choice, worker count, format
    # version, RetinaNet's level list where () means "all levels"), or that a RetinaNet file
    # does not use (D2's C4 defaults for RPN/ROI levels).
    differ = {
        "MODEL.DEVICE",
        "DATALOADER.NUM_WORKERS",
        "VERSION",
        "MODEL.META_ARCHITECTURE",
        "MODEL.BACKBONE.NAME",
        "MODEL.RETINANET.IN_FEATURES",
    }
    if "retinanet" in name:
        differ |= {"MODEL.RPN.IN_FEATURES", "MODEL.ROI_HEADS.IN_FEATURES", "MODEL.ROI_HEADS.NAME"}

    def norm(v):
        return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

    def leaves(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    ours_flat = dict(leaves(ours))
    shared = [(k, v) for k, v in leaves(d2) if k in ours_flat and k not in differ]
    assert len(shared) > 60
    mismatched = {
        k: (norm(v), norm(ours_flat[k])) for k, v in shared if norm(v) != norm(ours_flat[k])
    }
    assert not mismatched
    depth = d2.MODEL.RESNETS.DEPTH
    assert ours.MODEL.BACKBONE.NAME == f"resnet{depth}"
    assert ours.MODEL.FPN.IN_STAGES == tuple(int(n[3]) - 1 for n in d2.MODEL.FPN.IN_FEATURES)


# ---------------------------------------------------------------------- problems
def test_all_problems_of_a_file_are_reported_together(d2_zoo, tmp_path):
    f = write(
        tmp_path / "mine.yaml",
        f"""\
        _BASE_: {d2_zoo / "Base-RCNN-FPN.yaml"}
        MODEL:
          MASK_ON: True
          RESNETS: {{DEPTH: 200}}
          RPN: {{IN_FEATURES: ["res4"]}}
        SOLVER:
          MAX_ITERR: 5
          BASE_LR: fast
        """,
    )
    cfg = get_cfg()
    before = cfg.dump()
    with pytest.raises(ConfigError) as info:
        cfg.merge_from_file(str(f))
    msg = str(info.value)
    assert msg.startswith(f"5 config problems in {f}: (1) ") and "\n" not in msg
    assert msg.count(str(f)) == 1  # the file is named once, in front
    for part in (
        "MODEL.MASK_ON is on, but detlab has no instance masks",
        "MODEL.RESNETS.DEPTH is 200",
        "MODEL.RPN.IN_FEATURES names ['res4']",
        "Unknown config key SOLVER.MAX_ITERR",
        "SOLVER.BASE_LR expects float, got 'fast'",
    ):
        assert part in msg, part
    assert cfg.dump() == before  # nothing merged


def test_command_line_problems_are_reported_together():
    cfg = get_cfg()
    with pytest.raises(ConfigError) as info:
        cfg.merge_from_list(["SOLVER.MAX_ITERR", "1", "SOLVER.BASE_LR", "fast", "SEED", "3"])
    msg = str(info.value)
    assert msg.startswith("2 config problems in the command line")
    assert "did you mean SOLVER.MAX_ITER" in msg and "expects float, got 'fast'" in msg
    assert cfg.SEED == -1


@pytest.mark.parametrize(
    "opts, fragment",
    [
        (["MODEL.BACKBONE.NAME", "build_resnet_backbone"], "C4/DC5 ResNets"),
        (["MODEL.BACKBONE.NAME", "build_mobilenet_backbone"], "Detectron2 builders it reads"),
        (["MODEL.META_ARCHITECTURE", "PanopticFPN"], "panoptic segmentation"),
        (["MODEL.KEYPOINT_ON", "True"], "no keypoints"),
        (["MODEL.RPN.HEAD_NAME", "MyRPNHead"], "MODEL.RPN.HEAD_NAME is 'MyRPNHead'"),
        (["MODEL.FPN.FUSE_TYPE", "avg"], "MODEL.FPN.FUSE_TYPE is 'avg'"),
        (["MODEL.RESNETS.NUM_GROUPS", "32"], "ResNeXt"),
        (["MODEL.BACKBONE.NAME", "tiny_resnet", "MODEL.RESNETS.DEPTH", "50"], "depth of a ResNet"),
    ],
)
def test_unsupported_detectron2_settings_are_one_clear_problem(opts, fragment):
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_list(opts)
    assert fragment in str(info.value)


def test_detectron2_keys_on_the_command_line():
    cfg = get_cfg()
    cfg.merge_from_list(
        ["MODEL.RESNETS.DEPTH", "152", "MODEL.FPN.IN_FEATURES", "['res3', 'res4', 'res5']"]
    )
    assert cfg.MODEL.BACKBONE.NAME == "resnet152" and cfg.MODEL.FPN.IN_STAGES == (2, 3, 4)
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "GN", "MODEL.PROPOSAL_GENERATOR.MIN_SIZE", "2"])
    assert cfg.MODEL.BACKBONE.NORM == "GN" and cfg.MODEL.RPN.MIN_SIZE == 2.0
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NAME", "FastRCNNConvFCHead", "VERSION", "2"])
    assert cfg.VERSION == 1  # VERSION 2 marks Detectron2's format; detlab's stays


def test_out_features_must_cover_fpn_inputs():
    result = translate_detectron2(
        {
            "MODEL": {
                "RESNETS": {"OUT_FEATURES": ["res4", "res5"]},
                "FPN": {"IN_FEATURES": ["res3"]},
            }
        },
        detlab_defaults=None,
    )
    assert any("does not output" in p for p in result.problems)


# ---------------------------------------------------------------------- the evaluator
@pytest.mark.parametrize(
    "text, value",
    [
        ("1 + 2 * 3", 7),
        ("-2 ** 2", -4),
        ("[1, 2.5, (3, 4)]", [1, 2.5, (3, 4)]),
        (
            "[[x, x * 2 ** (1.0 / 3)] for x in [32, 64]]",
            [[32, 32 * 2 ** (1 / 3)], [64, 64 * 2 ** (1 / 3)]],
        ),
        ("[x * y for x in [1, 2] for y in [10, 100]]", [10, 100, 20, 200]),
        ("[[a for a in [x, x + 1]] for x in [0, 10]]", [[0, 1], [10, 11]]),
    ],
)
def test_arithmetic_evaluator_computes(text, value):
    assert evaluate_arithmetic(text) == value


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("__import__('os').system('true')", "function call"),
        ("x + 1", "a name"),
        ("(1).real", "attribute"),
        ("[1, 2][0]", "subscript"),
        ("'a' * 3", "only numbers"),
        ("10 ** 1000", "exponent"),
        ("[1] * 3", "numbers only"),
        ("[x for x in [1, 2] if x > 1]", "'if' clauses"),
        ("[x for x in 5]", "iterate over a list"),
        ("(lambda: 1)()", "function call"),
        ("1 / 0", "division by zero"),
        ("1 < 2", "comparison"),
        ("True + 1", "only numbers"),
        ("[[x for x in [1] * 1]]", "numbers only"),
        ("import os", "not a valid expression"),
    ],
)
def test_arithmetic_evaluator_refuses(text, fragment):
    with pytest.raises(ArithmeticRefused) as info:
        evaluate_arithmetic(text)
    assert fragment in str(info.value)


def test_eval_tag_in_a_file_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    f = write(
        tmp_path / "evil.yaml",
        f"""\
        MODEL:
          ANCHOR_GENERATOR:
            SIZES: !!python/object/apply:eval ["open('{marker}', 'w').write('x')"]
        """,
    )
    with pytest.raises(ConfigError, match=r"not valid YAML at line 3.*restricted arithmetic"):
        load_config(str(f))
    assert not marker.exists()
    many = write(tmp_path / "big.yaml", 'SEED: !!python/object/apply:eval ["9 ** 9 ** 9"]\n')
    with pytest.raises(ConfigError, match="exponent"):
        load_config(str(many))
