"""Event writers: console, ``metrics.jsonl``, TensorBoard and wandb.

Each writer keeps track of what it has written and on ``write()`` writes what is new in the
current :class:`~detlab.utils.events.EventStorage`. ``close()`` flushes and releases files.
A wandb failure only warns; training goes on without it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import os
import resource
import sys
from collections import defaultdict
from typing import Any

import torch

from detlab.utils.events import get_event_storage

__all__ = [
    "ConsoleWriter",
    "EventWriter",
    "JSONWriter",
    "TensorboardWriter",
    "WandbWriter",
    "peak_memory_mb",
]

logger = logging.getLogger("detlab")


def peak_memory_mb() -> float:
    """Peak memory in MB: CUDA max allocated when on GPU, else the process's max RSS."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


class EventWriter:
    """Base writer: remembers, per scalar, the last iteration it wrote."""

    def __init__(self) -> None:
        self._written: dict[str, int] = {}

    def _new_scalars(self) -> dict[int, dict[str, float]]:
        by_iter: dict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, it) in get_event_storage().latest().items():
            if self._written.get(name, -(2**62)) < it:
                by_iter[it][name] = value
                self._written[name] = it
        return dict(sorted(by_iter.items()))

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _json_value(v: float) -> float | None | str:
    if math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


class JSONWriter(EventWriter):
    """One JSON object per iteration with new scalars: ``{"iteration": i, name: value, ...}``.

    Non-finite values are written as the strings "nan"/"inf" so every line stays valid JSON.
    """

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._file: Any = None

    def write(self) -> None:
        from detlab.utils.file_io import output_write_error

        try:
            if self._file is None:  # opened on first write, after a resume may have trimmed it
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            for it, scalars in self._new_scalars().items():
                items = sorted(scalars.items())
                record = {"iteration": it, **{k: _json_value(v) for k, v in items}}
                self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:  # a full disk: one sentence naming the file
            raise (output_write_error(err, self.path) or err) from None

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):  # flushing onto a full disk fails again
                self._file.close()
            self._file = None


class TensorboardWriter(EventWriter):
    """Scalars, texts (e.g. the resolved config) and images into TensorBoard event files."""

    def __init__(self, log_dir: str, purge_step: int | None = None, config_text: str = "") -> None:
        super().__init__()
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a killed run wrote after its last checkpoint.
        self._writer = SummaryWriter(log_dir, purge_step=purge_step or None)
        if config_text:
            indented = "\n".join("    " + line for line in config_text.splitlines())
            self._writer.add_text("config", indented, purge_step or 0)

    def write(self) -> None:
        storage = get_event_storage()
        for it, scalars in self._new_scalars().items():
            for k, v in scalars.items():
                self._writer.add_scalar(k, v, it)
        for name, text, it in storage.pop_texts():
            self._writer.add_text(name, text, it)
        for name, img, it in storage.pop_images():
            self._writer.add_image(name, img, it, dataformats="CHW")
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class ConsoleWriter(EventWriter):
    """One log line: iteration, losses, LR, s/iter, data time, ETA, memory, NaN skips, clips."""

    def __init__(self, max_iter: int, window: int = 20) -> None:
        super().__init__()
        self.max_iter = max_iter
        self.window = window

    def write(self) -> None:
        storage = get_event_storage()
        it = storage.iter
        latest = storage.latest()
        parts = [f"iter: {it + 1}/{self.max_iter}"]
        losses = [k for k in latest if k.startswith("loss") or k == "total_loss"]
        for k in sorted(losses, key=lambda n: (n != "total_loss", n)):
            parts.append(f"{k}: {storage.median(k, self.window):.4g}")
        if "lr" in latest:
            parts.append(f"lr: {latest['lr'][0]:.3e}")
        if "time" in latest:
            sec = storage.median("time", self.window)
            eta = datetime.timedelta(seconds=int(sec * max(self.max_iter - it - 1, 0)))
            parts.append(f"time: {sec:.3f} s/it")
            parts.append(f"eta: {eta}")
        if "data_time" in latest:
            parts.append(f"data: {storage.median('data_time', self.window):.3f} s")
        if "grad_norm" in latest:
            parts.append(f"grad_norm: {latest['grad_norm'][0]:.3g}")
        for k in ("nan/skipped", "nan/rollbacks", "clip/count", "data/skipped_images"):
            if k in latest and latest[k][0]:
                parts.append(f"{k}: {int(latest[k][0])}")
        parts.append(f"mem: {peak_memory_mb():.0f} MB")
        logger.info("  ".join(parts))


class WandbWriter(EventWriter):
    """wandb run (offline unless ``WANDB_MODE`` or the config says otherwise).

    Any wandb error is logged as a warning and disables the writer; training goes on.
    """

    def __init__(
        self,
        output_dir: str,
        config: dict[str, Any],
        project: str = "detlab",
        mode: str = "offline",
        name: str = "",
    ) -> None:
        super().__init__()
        self.run = None
        self.mode = os.environ.get("WANDB_MODE", mode) or "offline"
        try:
            import wandb

            os.makedirs(output_dir, exist_ok=True)
            self.run = wandb.init(
                project=project,
                name=name or None,
                dir=output_dir,
                mode=self.mode,
                config=config,
                reinit="finish_previous",
            )
        except Exception as err:  # noqa: BLE001 - any wandb failure must not end training
            logger.warning(f"wandb could not start ({err}); training goes on without wandb.")
            self.run = None

    @property
    def run_dir(self) -> str | None:
        if self.run is None:
            return None
        return os.path.dirname(self.run.dir.rstrip("/"))

    def write(self) -> None:
        if self.run is None:
            return
        try:
            for it, scalars in self._new_scalars().items():
                self.run.log(scalars, step=it)
        except Exception as err:  # noqa: BLE001
            logger.warning(f"wandb logging failed ({err}); training goes on without wandb.")
            self.run = None

    def close(self) -> None:
        if self.run is None:
            return
        run_dir = self.run_dir
        try:
            self.run.finish()
        except Exception as err:  # noqa: BLE001
            logger.warning(f"wandb could not finish cleanly ({err}).")
        if self.mode == "offline" and run_dir:
            logger.info(f"wandb offline run saved; upload it with: wandb sync {run_dir}")
        self.run = None
