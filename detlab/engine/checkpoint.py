"""Atomic, finite-checked checkpoints and the RNG state they carry.

A checkpoint file is written to a temporary sibling, fsynced and renamed over its name, so a
crash mid-save leaves the previous file intact; a full disk or a read-only folder ends in one
sentence naming the path, the free space and the checkpoint that is still intact. Weights are
checked finite before any save; non-finite weights are never written. ``last_checkpoint`` (a
one-line text file naming the newest periodic checkpoint) is also replaced atomically. Files
are read with ``torch.load(..., weights_only=True)``.

Each training checkpoint records whether training was *healthy* when it was saved
(``"health"``, see :mod:`detlab.engine.nan_guard`). The newest healthy periodic checkpoint
is the NaN guard's rollback target and survives rotation until a newer healthy one exists.
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from detlab.utils.errors import UserError
from detlab.utils.file_io import OutputWriteError, atomic_open, atomic_write_text, read_torch_file

__all__ = [
    "Checkpointer",
    "all_finite",
    "get_rng_state",
    "load_checkpoint_file",
    "set_rng_state",
    "unwrap_model",
]

logger = logging.getLogger("detlab")
_PERIODIC = re.compile(r"^model_(\d{7})\.pth$")


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper."""
    return model.module if hasattr(model, "module") and isinstance(model, nn.Module) else model


def all_finite(state: dict[str, Any]) -> bool:
    """True if every floating-point tensor in a (nested) state dict is finite."""
    for v in state.values():
        if isinstance(v, dict):
            if not all_finite(v):
                return False
        elif torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            return False
    return True


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states, in weights_only-safe types."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            np_state[0],
            torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint_file(path: str) -> dict[str, Any]:
    """Load a checkpoint safely; an unreadable file raises a one-sentence UserError."""
    data = read_torch_file(path, "Checkpoint")
    if not isinstance(data, dict):
        raise UserError(f"Checkpoint {path} does not hold a state dict; use a detlab checkpoint.")
    return data


