#!/usr/bin/env python
"""The state of a training run at a glance: progress, ETA, loss trend, NaN skips, rollbacks,
clip events, the last evaluation and whether the run is alive, from RUN_DIR.

    python tools/watch.py output/quickstart_sar_ships_cpu            # once
    python tools/watch.py output/quickstart_sar_ships_cpu --follow   # refresh until it ends

With --follow the exit status says how the run ended: 0 finished, 1 died or stopped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.errors import UserError
from detlab.utils.run_status import format_status, summarize_run


def main(args: argparse.Namespace) -> int:
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


if __name__ == "__main__":
    parser = DetlabArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="OUTPUT_DIR of a training run")
    parser.add_argument("--follow", action="store_true", help="refresh until the run ends")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between refreshes")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of user errors")
    a = parser.parse_args()
    try:
        sys.exit(run_tool(lambda: main(a), debug=a.debug))
    except BrokenPipeError:  # output piped into head/less that closed early
        sys.exit(0)
