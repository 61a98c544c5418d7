"""Run every diagnostic check in order (the command line is :mod:`detlab.diagnostics.cli`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detlab.diagnostics.core import SKIP, Report

__all__ = ["SECTIONS", "run_diagnostics"]

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
