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

Events outside the sensor or the window are ignored (checked with four reductions; a mask
is built only when some event is outside). Indices are computed in place in NumPy; counting
runs in torch: sparse windows (under one event per 32 output cells, usual at 1 Mpx) sort the
events' cell indices and write only the cells hit; dense ones accumulate with ``index_add_``
(int16 with periodic clipping, so no count can overflow) or ``bincount`` (sums in float64).
Sparse outputs start as ``np.zeros`` (calloc), so memory pages without an event are never
written.
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
from detlab.utils.errors import ContractError, UserError
from detlab.utils.registry import Registry

__all__ = [
    "REPRESENTATION_REGISTRY",
    "EventRepresentation",
    "StackedHistogram",
    "TimeSurface",
    "VoxelGrid",
    "build_representation",
    "check_representation",
    "downsample_events",
]


def check_representation(component: Any, label: str, *_: Any) -> None:
    """A representation returns ``num_channels × H × W`` for a window (probe: 3 events)."""
    channels = getattr(component, "num_channels", None)
    if not callable(component) or not isinstance(channels, int) or channels < 1:
        raise ContractError(
            f"{label} breaks its contract: it must be callable and declare num_channels >= 1."
        )
    probe = Events(
        np.array([0, 3, 5]),
        np.array([1, 2, 3]),
        np.array([0, 1, 1], np.uint8),
        np.array([0, 40, 90]),
    )
    out = component(probe, 0, 100, 4, 6)
    if not torch.is_tensor(out) or tuple(out.shape) != (channels, 4, 6):
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ContractError(
            f"{label} breaks its contract: a 4x6 window gave {got}, not ({channels}, 4, 6)."
        )


REPRESENTATION_REGISTRY = Registry(
    "EVENT_REPRESENTATION",
    doc="""Event-window representations, selected by ``INPUT.EVENTS.REPRESENTATION``.

A registered class takes plain arguments, has ``from_config(cfg) -> dict`` and is callable as
``rep(events, t_start, t_end, height, width) -> Tensor[C, H, W]`` where ``events`` holds the
window's events (time-sorted, µs) and ``C == rep.num_channels``. ``history_us`` says how far
before ``t_end`` it needs events (0: the window only); ``fingerprint()`` names every
parameter (it keys the on-disk cache). Checked when built (a probe window of 4×6 pixels).
""",
    check=check_representation,
)

_CLIP_EVERY = 32767 - 255  # int16 accumulation stays exact between clips at <= 255
# Time surfaces: the "latest event" of a pixel that has none (any real timestamp is later, and
# ``_NEVER - t_end`` cannot overflow), and the age in units of tau past which float32
# exp(-age) is 0.
_NEVER = -(2**62)
_UNDERFLOW = 110.0
_NUMPY_DTYPES = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}
# Below one event per this many output cells, counting the distinct cells (a sort of the
# events) beats accumulating into, clipping and converting the whole dense tensor.
_SPARSE_RATIO = 32


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
    def _valid(
        events: Events,
        height: int,
        width: int,
        t_start: int | None = None,
        t_end: int | None = None,
        dtype: type = np.int64,
    ) -> tuple[np.ndarray, ...]:
        """``x, y, p`` (as ``dtype``, p 0/1) and ``t`` (int64), without the events outside the
        sensor (and outside ``[t_start, t_end)`` when given); a mask is built only if needed."""
        x, y = np.asarray(events.x, dtype=dtype), np.asarray(events.y, dtype=dtype)
        p = (np.asarray(events.p) > 0).astype(dtype)
        t = np.asarray(events.t, dtype=np.int64)
        if not len(t):
            return x, y, p, t
        ok = x.min() >= 0 and x.max() < width and y.min() >= 0 and y.max() < height
        if t_start is not None:
            ok = ok and t.min() >= t_start and t.max() < t_end
        if ok:
            return x, y, p, t
        keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        if t_start is not None:
            keep &= (t >= t_start) & (t < t_end)
        return x[keep], y[keep], p[keep], t[keep]


def _index_dtype(size: int) -> type:
    """int32 indices when they fit (half the memory traffic of int64), else int64."""
    return np.int32 if size < 2**31 else np.int64


def _pixel_index(
    p: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    plane: np.ndarray | int,
    planes: int,
    height: int,
    width: int,
) -> np.ndarray:
    """Flat index ``((p·planes + plane)·H + y)·W + x`` computed in place in one array of
    ``p``'s integer type."""
    flat = p * planes
    flat += plane
    flat *= height
    flat += y
    flat *= width
    flat += x
    return flat


def _count(flat: np.ndarray, size: int, cutoff: int) -> torch.Tensor:
    """uint8 counts of each index in ``[0, size)``, clipped at ``cutoff`` (<= 255)."""
    idx = torch.from_numpy(flat)
    if idx.numel() * _SPARSE_RATIO < size:  # few events: count the distinct cells
        cells, counts = torch.unique(idx, return_counts=True)
        out = torch.from_numpy(np.zeros(size, np.uint8))  # calloc: untouched pages stay free
        out[cells] = counts.clamp_(max=cutoff).to(torch.uint8)
        return out
    acc = torch.zeros(size, dtype=torch.int16)
    one = torch.ones((), dtype=torch.int16)
    for i in range(0, idx.numel(), _CLIP_EVERY):
        part = idx[i : i + _CLIP_EVERY]
        acc.index_add_(0, part, one.expand(part.numel()))
        acc.clamp_(max=cutoff)
    return acc.to(torch.uint8)


