"""Dense tensors from event windows: ``REPRESENTATION_REGISTRY`` and the built-in three.

A window is the events with timestamps in ``[t_start, t_end)`` (µs). Built-ins:

* ``StackedHistogram`` (RVT): per polarity and time bin ``b = floor(T·(t - t_start) /
  (t_end - t_start))`` the event count of each pixel, clipped at ``count_cutoff``, uint8,
  shape ``(2·T, H, W)`` with channel ``p·T + b`` (OFF bins first, then ON bins, as RVT).
* ``VoxelGrid`` (Zhu et al. 2019): ``t* = (B - 1)·(t - t_start) / (t_end - t_start)``; each
  event adds its polarity (±1) times ``max(0, 1 - |b - t*|)`` to bins ``floor(t*)`` and
  ``floor(t*) + 1``; float32 ``(B, H, W)``.
* ``TimeSurface`` (exponential decay, Lagorce et al. 2016 over the whole sensor): per
  polarity and pixel ``exp(-(t_end - t_last) / tau)`` of the latest event ``t_last`` in
  ``[t_end - history, t_end)``, 0 where there is none; float32 ``(2, H, W)``. ``history`` 0
  means the window itself, -1 the whole recording; a history longer than the window makes the
  reader fetch older events.

Events outside the sensor or the window are ignored. Counting runs in torch on one thread's
worth of work (``index_add_`` into int16 with periodic clipping, so no count can overflow).
:func:`downsample_events` maps events to a coarser grid before any representation: ``"sum"``
(``x // f``: every event kept, counts of f×f pixels add up) or ``"nearest"`` (keep the events
of pixel ``f·i + f // 2`` only — what RVT's ``nearest-exact`` downsampling of a full-resolution
histogram gives).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from detlab.data.events.readers import Events
from detlab.utils.errors import UserError
from detlab.utils.registry import Registry

__all__ = [
    "REPRESENTATION_REGISTRY",
    "EventRepresentation",
    "StackedHistogram",
    "TimeSurface",
    "VoxelGrid",
    "build_representation",
    "downsample_events",
]

REPRESENTATION_REGISTRY = Registry(
    "EVENT_REPRESENTATION",
    doc="""Event-window representations, selected by ``INPUT.EVENTS.REPRESENTATION``.

