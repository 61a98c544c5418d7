"""Run every diagnostic check in order and the ``tools/diagnose.py`` command line."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from detlab.diagnostics.core import SKIP, Report
from detlab.utils.cli import DetlabArgumentParser, run_tool
from detlab.utils.ops_cli import parse_with_overrides

__all__ = ["SECTIONS", "main", "run_diagnostics"]

SECTIONS = ("environment", "data", "transforms", "model", "overfit", "dataloader")


def run_diagnostics(
    cfg: Any,
    *,
    skip: Sequence[str] = (),
    max_images: int = 50,
    overfit_steps: int = 50,
    overfit_drop: float = 0.6,
    overfit_lr: float = 1e-3,
    overfit_images: int = 2,
    worker_timeout: float = 60.0,
) -> Report:
    """All checks on a (frozen) config; sections in ``skip`` are reported as skipped.

    Model checks run with ``TRAINER.CPU_THREADS`` torch threads when that key is set.
    """
    import torch

    threads = int(getattr(getattr(cfg, "TRAINER", None), "CPU_THREADS", 0) or 0)
    before = torch.get_num_threads()
    if threads > 0:  # time the model checks as training would run them
        torch.set_num_threads(threads)
    try:
        return _run_checks(
            cfg, skip, max_images, overfit_steps, overfit_drop, overfit_lr, overfit_images,
            worker_timeout,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)


def _run_checks(
    cfg: Any,
    skip: Sequence[str],
    max_images: int,
    overfit_steps: int,
    overfit_drop: float,
    overfit_lr: float,
    overfit_images: int,
    worker_timeout: float,
) -> Report:
    from detlab.diagnostics.data import check_datasets, check_transforms
    from detlab.diagnostics.environment import check_environment
    from detlab.diagnostics.model import check_model, check_overfit
    from detlab.diagnostics.workers import check_workers

    report = Report()

    def skipped(section: str) -> bool:
        if section in skip:
            report.add(section, "all checks", SKIP, "skipped (--skip)")
            return True
        return False

    if not skipped("environment"):
        check_environment(cfg, report)
    if report.failed("environment"):
        for section in SECTIONS[1:]:
            report.add(section, "all checks", SKIP, "the environment is broken (see above)")
        return report
    loaded: dict = {}
    if not skipped("data"):
        loaded = check_datasets(cfg, report, max_images)
    batch: list[dict] = []
    if not skipped("transforms"):
        batch = check_transforms(cfg, report, loaded, num=max(overfit_images, 1))
    batch = batch[: max(overfit_images, 1)]
    model = None
    if not skipped("model"):
        model = check_model(cfg, report, batch)
    if not skipped("overfit"):
        check_overfit(report, model, batch, overfit_steps, overfit_drop, overfit_lr)
    if not skipped("dataloader"):
        if loaded and all(n in loaded for n in cfg.DATASETS.TRAIN):
            check_workers(cfg, report, worker_timeout)
        else:
            report.add("dataloader", "workers", SKIP, "needs the training data (see above)")
    return report


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
