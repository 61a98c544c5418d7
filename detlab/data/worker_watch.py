"""Dead DataLoader workers reported where the loader can handle them.

PyTorch's multi-process DataLoader installs a SIGCHLD handler that raises ``RuntimeError:
DataLoader worker (pid N) is killed by signal`` in whatever code the main thread runs when a
worker dies — usually the model's forward pass, far from any ``try`` around the loader — and
the run ends in a traceback. :func:`install` wraps that handler: while a loader fetches a batch
(:class:`WatchedIterator`) it raises as before (out of the blocked queue read, where the loader
catches it); at any other moment it only counts the event, and the loader checks its own
workers at its next fetch.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["WatchedIterator", "install"]


class _State:
    fetching = 0  # loaders currently inside a fetch
    events = 0  # SIGCHLD signals seen


_state = _State()


def _wrap(torch_handler: Any):
    def on_sigchld(signum: int, frame: Any) -> None:
        _state.events += 1
        if _state.fetching and callable(torch_handler):
            torch_handler(signum, frame)  # raises if one of the workers died abnormally

    on_sigchld._detlab_wrapper = True  # type: ignore[attr-defined]
    return on_sigchld


def install() -> None:
    """Wrap the current SIGCHLD handler (PyTorch's, set when workers start); idempotent."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGCHLD"):
        return
    current = signal.getsignal(signal.SIGCHLD)
    if getattr(current, "_detlab_wrapper", False):
        return
    signal.signal(signal.SIGCHLD, _wrap(current))


class WatchedIterator:
    """Wraps a multi-process DataLoader iterator: ``next()`` raises ``RuntimeError`` naming
    the dead workers if any of its workers died since the last fetch."""

    def __init__(self, it: Any) -> None:
        self.it = it
        self.seen = _state.events

    def __iter__(self) -> WatchedIterator:
        return self

    def __next__(self) -> Any:
        _state.fetching += 1
        try:
            if _state.events != self.seen:
                self.seen = _state.events
                dead = [w.pid for w in getattr(self.it, "_workers", ()) if not w.is_alive()]
                if dead:
                    pids = ", ".join(str(p) for p in dead)
                    raise RuntimeError(f"DataLoader worker (pid(s) {pids}) exited unexpectedly")
            return next(self.it)
        finally:
            _state.fetching -= 1