A registered class takes plain arguments, has ``from_config(cfg) -> dict`` and is callable as
``rep(events, t_start, t_end, height, width) -> Tensor[C, H, W]`` where ``events`` holds the
window's events (time-sorted, µs) and ``C == rep.num_channels``. ``history_us`` says how far
before ``t_end`` it needs events (0: the window only); ``fingerprint()`` names every
parameter (it keys the on-disk cache).
""",
)

_CLIP_EVERY = 32767 - 255  # int16 accumulation stays exact between clips at <= 255


class EventRepresentation:
    """Base class: coordinate checks, flat indexing and windows of a whole recording."""

    num_channels: int = 0
    history_us: int = 0

    def __call__(
        self, events: Events, t_start: int, t_end: int, height: int, width: int
    ) -> torch.Tensor:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def windows(
        self, events: Events, window_ends: np.ndarray, window_us: int, height: int, width: int
    ) -> list[torch.Tensor]:
        """Representations of the windows ``[end - window_us, end)`` of one recording."""
        ends = np.asarray(window_ends, dtype=np.int64)
        lo = np.searchsorted(events.t, ends - max(window_us, self.history_us), side="left")
        hi = np.searchsorted(events.t, ends, side="left")
        out = []
        for a, b, end in zip(lo.tolist(), hi.tolist(), ends.tolist(), strict=True):
            ev = Events(events.x[a:b], events.y[a:b], events.p[a:b], events.t[a:b])
            out.append(self(ev, end - window_us, end, height, width))
        return out

    @staticmethod
    def _coords(events: Events, height: int, width: int) -> tuple[torch.Tensor, ...]:
        x, y, p, t = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)) for a in events)
        inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        return x, y, p, t, inside


@REPRESENTATION_REGISTRY.register()
class StackedHistogram(EventRepresentation):
    """RVT's stacked histogram: ``2·num_bins`` uint8 channels of clipped event counts."""

    def __init__(self, num_bins: int = 10, count_cutoff: int = 10) -> None:
        if num_bins < 1:
            raise UserError(f"INPUT.EVENTS.NUM_BINS must be >= 1, got {num_bins}.")
        if not 1 <= count_cutoff <= 255:
            raise UserError(f"INPUT.EVENTS.COUNT_CUTOFF must be in 1..255, got {count_cutoff}.")
        self.num_bins, self.count_cutoff = int(num_bins), int(count_cutoff)
        self.num_channels = 2 * self.num_bins

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        e = cfg.INPUT.EVENTS
        return {"num_bins": e.NUM_BINS, "count_cutoff": e.COUNT_CUTOFF}

    def fingerprint(self) -> str:
        return f"hist_T{self.num_bins}_c{self.count_cutoff}"

    def __call__(self, events, t_start, t_end, height, width):
        nb = self.num_bins
        out = torch.zeros(2 * nb * height * width, dtype=torch.int16)
        if len(events):
            x, y, p, t, keep = self._coords(events, height, width)
            b = torch.div(
                (t - int(t_start)) * nb, max(int(t_end) - int(t_start), 1), rounding_mode="floor"
            )
            keep &= (b >= 0) & (b < nb)
            flat = (((p.clamp(0, 1) * nb + b) * height + y) * width + x)[keep]
            one = torch.ones((), dtype=torch.int16)
            for i in range(0, flat.numel(), _CLIP_EVERY):
                part = flat[i : i + _CLIP_EVERY]
                out.index_add_(0, part, one.expand(part.numel()))
                if i + _CLIP_EVERY < flat.numel():
                    out.clamp_(max=self.count_cutoff)
        out.clamp_(max=self.count_cutoff)
        return out.to(torch.uint8).view(2 * nb, height, width)


@REPRESENTATION_REGISTRY.register()
class VoxelGrid(EventRepresentation):
    """Voxel grid with bilinear weights in time (signed polarity); float32 ``(B, H, W)``."""

    def __init__(self, num_bins: int = 10, dtype: torch.dtype = torch.float32) -> None:
        if num_bins < 1:
            raise UserError(f"INPUT.EVENTS.NUM_BINS must be >= 1, got {num_bins}.")
        self.num_bins, self.num_channels, self.dtype = int(num_bins), int(num_bins), dtype

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        return {"num_bins": cfg.INPUT.EVENTS.NUM_BINS}

    def fingerprint(self) -> str:
        return f"voxel_B{self.num_bins}"

    def __call__(self, events, t_start, t_end, height, width):
        nb = self.num_bins
        out = torch.zeros(nb * height * width, dtype=torch.float64)
        if len(events):
            x, y, p, t, inside = self._coords(events, height, width)
            span = max(int(t_end) - int(t_start), 1)
            ts = (nb - 1) * (t - int(t_start)).to(torch.float64) / span
            left = ts.floor()
            frac = ts - left
            left = left.long()
            pol = (2 * p.clamp(0, 1) - 1).to(torch.float64)
            pix = y * width + x
            for b, w in ((left, pol * (1 - frac)), (left + 1, pol * frac)):
                keep = inside & (b >= 0) & (b < nb)
                out.index_add_(0, (b * (height * width) + pix)[keep], w[keep])
        return out.to(self.dtype).view(nb, height, width)


