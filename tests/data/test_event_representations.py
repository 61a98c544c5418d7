"""Each representation against a slow, readable per-event loop; downsampling; the registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detlab.config import get_cfg
from detlab.data.events import (
    REPRESENTATION_REGISTRY,
    EventRepresentation,
    Events,
    StackedHistogram,
    TimeSurface,
    VoxelGrid,
    build_representation,
    downsample_events,
)
from detlab.utils.errors import UnknownNameError, UserError

H, W = 6, 7


def _wild_events(n=400, seed=0, t0=1000, t1=2000):
    """Events with duplicates, hot pixels, out-of-sensor coordinates, edge timestamps."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, W + 1, n)
    y = rng.integers(-1, H + 1, n)
    x[:60], y[:60] = 3, 2  # a hot pixel
    p = rng.integers(0, 2, n)
    t = np.sort(rng.integers(t0 - 50, t1 + 50, n))
    t[5], t[6] = t0, t1  # exactly on the window bounds
    t = np.sort(t)
    return Events(x, y, p.astype(np.uint8), t)


def _hist_reference(ev, t0, t1, nb, cutoff):
    out = np.zeros((2 * nb, H, W), np.int64)
    for x, y, p, t in zip(*ev, strict=True):
        if not (0 <= x < W and 0 <= y < H and t0 <= t < t1):
            continue
        b = math.floor((t - t0) * nb / (t1 - t0))
        out[p * nb + b, y, x] += 1
    return np.minimum(out, cutoff).astype(np.uint8)


def _voxel_reference(ev, t0, t1, nb):
    out = np.zeros((nb, H, W))
    for x, y, p, t in zip(*ev, strict=True):
        if not (0 <= x < W and 0 <= y < H):
            continue
        ts = (nb - 1) * (t - t0) / (t1 - t0)
        for b in range(nb):
            out[b, y, x] += (1 if p else -1) * max(0.0, 1 - abs(b - ts))
    return out


def _surface_reference(ev, t_end, since, tau):
    out = np.zeros((2, H, W))
    last = {}
    for x, y, p, t in zip(*ev, strict=True):
        if 0 <= x < W and 0 <= y < H and since <= t < t_end:
            last[(p, y, x)] = t
    for (p, y, x), t in last.items():
        out[p, y, x] = math.exp(-(t_end - t) / tau)
    return out


@pytest.fixture(params=["dense", "sparse"])
def counting(request, monkeypatch):
    """Both counting paths: accumulate into the dense tensor, or count distinct cells."""
    import detlab.data.events.representations as reps

    monkeypatch.setattr(reps, "_SPARSE_RATIO", 0 if request.param == "sparse" else 10**9)
    return request.param


@pytest.mark.parametrize("nb,cutoff", [(1, 255), (3, 10), (10, 2)])
def test_stacked_histogram_matches_loop(nb, cutoff, counting):
    ev = _wild_events()
    got = StackedHistogram(nb, cutoff)(ev, 1000, 2000, H, W)
    assert got.dtype.is_floating_point is False and tuple(got.shape) == (2 * nb, H, W)
    np.testing.assert_array_equal(got.numpy(), _hist_reference(ev, 1000, 2000, nb, cutoff))


def test_histogram_counts_past_int16_do_not_wrap(counting):
    n = 70_000  # one pixel, one bin: more events than int16 holds
    ev = Events(np.zeros(n), np.zeros(n), np.ones(n, np.uint8), np.full(n, 1500))
    got = StackedHistogram(1, 255)(ev, 1000, 2000, H, W)
    assert int(got[1, 0, 0]) == 255 and int(got.sum()) == 255


@pytest.mark.parametrize("nb", [1, 2, 5])
def test_voxel_grid_matches_loop(nb, counting):
    ev = _wild_events(seed=1, t0=1000, t1=2000)  # some events up to 50 µs outside the window
    got = VoxelGrid(nb)(ev, 1000, 2000, H, W)
    np.testing.assert_allclose(got.numpy(), _voxel_reference(ev, 1000, 2000, nb), atol=1e-5)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_voxel_grid_output_dtypes(dtype, counting):
    import torch

    ev = _wild_events(seed=4)
    got = VoxelGrid(3, dtype=getattr(torch, dtype))(ev, 1000, 2000, H, W)
    assert got.dtype == getattr(torch, dtype) and tuple(got.shape) == (3, H, W)
    tol = 1e-9 if dtype == "float64" else 0.05
    ref = _voxel_reference(ev, 1000, 2000, 3)
    np.testing.assert_allclose(got.float().numpy(), ref, atol=tol * max(1, np.abs(ref).max()))


