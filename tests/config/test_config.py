"""Config system: _BASE_ chains, overrides, typo suggestions, types, dump round trip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from detlab.config import ConfigError, get_cfg, load_config, parse_overrides


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_get_cfg_is_fresh_and_covers_each_area():
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR != 123.0
    for area in ("MODEL", "DATASETS", "DATALOADER", "INPUT", "SOLVER", "TEST", "LOGGING"):
        assert area in b
    assert "OUTPUT_DIR" in b and "SEED" in b


def test_base_chain_three_levels_relative_to_including_file(tmp_path):
    write(tmp_path / "a" / "base.yaml", "SOLVER: {BASE_LR: 0.5, MAX_ITER: 10}\nSEED: 1\n")
    write(tmp_path / "a" / "b" / "mid.yaml", "_BASE_: ../base.yaml\nSOLVER: {MAX_ITER: 20}\n")
    top = write(
        tmp_path / "c" / "top.yaml",
        "_BASE_: ../a/b/mid.yaml\nSOLVER:\n  STEPS: [5, 8]\n",
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(top))
    assert cfg.SOLVER.BASE_LR == 0.5  # from base, two levels up
    assert cfg.SOLVER.MAX_ITER == 20  # mid overrides base
    assert cfg.SOLVER.STEPS == (5, 8)  # list coerced back to the default's tuple
    assert cfg.SEED == 1


def test_base_list_merges_in_order(tmp_path):
    write(tmp_path / "one.yaml", "SOLVER: {BASE_LR: 0.1, MAX_ITER: 1}\n")
    write(tmp_path / "two.yaml", "SOLVER: {BASE_LR: 0.2}\n")
    top = write(tmp_path / "top.yaml", "_BASE_: [one.yaml, two.yaml]\n")
    cfg = load_config(str(top))
    assert cfg.SOLVER.BASE_LR == 0.2 and cfg.SOLVER.MAX_ITER == 1
    assert cfg.is_frozen()


def test_base_cycle_is_reported_with_chain(tmp_path):
    write(tmp_path / "x.yaml", "_BASE_: y.yaml\n")
    write(tmp_path / "y.yaml", "_BASE_: z.yaml\n")
    write(tmp_path / "z.yaml", "_BASE_: x.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: x.yaml -> y.yaml -> z.yaml -> x.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "x.yaml"))


def test_missing_base_names_including_file(tmp_path):
    top = write(tmp_path / "top.yaml", "_BASE_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere.yaml does not exist \(named in _BASE_ of"):
        get_cfg().merge_from_file(str(top))


def test_unsafe_yaml_is_not_executed(tmp_path):
    evil = write(tmp_path / "evil.yaml", "SEED: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML at line 1"):
        get_cfg().merge_from_file(str(evil))


def test_yaml_syntax_error_names_file_and_position(tmp_path):
    bad = write(tmp_path / "bad.yaml", "SOLVER:\n  BASE_LR: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML at line \d+, column \d+"):
        get_cfg().merge_from_file(str(bad))


def test_both_override_syntaxes_mixed():
    cfg = get_cfg()
    cfg.merge_from_list(
        ["SOLVER.BASE_LR", "0.001", "SOLVER.MAX_ITER=500", "SOLVER.STEPS", "(100, 200)"]
    )
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.001)
    assert cfg.SOLVER.MAX_ITER == 500
    assert cfg.SOLVER.STEPS == (100, 200)


def test_override_values_parse_safely_as_literals():
    cfg = get_cfg()
    cfg.merge_from_list(["OUTPUT_DIR=/tmp/a=b", "DATASETS.TRAIN", "my_set", "MODEL.WEIGHTS", "x"])
    assert cfg.OUTPUT_DIR == "/tmp/a=b"  # only the first '=' splits
    assert cfg.DATASETS.TRAIN == ("my_set",)  # a single name means a one-element tuple
    # Text that only *looks* like code stays text and is never evaluated.
    cfg.merge_from_list(["MODEL.WEIGHTS", "__import__('os').system('false')"])
    assert cfg.MODEL.WEIGHTS.startswith("__import__")


def test_bool_and_lowercase_overrides():
    cfg = get_cfg()
    cfg.merge_from_list(["solver.clip_gradients.enabled=true", "SOLVER.NESTEROV", "True"])
    assert cfg.SOLVER.CLIP_GRADIENTS.ENABLED is True and cfg.SOLVER.NESTEROV is True


@pytest.mark.parametrize(
    "opts, expected",
    [
        (["SOLVER.MAX_ITERR", "1"], "did you mean SOLVER.MAX_ITER?"),
        (["SOLVER.BASE_RL=0.1"], "did you mean SOLVER.BASE_LR?"),
        (["MAX_ITER", "3"], "did you mean SOLVER.MAX_ITER?"),
    ],
)
def test_typo_suggests_closest_key(opts, expected):
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_list(opts)
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_typo_in_file_names_file(tmp_path):
    f = write(tmp_path / "t.yaml", "SOLVER:\n  MAX_ITERR: 3\n")
    with pytest.raises(ConfigError, match=r"SOLVER.MAX_ITERR \(from .*t.yaml\).*SOLVER.MAX_ITER"):
        get_cfg().merge_from_file(str(f))


@pytest.mark.parametrize(
    "opts, expected",
    [
        (
            ["SOLVER.MAX_ITER", "ten"],
            "SOLVER.MAX_ITER (from the command line) expects int, got 'ten'",
        ),
        (["SOLVER.BASE_LR", "fast"], "expects float, got 'fast'"),
        (["SOLVER.CLIP_GRADIENTS.ENABLED", "3"], "expects bool, got 3"),
        (["SOLVER.STEPS", "{'a': 1}"], "expects a list"),
        (["SOLVER", "1"], "is a group of keys"),
    ],
)
def test_wrong_types_fail_with_expected_type(opts, expected):
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_list(opts)
    assert expected in str(info.value)


def test_numeric_widening_is_allowed():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "1", "SOLVER.MAX_ITER", "1e3"])
    assert isinstance(cfg.SOLVER.BASE_LR, float) and cfg.SOLVER.BASE_LR == 1.0
    assert cfg.SOLVER.MAX_ITER == 1000 and isinstance(cfg.SOLVER.MAX_ITER, int)


def test_override_without_value_or_stray_option():
    with pytest.raises(ConfigError, match="has no value"):
        get_cfg().merge_from_list(["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="Unexpected option '--resume'"):
        parse_overrides(["--resume"])


def test_dump_round_trip(tmp_path):
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.STEPS", "(3, 4)", "INPUT.MIN_SIZE_TRAIN", "(640, 800)"])
    cfg.DATASETS.REGISTER = [{"name": "mine", "json_file": "/a.json", "image_root": "/img"}]
    dumped = cfg.dump()
    assert yaml.safe_load(dumped)["SOLVER"]["STEPS"] == [3, 4]
    path = write(tmp_path / "dumped.yaml", dumped)
    again = get_cfg()
    again.merge_from_file(str(path))
    assert again == cfg
    assert again.dump() == dumped


def test_register_paths_resolve_relative_to_declaring_file(tmp_path):
    write(
        tmp_path / "data" / "base.yaml",
        "DATASETS:\n  REGISTER:\n    - {name: d, json_file: ann/train.json, image_root: img}\n",
    )
    top = write(tmp_path / "cfgs" / "top.yaml", "_BASE_: ../data/base.yaml\n")
    cfg = load_config(str(top))
    entry = cfg.DATASETS.REGISTER[0]
    assert entry["json_file"] == str(tmp_path / "data" / "ann" / "train.json")
    assert entry["image_root"] == str(tmp_path / "data" / "img")


def test_frozen_config_refuses_merge():
    cfg = load_config(None)
    with pytest.raises(ConfigError, match="frozen"):
        cfg.merge_from_list(["SEED", "3"])


def test_nested_sequences_keep_the_default_types():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS", "[[0.5, 1.0], [2.0]]"])
    assert cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS == ((0.5, 1.0), (2.0,))


def test_none_text_sets_a_string_key_to_that_text():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.FPN.TOP_BLOCK", "none"])
    assert cfg.MODEL.FPN.TOP_BLOCK == "none"