@REPRESENTATION_REGISTRY.register()
class TimeSurface(EventRepresentation):
    """Exponentially decaying time surface per polarity; float32 ``(2, H, W)``."""

    def __init__(self, tau_us: float = 50000.0, history_us: int = 0) -> None:
        if tau_us <= 0:
            raise UserError(f"INPUT.EVENTS.TAU_US must be > 0, got {tau_us}.")
        if history_us < 0 and history_us != -1:
            raise UserError(f"INPUT.EVENTS.HISTORY_US must be >= 0 or -1 (all), got {history_us}.")
        self.tau_us, self.num_channels = float(tau_us), 2
        self.history_us = int(history_us) if history_us >= 0 else np.iinfo(np.int64).max // 4

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        e = cfg.INPUT.EVENTS
        return {"tau_us": e.TAU_US, "history_us": e.HISTORY_US}

    def fingerprint(self) -> str:
        return f"ts_tau{self.tau_us:g}_h{self.history_us}"

    def _surface(self, last: np.ndarray, t_end: int, since: int, height: int, width: int):
        out = np.zeros(last.shape, np.float32)
        seen = last >= since
        out[seen] = np.exp((last[seen] - int(t_end)) / self.tau_us)
        return torch.from_numpy(out).view(2, height, width)

    def _update(self, last: np.ndarray, events: Events, t_end: int, height: int, width: int):
        x, y, p, t, keep = self._coords(events, height, width)
        keep &= t < int(t_end)
        flat = ((p.clamp(0, 1) * height + y) * width + x)[keep].numpy()
        np.maximum.at(last, flat, t[keep].numpy())

    def _since(self, t_start: int, t_end: int) -> int:
        return int(t_start) if self.history_us == 0 else int(t_end) - self.history_us

    def __call__(self, events, t_start, t_end, height, width):
        last = np.full(2 * height * width, np.iinfo(np.int64).min, np.int64)
        if len(events):
            self._update(last, events, t_end, height, width)
        return self._surface(last, t_end, self._since(t_start, t_end), height, width)

    def windows(self, events, window_ends, window_us, height, width):
        """Consecutive windows with the latest timestamps carried over (one pass)."""
        ends = np.asarray(window_ends, dtype=np.int64)
        last = np.full(2 * height * width, np.iinfo(np.int64).min, np.int64)
        out, done = [], 0
        for end in ends.tolist():
            since = self._since(end - window_us, end)
            a = max(done, int(np.searchsorted(events.t, since, side="left")))
            b = int(np.searchsorted(events.t, end, side="left"))
            if b > a:
                ev = Events(events.x[a:b], events.y[a:b], events.p[a:b], events.t[a:b])
                self._update(last, ev, end, height, width)
            done = max(done, b)
            out.append(self._surface(last, end, since, height, width))
        return out


def build_representation(cfg: Any) -> EventRepresentation:
    """The ``INPUT.EVENTS.REPRESENTATION`` named in ``cfg``."""
    cls = REPRESENTATION_REGISTRY.get(cfg.INPUT.EVENTS.REPRESENTATION)
    return cls(**cls.from_config(cfg))


def downsample_events(
    events: Events, factor: int, mode: str, height: int, width: int
) -> tuple[Events, int, int]:
    """Events on a grid ``factor`` times coarser → (events, new height, new width)."""
    f = int(factor)
    if f == 1:
        return events, height, width
    if f < 1:
        raise UserError(f"INPUT.EVENTS.DOWNSAMPLE must be a positive integer, got {factor}.")
    x = np.asarray(events.x, dtype=np.int64)
    y = np.asarray(events.y, dtype=np.int64)
    if mode == "sum":
        return (
            Events(x // f, y // f, events.p, events.t),
            math.ceil(height / f),
            math.ceil(width / f),
        )
    if mode == "nearest":
        keep = (x % f == f // 2) & (y % f == f // 2)
        ev = Events(x[keep] // f, y[keep] // f, events.p[keep], events.t[keep])
        return ev, height // f, width // f
    raise UserError(f"INPUT.EVENTS.DOWNSAMPLE_MODE must be 'sum' or 'nearest', got '{mode}'.")
