"""``tools/diagnose.py``: every diagnostic check on a config, as text or JSON."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from detlab.diagnostics.runner import SECTIONS, run_diagnostics
from detlab.utils.cli import DetlabArgumentParser, parse_with_overrides, run_tool

__all__ = ["build_parser", "main"]


def build_parser() -> DetlabArgumentParser:
    p = DetlabArgumentParser(
        description="Check environment, data, transforms, model, one-batch overfitting and "
        "DataLoader workers for a config; print a ✓/✗ summary with a fix for each ✗. Exit "
        "status: 0 all passed (warnings allowed), 1 a check failed, 2 the config itself is "
        "invalid (a misspelt key or bad value: one line on stderr).",
        epilog="Config overrides (KEY VALUE or KEY=VALUE) may appear anywhere.",
    )
    p.add_argument("--config-file", metavar="FILE", required=True, help="config YAML")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument(
        "--skip", nargs="+", default=[], metavar="SECTION", help=f"skip sections: {SECTIONS}"
    )
    p.add_argument("--max-images", type=int, default=50, help="images decoded per dataset")
    p.add_argument("--overfit-steps", type=int, default=50, help="steps (0 = skip the check)")
    p.add_argument("--overfit-drop", type=float, default=0.6, help="required loss fall (0..1)")
    p.add_argument("--overfit-lr", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--overfit-images", type=int, default=2, help="images in the fixed batch")
    p.add_argument("--worker-timeout", type=float, default=60.0, help="seconds for 2 batches")
    p.add_argument("--debug", action="store_true", help="show tracebacks of config errors")
    return p


def _run(args: Any) -> int:
    from detlab.config import load_config

    cfg = load_config(args.config_file, args.opts)  # a bad key: UserError -> exit 2
    report = run_diagnostics(
        cfg,
        skip=args.skip,
        max_images=args.max_images,
        overfit_steps=args.overfit_steps,
        overfit_drop=args.overfit_drop,
        overfit_lr=args.overfit_lr,
        overfit_images=args.overfit_images,
        worker_timeout=args.worker_timeout,
    )
    if args.json:
        print(report.to_json())
    else:
        print(report.format_text(f"detlab diagnose: {args.config_file}"))
    sys.stdout.flush()
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tools/diagnose.py``; returns the exit status (0, 1 or 2)."""
    parser = build_parser()
    args = parse_with_overrides(parser, argv)
    _split_skip(parser, args)
    return run_tool(lambda: _run(args), debug=args.debug)


def _split_skip(parser: DetlabArgumentParser, args: Any) -> None:
    """``--skip a b KEY VALUE``: section names end at the first config override token."""
    sections: list[str] = []
    for i, token in enumerate(args.skip):
        names = token.split(",")
        if all(n in SECTIONS for n in names):
            sections.extend(names)
        elif token.islower() and "." not in token and "=" not in token:
            parser.error(f"--skip: unknown section '{token}'; choose from {', '.join(SECTIONS)}")
        else:
            args.opts = list(args.skip[i:]) + list(args.opts)
            break
    args.skip = sections
