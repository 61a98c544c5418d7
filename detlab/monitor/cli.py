"""``tools/watch.py``: the state of a training run at a glance, once or refreshed."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from detlab.monitor.status import format_status, summarize_run
from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError

__all__ = ["build_parser", "main"]


def build_parser() -> DetlabArgumentParser:
    parser = DetlabArgumentParser(
        description="The state of a training run at a glance: progress, ETA, loss trend, NaN "
        "skips, rollbacks, clip events, the last evaluation and whether the run is alive; with "
        "--follow the exit status is 0 when it finished, 1 when it died or stopped."
    )
    parser.add_argument("run_dir", help="OUTPUT_DIR of a training run")
    parser.add_argument("--follow", action="store_true", help="refresh until the run ends")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    return parser


def _watch(args: argparse.Namespace) -> int:
    if not os.path.isfile(os.path.join(args.run_dir, "metrics.jsonl")):
        raise UserError(
            f"{args.run_dir} has no metrics.jsonl; pass the OUTPUT_DIR of a training run."
        )
    while True:
        status = summarize_run(args.run_dir)
        text = format_status(status)
        if args.follow and sys.stdout.isatty():
            print("\033[2J\033[H", end="")
        print(text, flush=True)
        if not args.follow:
            return 0
        if status["state"] != "running":  # finished: 0; died or stopped: 1
            return 0 if status["state"] == "finished" else 1
        time.sleep(args.interval)
        if not sys.stdout.isatty():
            print()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/watch.py``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run_tool(lambda: _watch(args), debug=args.debug)
    except BrokenPipeError:  # output piped into head/less that closed early
        return 0
