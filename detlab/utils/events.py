"""``EventStorage``: the scalars (and images) a training run records, iteration by iteration.

The trainer and hooks put scalars into the current storage; writers
(:mod:`detlab.utils.writers`) read what is new and write it to the console, ``metrics.jsonl``,
TensorBoard and wandb.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from fvcore.common.history_buffer import HistoryBuffer

__all__ = ["EventStorage", "get_event_storage"]

_CURRENT: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The storage of the running trainer (raises outside ``with EventStorage():``)."""
    if not _CURRENT:
        raise RuntimeError("get_event_storage() needs to be called inside `with EventStorage()`")
    return _CURRENT[-1]


class EventStorage:
    """Scalars by name with their iteration; images waiting to be written."""

    def __init__(self, start_iter: int = 0, max_history: int = 10000) -> None:
        self.iter = start_iter
        self._max_history = max_history
        self._history: dict[str, HistoryBuffer] = defaultdict(lambda: HistoryBuffer(max_history))
        self._latest: dict[str, tuple[float, int]] = {}
        self._smoothing: dict[str, bool] = {}
        self._images: list[tuple[str, Any, int]] = []
        self._texts: list[tuple[str, str, int]] = []

    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True) -> None:
        """Record ``value`` for ``name`` at the current iteration (last write wins)."""
        value = float(value)
        self._history[name].update(value, self.iter)
        self._latest[name] = (value, self.iter)
        self._smoothing.setdefault(name, smoothing_hint)

    def put_scalars(self, smoothing_hint: bool = True, **kwargs: float) -> None:
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def put_image(self, name: str, image: Any) -> None:
        """A C×H×W uint8 tensor to show in TensorBoard at the current iteration."""
        self._images.append((name, image, self.iter))

    def put_text(self, name: str, text: str) -> None:
        self._texts.append((name, text, self.iter))

    def history(self, name: str) -> HistoryBuffer:
        if name not in self._history:
            raise KeyError(f"No scalar named {name} has been recorded")
        return self._history[name]

    def has(self, name: str) -> bool:
        return name in self._latest

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (value, iteration)}`` of the newest value of every scalar."""
        return dict(self._latest)

    def median(self, name: str, window: int = 20) -> float:
        """Median of the last ``window`` finite values (skipped non-finite steps are counted by
        the NaN guard, not smeared over the next ``window`` log lines); NaN if none is finite."""
        values = [v for v, _ in self._history[name].values()[-window:] if math.isfinite(v)]
        return float(statistics.median(values)) if values else math.nan

    def smoothed(self, window: int = 20) -> dict[str, float]:
        """Latest values, median-smoothed over ``window`` for scalars that allow it."""
        out = {}
        for k, (v, _) in self._latest.items():
            out[k] = self.median(k, window) if self._smoothing.get(k, True) else v
            if isinstance(out[k], float) and math.isnan(out[k]):
                out[k] = v
        return out

    def pop_images(self) -> list[tuple[str, Any, int]]:
        images, self._images = self._images, []
        return images

    def pop_texts(self) -> list[tuple[str, str, int]]:
        texts, self._texts = self._texts, []
        return texts

    def step(self) -> None:
        self.iter += 1

    def __enter__(self) -> EventStorage:
        _CURRENT.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert _CURRENT[-1] is self
        _CURRENT.pop()
