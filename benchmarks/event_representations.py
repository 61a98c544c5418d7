#!/usr/bin/env python
"""Event-representation throughput: detlab's representations against tonic's transforms.

Same events, one core (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``), outputs checked
equal before any timing. Recordings are synthetic (uniform pixels, sorted timestamps, 2 M
events/s) on two sensors: 304×240 (Gen1) and 1280×720 (1 Mpx). Each pair runs ``--repeats``
times in alternating order; the script prints median process CPU times (the machine may be
shared: CPU time excludes waiting for a core), events/s, the median of the per-repeat ratios,
the ratio of the fastest runs (least disturbed by other jobs) and the wall-time ratio.

* **Stacked histogram** (RVT, 2 polarities × 10 bins per 50 ms window, uint8 counts clipped at
  255): detlab ``StackedHistogram.windows`` over all windows of the recording against
  ``tonic.transforms.ToFrame(time_window=5 ms)`` (int16 frames of 2 polarities), regrouped as
  10 frames per window. Identical output is required (tonic's counts clipped at 255; none
  reach it here).
  For 1 Mpx also with the sensor halved first, as RVT trains on it: detlab's
  ``downsample_events(..., 2, "sum")`` against ``tonic.transforms.Downsample(spatial_factor=
  0.5)`` (the same ``x // 2``) before each histogram.
* **Voxel grid** (10 bins per window): detlab ``VoxelGrid`` per window against
  ``tonic.transforms.ToVoxelGrid(n_time_bins=10)`` per window. tonic normalises time by the
  number of bins ``B`` and drops the weight that falls beyond the last bin, which equals
  detlab's grid (Zhu et al.'s ``B - 1`` normalisation) with ``B + 1`` bins over
  ``[t_first, t_last]``, last bin removed; detlab computes those 11 bins. Equal up to float32
  rounding (max |difference| printed).
* **Time surface** (tau 50 ms, 50 ms windows, memory over the whole recording): detlab
  ``TimeSurface(history_us=-1).windows`` against ``tonic.transforms.ToTimesurface``. Equal up
  to float32 rounding (tonic returns float64).

Needs tonic, which detlab does not depend on: run it in an environment that has it, e.g. a
virtual environment with detlab's packages plus ``pip install tonic``.

    OMP_NUM_THREADS=1 python benchmarks/event_representations.py [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detlab.data.events import (  # noqa: E402
    Events,
    StackedHistogram,
    TimeSurface,
    VoxelGrid,
    downsample_events,
)

WINDOW_US, BINS, TAU_US = 50_000, 10, 50_000.0


def recording(height: int, width: int, n: int, duration_us: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ev = np.zeros(n, dtype=[("x", "<i8"), ("y", "<i8"), ("t", "<i8"), ("p", "<i8")])
    ev["x"] = rng.integers(0, width, n)
    ev["y"] = rng.integers(0, height, n)
    ev["p"] = rng.integers(0, 2, n)
    ev["t"] = np.sort(rng.integers(0, duration_us, n))
    return ev


def _events(ev: np.ndarray) -> Events:
    return Events(ev["x"], ev["y"], ev["p"].astype(np.uint8), ev["t"])


def histogram_pair(ev, height, width, factor=1):
    import tonic.transforms as T

    frame_us = WINDOW_US // BINS
    n_frames = int((ev["t"][-1] - ev["t"][0] - frame_us) // frame_us) + 1
    n_windows = n_frames // BINS
    ends = int(ev["t"][0]) + WINDOW_US * np.arange(1, n_windows + 1)
    events = _events(ev)
    rep = StackedHistogram(BINS, 255)
    full = (height, width)
    height, width = height // factor, width // factor
    frames = T.ToFrame(sensor_size=(width, height, 2), time_window=frame_us)
    pipeline = (
        T.Compose([T.Downsample(spatial_factor=1 / factor), frames]) if factor > 1 else frames
    )

    def ours():
        small = downsample_events(events, factor, "sum", *full)[0]
        return rep.windows(small, ends, WINDOW_US, height, width)

    def theirs():
        return pipeline(ev.copy())

    def check(a, b):
        ref = b[: n_windows * BINS].reshape(n_windows, BINS, 2, height, width)
        ref = np.minimum(
            ref.transpose(0, 2, 1, 3, 4).reshape(n_windows, 2 * BINS, height, width), 255
        )
        return all(np.array_equal(x.numpy(), r) for x, r in zip(a, ref, strict=True)), 0.0

    n_events = int(np.searchsorted(ev["t"], ends[-1]))
    return ours, theirs, check, n_events


def _window_slices(ev):
    t = ev["t"]
    edges = np.arange(int(t[0]), int(t[-1]), WINDOW_US)
    idx = np.searchsorted(t, edges)
    return [ev[a:b] for a, b in zip(idx[:-1], idx[1:], strict=True) if b - a > 1]


def voxel_pair(ev, height, width):
    import tonic.transforms as T

    slices = _window_slices(ev)
    rep = VoxelGrid(BINS + 1)
    prepared = [(_events(s), int(s["t"][0]), int(s["t"][-1])) for s in slices]
    tonic_voxel = T.ToVoxelGrid(sensor_size=(width, height, 2), n_time_bins=BINS)

    def ours():
        return [rep(e, a, b, height, width)[:BINS] for e, a, b in prepared]

    def theirs():
        return [tonic_voxel(s.copy())[:, 0] for s in slices]

    def check(a, b):
        diff = max(float(np.abs(x.numpy() - y).max()) for x, y in zip(a, b, strict=True))
        return diff < 1e-5, diff

    return ours, theirs, check, sum(len(s) for s in slices)


def surface_pair(ev, height, width):
    import tonic.transforms as T

    t0 = int(ev["t"][0])
    n_windows = int((ev["t"][-1] - t0 - WINDOW_US) // WINDOW_US) + 1
    ends = t0 + WINDOW_US * np.arange(1, n_windows + 1)
    events = _events(ev)
    rep = TimeSurface(TAU_US, history_us=-1)

    def ours():
        return rep.windows(events, ends, WINDOW_US, height, width)

    def theirs():
        return T.ToTimesurface(sensor_size=(width, height, 2), dt=WINDOW_US, tau=TAU_US)(ev.copy())

    def check(a, b):
        diff = max(float(np.abs(x.numpy() - y).max()) for x, y in zip(a, b, strict=True))
        return len(a) == len(b) and diff < 1e-5, diff

    return ours, theirs, check, int(np.searchsorted(ev["t"], ends[-1]))


def run(name, pair, repeats):
    ours, theirs, check, n_events = pair
    ok, diff = check(ours(), theirs())
    if not ok:
        raise SystemExit(f"{name}: detlab and tonic outputs differ (max |diff| {diff:g}).")
    cpu = {"detlab": [], "tonic": []}
    wall = {"detlab": [], "tonic": []}
    for r in range(repeats):
        order = [("detlab", ours), ("tonic", theirs)]
        for label, fn in order if r % 2 == 0 else order[::-1]:
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            cpu[label].append(time.process_time() - c0)
            wall[label].append(time.perf_counter() - w0)
    ratio = statistics.median(b / a for a, b in zip(cpu["detlab"], cpu["tonic"], strict=True))
    best = min(cpu["tonic"]) / min(cpu["detlab"])
    wall_ratio = statistics.median(
        b / a for a, b in zip(wall["detlab"], wall["tonic"], strict=True)
    )
    md, mt = statistics.median(cpu["detlab"]), statistics.median(cpu["tonic"])
    same = "identical" if diff == 0 else f"max diff {diff:.1e}"
    print(
        f"| {name} | {n_events / md / 1e6:.1f} M ev/s ({md * 1e3:.0f} ms) | "
        f"{n_events / mt / 1e6:.1f} M ev/s ({mt * 1e3:.0f} ms) | {ratio:.1f}× "
        f"(fastest runs {best:.1f}×, wall {wall_ratio:.1f}×) | {same} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--events", type=float, default=2.0, help="million events per second")
    parser.add_argument("--seconds", type=float, default=1.0, help="recording length")
    args = parser.parse_args()
    try:
        import tonic
    except ImportError:
        print("This benchmark compares against tonic; run it where tonic is installed.")
        return 2
    torch.set_num_threads(1)
    print(f"detlab vs tonic {tonic.__version__}, numpy {np.__version__}, torch {torch.__version__}")
    print(f"{platform.processor() or platform.machine()}, load average {os.getloadavg()}")
    print("| representation, sensor | detlab (CPU) | tonic (CPU) | speed-up | output |")
    print("|---|---|---|---|---|")
    duration = int(args.seconds * 1e6)
    for height, width in ((240, 304), (720, 1280)):
        ev = recording(height, width, int(args.events * 1e6 * args.seconds), duration)
        size = f"{width}×{height}"
        run(f"stacked histogram, {size}", histogram_pair(ev, height, width), args.repeats)
        if width > 1000:  # RVT halves 1 Mpx recordings; tonic: Downsample, then ToFrame
            halved = f"stacked histogram, {size} halved to {width // 2}×{height // 2}"
            run(halved, histogram_pair(ev, height, width, factor=2), args.repeats)
        run(f"voxel grid, {size}", voxel_pair(ev, height, width), args.repeats)
        run(f"time surface, {size}", surface_pair(ev, height, width), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