def _read_health(path: str) -> dict[str, Any] | None:
    """The ``health`` record of a checkpoint file without reading its tensors (None if absent
    or unreadable)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file has no health
        return None
    health = data.get("health") if isinstance(data, dict) else None
    return health if isinstance(health, dict) else None


class Checkpointer:
    """Saves and loads everything needed to continue a run exactly.

    ``save(name, **extra)`` writes ``save_dir/name.pth`` with ``model``, ``optimizer``,
    ``scheduler``, ``scaler``, ``ema`` (those given) and ``extra``. Periodic checkpoints
    (``model_<iter>.pth``) are rotated to keep the newest ``max_keep``.
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        ema: Any = None,
        max_keep: int = 3,
        enabled: bool = True,
    ) -> None:
        self.model = model
        self.save_dir = save_dir
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self.ema = ema
        self.max_keep = max_keep
        self.enabled = enabled  # False on non-main processes
        self._health: dict[str, dict[str, Any] | None] = {}  # file name -> its health record

    # ------------------------------------------------------------------ saving
    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"model": unwrap_model(self.model).state_dict()}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def weights_finite(self) -> bool:
        ok = all_finite(unwrap_model(self.model).state_dict())
        if ok and self.ema is not None:
            ok = all_finite(self.ema.module.state_dict())
        return ok

    def save(self, name: str, *, tag_last: bool = False, **extra: Any) -> str | None:
        """Write ``name.pth`` atomically; return its path, or None if weights are not finite.

        ``extra`` entries are stored alongside the state (``iteration``, ``health``, ...).
        """
        if not self.enabled:
            return None
        path = os.path.join(self.save_dir, f"{name}.pth")
        if not self.weights_finite():
            logger.error(f"Weights are not finite: {os.path.basename(path)} was not written.")
            return None
        state = self._state()
        state.update(extra)
        try:
            with atomic_open(path, "wb") as f:
                torch.save(state, f)
            if tag_last:
                atomic_write_text(os.path.join(self.save_dir, "last_checkpoint"), f"{name}.pth\n")
        except OutputWriteError as err:
            raise self._write_error(err) from None
        self._health[os.path.basename(path)] = extra.get("health")
        if _PERIODIC.match(os.path.basename(path)):
            self._rotate()
        logger.info(f"Saved checkpoint {path}")
        return path

    def _write_error(self, err: OutputWriteError) -> OutputWriteError:
        """``err`` with what survived: the newest checkpoint on disk and how to continue."""
        last = self.last_checkpoint()
        if last is None:
            kept = "no earlier checkpoint of this run exists"
        else:
            kept = f"{os.path.basename(last)} is intact, so continue with --resume once fixed"
        out = OutputWriteError(f"{str(err).rstrip('.')}; {kept}.")
        out.errno = err.errno
        return out

    def _rotate(self) -> None:
        """Keep the newest ``max_keep`` periodic checkpoints and the newest healthy one."""
        if self.max_keep <= 0:
            return
        files = self.periodic_checkpoints()
        keep_healthy = self.newest_healthy(files)
        for old in files[: -self.max_keep]:
            if old == keep_healthy:
                continue
            try:
                os.remove(old)
                self._health.pop(os.path.basename(old), None)
            except OSError as err:
                logger.warning(f"Could not remove old checkpoint {old}: {err}")

    # ------------------------------------------------------------------ health
    def health(self, path: str) -> dict[str, Any] | None:
        """The ``health`` record saved in ``path`` (None for checkpoints that have none)."""
        name = os.path.basename(path)
        if name not in self._health:
            self._health[name] = _read_health(path)
        return self._health[name]

    def _maybe_healthy(self, path: str) -> bool:
        h = self.health(path)
        return h is None or bool(h.get("healthy", False))

    def newest_healthy(self, files: list[str] | None = None) -> str | None:
        """The newest periodic checkpoint saved while training was healthy, or None.

        A checkpoint written before health was recorded counts as healthy.
        """
        files = files if files is not None else self.periodic_checkpoints()
        return next((p for p in reversed(files) if self._maybe_healthy(p)), None)

    def rollback_target(self) -> str | None:
        """Newest readable, finite, healthy checkpoint: periodic ones, then ``model_init``.

        Finite but unhealthy checkpoints (saved while the loss climbed or steps were skipped)
        are never returned.
        """
        candidates = [p for p in reversed(self.periodic_checkpoints()) if self._maybe_healthy(p)]
        candidates.append(os.path.join(self.save_dir, "model_init.pth"))
        for path in candidates:
            if not os.path.isfile(path):
                continue
            try:
                data = load_checkpoint_file(path)
            except UserError:  # an unreadable file is not a rollback target
                continue
            if all_finite(data.get("model", {})):
                return path
        return None

    # ------------------------------------------------------------------ discovery
    def periodic_checkpoints(self) -> list[str]:
        """``model_<iter>.pth`` files in ``save_dir``, oldest first."""
        files = glob.glob(os.path.join(self.save_dir, "model_*.pth"))
        return sorted(f for f in files if _PERIODIC.match(os.path.basename(f)))

    def last_checkpoint(self) -> str | None:
        """Path named by ``last_checkpoint``, or None if there is none."""
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if not os.path.isfile(tag):
            return None
        with open(tag, encoding="utf-8") as f:
            name = f.read().strip()
        path = os.path.join(self.save_dir, name)
        return path if name and os.path.isfile(path) else None

    def resume_checkpoint(self) -> str | None:
        """The checkpoint ``--resume`` continues from: the one ``last_checkpoint`` names, or,
        when that file is missing or unreadable, the newest readable periodic checkpoint."""
        tag = os.path.join(self.save_dir, "last_checkpoint")
        named = None
        if os.path.isfile(tag):
            with open(tag, encoding="utf-8") as f:
                named = f.read().strip() or None
        candidates = list(reversed(self.periodic_checkpoints()))
        if named:
            named_path = os.path.join(self.save_dir, named)
            candidates = [named_path] + [p for p in candidates if p != named_path]
        for path in candidates:
            try:
                load_checkpoint_file(path)
            except UserError as err:
                if named and path == candidates[0]:
                    logger.warning(f"last_checkpoint names {named}, but: {err}")
                continue
            if named and path != candidates[0]:
                logger.warning(
                    f"Resuming from {os.path.basename(path)}, the newest readable checkpoint, "
                    f"instead of {named}."
                )
            return path
        return None

    # ------------------------------------------------------------------ loading
    def load(self, path: str, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
        """Restore model, optimizer, scheduler, scaler and EMA (except the names in
        ``exclude``) to continue a run; initial weights go through
        :func:`detlab.modeling.load_model_weights` instead.

        Returns the remaining entries (``iteration``, ``rng``, trainer state, ...).
        """
        data = load_checkpoint_file(path)
        model_state = data.pop("model", None)
        if model_state is None:
            model_state = data  # a bare state dict
            data = {}
        try:
            unwrap_model(self.model).load_state_dict(model_state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(
                f"Checkpoint {path} does not fit this model ({first.rstrip('.:')}); it was "
                "written by a different config, so use another OUTPUT_DIR or drop --resume."
            ) from None
        for key, obj in (
            ("optimizer", self.optimizer),
            ("scheduler", self.scheduler),
            ("scaler", self.scaler),
            ("ema", self.ema),
        ):
            if obj is not None and key in data and key not in exclude:
                try:
                    obj.load_state_dict(data.pop(key))
                except (ValueError, KeyError, RuntimeError) as err:
                    raise UserError(
                        f"Checkpoint {path}: the saved {key} state does not fit this run "
                        f"({type(err).__name__}); it was written by a different config, so "
                        "use another OUTPUT_DIR or drop --resume."
                    ) from None
        return data