@pytest.mark.parametrize(
    "history,tau",
    [(0, 200.0), (300, 200.0), (-1, 200.0), (600, 5.0)],  # last: older events underflow to 0
)
def test_time_surface_matches_loop(history, tau):
    ev = _wild_events(seed=2, t0=0 if history == 600 else 1000)
    rep = TimeSurface(tau_us=tau, history_us=history)
    since = 1000 if history == 0 else (2000 - history if history > 0 else -(10**9))
    got = rep(ev, 1000, 2000, H, W)
    ref = _surface_reference(ev, 2000, since, tau)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "rep", [StackedHistogram(4, 5), VoxelGrid(3), TimeSurface(150.0, 250), TimeSurface(80.0, -1)]
)
def test_windows_of_a_recording_equal_single_windows(rep):
    ev = _wild_events(n=900, seed=3, t0=0, t1=1000)
    ends = np.array([200, 400, 600, 800, 1000])
    many = rep.windows(ev, ends, 200, H, W)
    for end, got in zip(ends, many, strict=True):
        since = end - max(200, rep.history_us)
        lo, hi = np.searchsorted(ev.t, [since, end])
        one = rep(Events(*(a[lo:hi] for a in ev)), end - 200, end, H, W)
        np.testing.assert_allclose(got.numpy(), one.numpy(), atol=1e-6)


def test_empty_window_gives_zeros():
    for rep in (StackedHistogram(2, 4), VoxelGrid(2), TimeSurface()):
        out = rep(Events.empty(), 0, 100, H, W)
        assert tuple(out.shape) == (rep.num_channels, H, W) and float(out.abs().sum()) == 0


def test_downsample_sum_keeps_every_event_and_nearest_matches_interpolation():
    import torch
    import torch.nn.functional as F

    ev = _wild_events(seed=4)
    inside = (ev.x >= 0) & (ev.x < W) & (ev.y >= 0) & (ev.y < H)
    ev = Events(*(a[inside] for a in ev))
    hist = StackedHistogram(2, 255)
    full = hist(ev, 1000, 2000, H, W).to(torch.int64)
    small, h, w = downsample_events(ev, 2, "sum", H, W)
    assert (h, w) == (3, 4)
    summed = hist(small, 1000, 2000, h, w).to(torch.int64)
    padded = F.pad(full, (0, 1))  # W=7 -> 8 so 2x2 blocks tile it
    expected = padded.reshape(4, 3, 2, 4, 2).sum((2, 4))
    assert torch.equal(summed, expected.clamp(max=255))
    near, h2, w2 = downsample_events(ev, 2, "nearest", H, W)
    assert (h2, w2) == (3, 3)
    picked = hist(near, 1000, 2000, h2, w2)
    interp = F.interpolate(full[None].float(), size=(3, 3), mode="nearest-exact")[0]
    assert torch.equal(picked.to(torch.int64), interp.to(torch.int64))
    with pytest.raises(UserError, match="DOWNSAMPLE_MODE"):
        downsample_events(ev, 2, "mean", H, W)


def test_registry_and_config():
    assert {"StackedHistogram", "VoxelGrid", "TimeSurface"} <= set(REPRESENTATION_REGISTRY.names())
    cfg = get_cfg()
    cfg.INPUT.EVENTS.REPRESENTATION = "VoxelGrid"
    cfg.INPUT.EVENTS.NUM_BINS = 4
    rep = build_representation(cfg)
    assert isinstance(rep, VoxelGrid) and rep.num_channels == 4
    assert rep.fingerprint() != VoxelGrid(5).fingerprint()
    cfg.INPUT.EVENTS.REPRESENTATION = "StackedHistogramm"
    with pytest.raises(UnknownNameError, match="did you mean 'StackedHistogram'"):
        build_representation(cfg)
    with pytest.raises(UserError, match="COUNT_CUTOFF"):
        StackedHistogram(2, 300)


def test_broken_representation_fails_at_build_in_one_sentence():
    import torch

    from detlab.utils.errors import ContractError

    class OneChannelShort(EventRepresentation):
        num_channels = 2

        @classmethod
        def from_config(cls, cfg):
            return {}

        def __call__(self, events, t_start, t_end, height, width):
            return torch.zeros(1, height, width)

    REPRESENTATION_REGISTRY.register(OneChannelShort)
    cfg = get_cfg()
    cfg.INPUT.EVENTS.REPRESENTATION = "OneChannelShort"
    try:
        with pytest.raises(ContractError, match=r"gave \(1, 4, 6\), not \(2, 4, 6\)"):
            build_representation(cfg)
    finally:
        REPRESENTATION_REGISTRY._obj_map.pop("OneChannelShort")
