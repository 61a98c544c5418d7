"""Shared tool parser: options, overrides, one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from detlab.config import ConfigError
from detlab.utils.cli import default_argument_parser, run_tool


def test_parser_options_then_overrides():
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            "a.yaml",
            "--resume",
            "--num-gpus",
            "2",
            "SOLVER.BASE_LR",
            "0.1",
            "SEED=3",
        ]
    )
    assert args.config_file == "a.yaml" and args.resume and args.num_gpus == 2
    assert args.opts == ["SOLVER.BASE_LR", "0.1", "SEED=3"]
    assert args.dist_url == "auto" and args.machine_rank == 0 and not args.eval_only


def test_parser_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        default_argument_parser().parse_args(["--num-gpus", "two", "--config-file", "x"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value" in err


def test_run_tool_turns_user_error_into_one_line(capsys):
    def boom():
        raise ConfigError("Unknown config key X; did you mean Y?")

    assert run_tool(boom) == 2
    assert capsys.readouterr().err == "error: Unknown config key X; did you mean Y?\n"
    with pytest.raises(ConfigError):
        run_tool(boom, debug=True)


def test_run_tool_passes_status_through():
    assert run_tool(lambda: None) == 0
    assert run_tool(lambda: 3) == 3


def test_tool_process_exit_code_and_no_traceback(tmp_path):
    script = tmp_path / "tool.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            from detlab.config import load_config
            from detlab.utils.cli import default_argument_parser, run_tool

            args = default_argument_parser().parse_args()
            sys.exit(run_tool(lambda: load_config(args.config_file, args.opts) and 0,
                              debug=args.debug))
            """
        )
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("SOLVER: {BASE_LR: 0.1}\n")
    base = [sys.executable, str(script), "--config-file", str(cfg)]
    ok = subprocess.run(base + ["SEED", "1"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(base + ["SOLVER.MAX_ITERR", "1"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr and "did you mean SOLVER.MAX_ITER?" in bad.stderr
    debug = subprocess.run(
        base + ["--debug", "SOLVER.MAX_ITERR", "1"], capture_output=True, text=True
    )
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_options_may_follow_or_sit_between_the_overrides():
    args = default_argument_parser().parse_args(
        ["--config-file", "a.yaml", "SOLVER.BASE_LR", "-0.5", "--resume", "SEED=3", "--debug"]
    )
    assert args.resume and args.debug and args.config_file == "a.yaml"
    assert args.opts == ["SOLVER.BASE_LR", "-0.5", "SEED=3"]


def test_unknown_option_among_overrides_is_one_line(capsys):
    with pytest.raises(SystemExit) as info:
        default_argument_parser().parse_args(["--config-file", "a", "SEED", "1", "--no-such"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--no-such" in err


def test_eval_parser_takes_options_after_overrides():
    from detlab.evaluation.cli import build_parser

    args = build_parser().parse_args(
        ["--config-file", "c.yaml", "MODEL.WEIGHTS", "w", "--out", "d"]
    )
    assert args.opts == ["MODEL.WEIGHTS", "w"] and args.out == "d"


def test_run_tool_turns_a_full_disk_into_one_line(capsys, tmp_path):
    import errno

    def full():
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.log"))

    assert run_tool(full) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Could not write {tmp_path / 'x.log'}: No space left on device")
    assert err.count("\n") == 1 and "free there" in err
