"""DataLoader check: the train loader's worker processes start and deliver batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from detlab.diagnostics.core import FAIL, PASS, WARN, Report

__all__ = ["check_workers"]


def check_workers(
    cfg: Any,
    report: Report,
    timeout: float = 60.0,
    make_loader: Callable[[Any], Any] | None = None,
) -> None:
    """Start the train loader with ``DATALOADER.NUM_WORKERS`` workers and take two batches."""
    s = "dataloader"
    workers = int(cfg.DATALOADER.NUM_WORKERS)
    if make_loader is None:
        from detlab.data import build_detection_train_loader

        make_loader = build_detection_train_loader
    messages: list[str] = []

    class _Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "worker" in record.getMessage().lower():
                messages.append(record.getMessage())

    handler = _Grab(logging.WARNING)
    logging.getLogger("detlab").addHandler(handler)
    result: dict[str, Any] = {}

    def fetch() -> None:
        try:
            loader = make_loader(cfg)
            it = iter(loader)
            t0 = time.perf_counter()
            result["sizes"] = [len(next(it)) for _ in range(2)]
            result["seconds"] = time.perf_counter() - t0
            result["stats"] = dict(loader.stats()) if hasattr(loader, "stats") else {}
        except Exception as err:  # noqa: BLE001 - reported below
            result["error"] = err

    # (The loader itself switches OpenCV to one thread before forking its workers, so the
    # transform checks' multi-threaded OpenCV calls in this process cannot hang them.)
    thread = threading.Thread(target=fetch, daemon=True)
    try:
        thread.start()
        thread.join(timeout)
    finally:
        logging.getLogger("detlab").removeHandler(handler)
    if thread.is_alive():
        report.add(
            s,
            "workers",
            FAIL,
            f"no batch within {timeout:.0f} s with {workers} workers",
            "set DATALOADER.NUM_WORKERS 0 to load in-process, and check that the data "
            "folder is readable and not on a hung network mount.",
        )
        return  # fmt: skip
    if "error" in result:
        err = result["error"]
        report.add(
            s,
            "workers",
            FAIL,
            f"the train loader failed: {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}",
            "run with --debug; DATALOADER.NUM_WORKERS 0 rules out worker problems.",
        )
        return  # fmt: skip
    stats = result.get("stats", {})
    detail = (f"{workers} workers delivered 2 batches of {result['sizes']} images in "
              f"{result['seconds']:.1f} s")  # fmt: skip
    if stats.get("worker_failures") or messages:
        why = messages[0] if messages else "worker processes died"
        report.add(
            s,
            "workers",
            WARN,
            f"worker start-up failed, the loader fell back to "
            f"in-process loading ({why.splitlines()[0][:200]})",
            "set DATALOADER.NUM_WORKERS 0 (common on WSL/macOS), or raise the shared "
            "memory limit (docker --shm-size).",
            **stats,
        )
        return  # fmt: skip
    if workers == 0:
        detail = "in-process loading (DATALOADER.NUM_WORKERS 0) delivered 2 batches"
    report.add(s, "workers", PASS, detail, **stats)
