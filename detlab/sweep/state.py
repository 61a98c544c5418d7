"""The sweep's state file (``sweep_state.json``): one record per trial, written atomically.

A record holds the trial's parameters, ``status`` (``pending``, ``running``, ``finished``,
``failed``, ``interrupted``), exit code, wall time, metrics, the tail of its log when it failed,
and for cluster jobs the job id and last scheduler state. Every write goes to a temporary file
in the same directory, is flushed to disk and renamed over the old file, so a crash never leaves
a half-written state. A lock file keeps two sweeps from driving the same root at once.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from detlab.utils.errors import UserError
from detlab.utils.file_io import atomic_write_text

__all__ = [
    "FINISHED",
    "STATE_FILE",
    "SweepState",
    "atomic_write_text",
    "sweep_lock",
]

STATE_FILE = "sweep_state.json"
FINISHED = "finished"
_VERSION = 1


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not valid JSON
        return None
    return value


class SweepState:
    """Trial records of one sweep root, keyed by trial name."""

    def __init__(self, root: str, trials: dict[str, dict] | None = None, meta: dict | None = None):
        self.root = root
        self.trials: dict[str, dict[str, Any]] = trials or {}
        self.meta: dict[str, Any] = meta or {}

    @property
    def path(self) -> str:
        return os.path.join(self.root, STATE_FILE)

    @classmethod
    def load(cls, root: str) -> SweepState:
        """The state in ``root``, or an empty one if there is none yet."""
        path = os.path.join(root, STATE_FILE)
        if not os.path.exists(path):
            return cls(root)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            trials = data["trials"]
            if not isinstance(trials, dict):
                raise TypeError("trials is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"Sweep state {path} is unreadable ({err}); move it away to start the sweep afresh."
            ) from None
        return cls(root, trials, data.get("meta") or {})

    def save(self) -> None:
        """Write the state atomically."""
        data = {"version": _VERSION, "meta": self.meta, "trials": self.trials}
        text = json.dumps(_json_safe(data), indent=2, sort_keys=False, allow_nan=False)
        atomic_write_text(self.path, text + "\n")

    def record(self, name: str) -> dict[str, Any]:
        return self.trials.setdefault(name, {"status": "pending"})

    def update(self, name: str, **fields: Any) -> None:
        """Set fields of a trial's record and save at once."""
        self.record(name).update(fields)
        self.save()


@contextlib.contextmanager
def sweep_lock(root: str) -> Iterator[None]:
    """Hold ``root/.sweep.lock`` (``flock``) for the life of a sweep run."""
    import fcntl

    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, ".sweep.lock")
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            owner = f.read().strip() or "unknown"
            raise UserError(
                f"Another sweep (pid {owner}) is running in {root}; wait for it or stop it first."
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
