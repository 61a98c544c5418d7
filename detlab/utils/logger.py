"""The ``detlab`` logger: console on the main process, ``log.txt`` in the output directory."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["setup_logger"]

_FMT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


def setup_logger(
    output_dir: str | None = None, rank: int = 0, name: str = "detlab", level: int = logging.INFO
) -> logging.Logger:
    """Configure ``name``: stdout handler on rank 0, ``log.txt`` (rank 0) or ``log.txt.rankN``.

    Calling it again replaces the handlers it installed before, so it is safe in tests.
    """
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        if getattr(h, "_detlab", False):
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter(_FMT, datefmt="%m/%d %H:%M:%S")
    if rank == 0:
        sh = logging.StreamHandler(sys.stdout)
        sh.setFormatter(fmt)
        sh._detlab = True  # type: ignore[attr-defined]
        logger.addHandler(sh)
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        fname = "log.txt" if rank == 0 else f"log.txt.rank{rank}"
        fh = _FileHandler(os.path.join(output_dir, fname), encoding="utf-8")
        fh.setFormatter(fmt)
        fh._detlab = True  # type: ignore[attr-defined]
        logger.addHandler(fh)
    return logger


class _FileHandler(logging.FileHandler):
    """``log.txt``: a write that fails (full disk) is reported once in one line, not as a
    traceback per record; the console keeps logging."""

    _failed = False

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            super().handleError(record)
            return
        if not self._failed:
            self._failed = True
            reason = os.strerror(err.errno) if err.errno else str(err)
            print(f"warning: {self.baseFilename} cannot be written ({reason})", file=sys.stderr)