def _bilinear(
    idx: np.ndarray,
    left_w: np.ndarray,
    right_w: np.ndarray,
    size: int,
    shift: int,
    skip: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Float64 sums over ``[0, size)`` of ``left_w`` at ``idx`` and ``right_w`` at
    ``idx + shift`` (indices at or past ``size`` fall off), without the first ``skip``
    cells, as ``dtype``."""
    if idx.size * _SPARSE_RATIO < size:  # few events: sum per distinct cell
        flat = torch.from_numpy(np.concatenate([idx, idx + shift]))
        w = torch.from_numpy(np.concatenate([left_w, right_w]))
        keep = (flat >= skip) & (flat < size)
        cells, inverse = torch.unique(flat[keep] - skip, return_inverse=True)
        sums = torch.zeros(cells.numel(), dtype=torch.float64).index_add_(0, inverse, w[keep])
        if dtype in _NUMPY_DTYPES:  # calloc: the pages without an event are never written
            out = torch.from_numpy(np.zeros(size - skip, _NUMPY_DTYPES[dtype]))
        else:
            out = torch.zeros(size - skip, dtype=dtype)
        out[cells] = sums.to(dtype)
        return out
    both = np.concatenate([idx, idx + shift])  # one pass over the output, not two and a sum
    out = np.bincount(both, weights=np.concatenate([left_w, right_w]), minlength=size + shift)
    return torch.from_numpy(out[skip:size]).to(dtype)


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
        nb, size = self.num_bins, 2 * self.num_bins * height * width
        dtype = _index_dtype(size)
        x, y, p, t = self._valid(events, height, width, int(t_start), int(t_end), dtype)
        b = t - int(t_start)
        b *= nb
        b //= max(int(t_end) - int(t_start), 1)
        flat = _pixel_index(p, y, x, b.astype(dtype, copy=False), nb, height, width)
        return _count(flat, size, self.count_cutoff).view(2 * nb, height, width)


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
        nb, plane = self.num_bins, height * width
        x, y, p, t = self._valid(events, height, width)
        ts = (t - int(t_start)).astype(np.float64)
        ts *= nb - 1
        ts /= max(int(t_end) - int(t_start), 1)
        left = np.floor(ts)
        ts -= left  # now the fraction of the way to the next bin
        pol = p.astype(np.float64)
        pol *= 2
        pol -= 1
        right_w = pol * ts
        pol -= right_w  # now the left bin's weight
        # one leading plane for left bin -1 (events just before t_start), one trailing for nb
        idx = left.astype(np.int64)
        idx += 1
        if idx.size and (idx.min() < 0 or idx.max() > nb):  # events far outside the window
            keep = (idx >= 0) & (idx <= nb)
            idx, x, y, pol, right_w = idx[keep], x[keep], y[keep], pol[keep], right_w[keep]
        idx *= plane
        idx += y * width
        idx += x
        out = _bilinear(idx, pol, right_w, (nb + 1) * plane, plane, plane, self.dtype)
        return out.view(nb, height, width)


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
        age = last - int(t_end)  # exact in int64; _NEVER - t_end where no event was seen
        if int(t_end) - since < _UNDERFLOW * self.tau_us:  # else older events decay to 0 anyway
            np.putmask(age, last < since, _NEVER)
        out = age.astype(np.float32)
        out /= np.float32(self.tau_us)
        np.exp(out, out=out)  # float32 exp (the output's precision); exp(_NEVER / tau) == 0
        return torch.from_numpy(out).view(2, height, width)

    def _update(self, last: np.ndarray, events: Events, t_end: int, height: int, width: int):
        dtype = _index_dtype(last.size)
        x, y, p, t = self._valid(events, height, width, _NEVER, int(t_end), dtype)
        np.maximum.at(last, _pixel_index(p, y, x, 0, 1, height, width), t)

    def _since(self, t_start: int, t_end: int) -> int:
        return int(t_start) if self.history_us == 0 else int(t_end) - self.history_us

    def __call__(self, events, t_start, t_end, height, width):
        last = np.full(2 * height * width, _NEVER, np.int64)
        if len(events):
            self._update(last, events, t_end, height, width)
        return self._surface(last, t_end, self._since(t_start, t_end), height, width)

    def windows(self, events, window_ends, window_us, height, width):
        """Consecutive windows with the latest timestamps carried over (one pass)."""
        ends = np.asarray(window_ends, dtype=np.int64)
        last = np.full(2 * height * width, _NEVER, np.int64)
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
    """The ``INPUT.EVENTS.REPRESENTATION`` named in ``cfg`` (checked against the contract)."""
    return REPRESENTATION_REGISTRY.build(cfg.INPUT.EVENTS.REPRESENTATION, cfg)


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
