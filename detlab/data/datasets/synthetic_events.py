"""Synthetic event recordings: textured objects moving over a textured background, seen by a
contrast-threshold event camera with noise, labelled at regular timestamps.

The scene is rendered every ``step_us`` (linear intensity, a static smooth-noise background
plus the objects, composited with sub-pixel bilinear placement so slow motion gives gradual
change). Each pixel keeps a reference log intensity; when the current log intensity differs
by ``n`` whole thresholds ``C`` (per-pixel ``C ~ N(contrast, contrast_sigma)``), the pixel
emits ``n`` events of that sign, timed where a linear change between the two renders crosses
each threshold, and moves its reference by ``n·C``. Background activity adds Poisson noise
events (``noise_hz`` per pixel, random polarity). Only pixels near moving objects are
examined per step, which is what makes generation fast.

Objects of each class have a size range, a speed range and a shape (``pedestrian``: tall
body and head; ``car``: body with windows and wheels; ``bus``: long body with a row of
windows), enter from the left or right edge on a lane, and cross the sensor. Labels are
written every ``label_period_us`` for each object at least ``min_visible`` visible, with its
box clipped to the sensor, in the Prophesee/RVT layout (:mod:`detlab.data.events.labels`).
Recording ``i`` is drawn from ``default_rng([seed, i])``, so datasets are deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from detlab.data.events.labels import BBOX_DTYPE

__all__ = ["GENERATOR_VERSION", "SyntheticEventSpec", "render_recording"]

GENERATOR_VERSION = 1  # bump whenever recordings change, so cached sets are regenerated

# class name -> (width range px, height range px, speed range px/s)
DEFAULT_CLASSES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "pedestrian": ((10.0, 16.0), (24.0, 36.0), (40.0, 90.0)),
    "car": ((36.0, 56.0), (18.0, 26.0), (110.0, 220.0)),
    "bus": ((80.0, 120.0), (34.0, 46.0), (70.0, 140.0)),
}


@dataclass
class SyntheticEventSpec:
    """What to generate; every field enters the cache folder's name."""

    num_sequences: int = 48
    duration_us: int = 2_000_000
    height: int = 240
    width: int = 304
    seed: int = 0
    classes: dict = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    objects_per_second: float = 2.0  # objects entering the scene per second (Poisson)
    step_us: int = 4000  # render interval
    label_period_us: int = 50000
    contrast: float = 0.25  # mean log-intensity threshold
    contrast_sigma: float = 0.02  # its spread over pixels
    noise_hz: float = 0.2  # background-activity events per pixel per second
    min_visible: float = 0.4  # fraction of a box inside the sensor for it to be labelled
    pause_prob: float = 0.0  # chance an object stops for a while (invisible to events)
    ext: str = "npy"  # event file format: npy, dat, npz or h5

    def fingerprint(self) -> str:
        cls = ";".join(f"{k}={v}" for k, v in self.classes.items())
        return (
            f"g{GENERATOR_VERSION}_n{self.num_sequences}_d{self.duration_us}_"
            f"{self.height}x{self.width}_s{self.seed}_o{self.objects_per_second:g}_"
            f"st{self.step_us}_l{self.label_period_us}_c{self.contrast:g}-{self.contrast_sigma:g}"
            f"_nz{self.noise_hz:g}_v{self.min_visible:g}_p{self.pause_prob:g}_{self.ext}_{cls}"
        )


@dataclass
class _Object:
    cls: int
    w: int
    h: int
    sprite: np.ndarray  # h x w intensity
    alpha: np.ndarray  # h x w coverage
    x_enter: float
    y: float
    vx: float
    vy: float
    t_enter: float  # seconds
    pause_at: float = -1.0  # seconds after entering; -1 = never
    pause_for: float = 0.0

    def position(self, t: float) -> tuple[float, float]:
        dt = t - self.t_enter
        if self.pause_at >= 0 and dt > self.pause_at:
            dt = max(self.pause_at, dt - self.pause_for)
        return self.x_enter + self.vx * dt, self.y + self.vy * dt


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    out = np.zeros((h, w), np.float32)
    for cell, amp in ((48, 0.3), (12, 0.12), (4, 0.03)):
        grid = rng.random((h // cell + 3, w // cell + 3)).astype(np.float32)
        big = cv2.resize(grid, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
        out += amp * (big[cell : cell + h, cell : cell + w] - 0.5)
    return np.clip(0.45 + out, 0.08, 0.92)


def _sprite(rng: np.random.Generator, name: str, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and anti-aliased coverage of one object (drawn at 4x, then reduced)."""
    s = 4
    big_a = np.zeros((h * s, w * s), np.float32)
    base = float(rng.choice([rng.uniform(0.02, 0.2), rng.uniform(0.75, 0.98)]))
    other = base + (0.3 if base < 0.5 else -0.3)  # details contrast with the body
    big_i = np.full((h * s, w * s), base, np.float32)
    W, H = w * s, h * s
    if name == "pedestrian":
        head = int(H * 0.18)
        cv2.circle(big_a, (W // 2, head // 2 + 1), max(head // 2, 2), 1.0, -1, cv2.LINE_AA)
        cv2.ellipse(
            big_a,
            (W // 2, head + (H - head) // 2),
            (W // 2 - 1, (H - head) // 2 - 1),
            0,
            0,
            360,
            1.0,
            -1,
            cv2.LINE_AA,
        )
        cv2.rectangle(big_i, (0, int(H * 0.55)), (W, H), (base + other) / 2, -1)
    elif name == "car":
        cv2.rectangle(big_a, (0, int(H * 0.35)), (W - 1, int(H * 0.85)), 1.0, -1)
        cv2.rectangle(big_a, (int(W * 0.2), 0), (int(W * 0.78), int(H * 0.4)), 1.0, -1)
        for cx in (int(W * 0.22), int(W * 0.78)):
            cv2.circle(big_a, (cx, int(H * 0.82)), int(H * 0.17), 1.0, -1, cv2.LINE_AA)
            cv2.circle(big_i, (cx, int(H * 0.82)), int(H * 0.17), 0.05, -1, cv2.LINE_AA)
        for x0, x1 in ((0.25, 0.47), (0.52, 0.74)):
            cv2.rectangle(
                big_i, (int(W * x0), int(H * 0.06)), (int(W * x1), int(H * 0.34)), other, -1
            )
    else:  # bus
        cv2.rectangle(big_a, (0, 0), (W - 1, int(H * 0.9)), 1.0, -1)
        n = max(3, int(W / (s * 14)))
        for k in range(n):
            x0 = int(W * (0.05 + 0.9 * k / n))
            cv2.rectangle(
                big_i, (x0, int(H * 0.12)), (x0 + int(W * 0.6 / n), int(H * 0.45)), other, -1
            )
        for cx in (int(W * 0.15), int(W * 0.85)):
            cv2.circle(big_a, (cx, int(H * 0.88)), int(H * 0.12), 1.0, -1, cv2.LINE_AA)
            cv2.circle(big_i, (cx, int(H * 0.88)), int(H * 0.12), 0.05, -1, cv2.LINE_AA)
    texture = 1 + 0.05 * (rng.random((h * s, w * s)).astype(np.float32) - 0.5)
    intensity = cv2.resize(big_i * texture, (w, h), interpolation=cv2.INTER_AREA)
    alpha = cv2.resize(big_a, (w, h), interpolation=cv2.INTER_AREA)
    return np.clip(intensity, 0.02, 0.98), np.clip(alpha, 0, 1)


def _objects(rng: np.random.Generator, spec: SyntheticEventSpec) -> list[_Object]:
    names = list(spec.classes)
    duration = spec.duration_us / 1e6
    # objects already on their way at t=0 are drawn as having entered up to 2 s earlier
    lead = 2.0
    count = int(rng.poisson(spec.objects_per_second * (duration + lead)))
    objs = []
    for _ in range(count):
        c = int(rng.integers(len(names)))
        (w0, w1), (h0, h1), (s0, s1) = spec.classes[names[c]]
        w, h = int(round(rng.uniform(w0, w1))), int(round(rng.uniform(h0, h1)))
        speed = rng.uniform(s0, s1)
        direction = 1.0 if rng.random() < 0.5 else -1.0
        y = rng.uniform(-0.1 * h, spec.height - 0.9 * h)
        sprite, alpha = _sprite(rng, names[c], w, h)
        obj = _Object(
            cls=c,
            w=w,
            h=h,
            sprite=sprite,
            alpha=alpha,
            x_enter=-w if direction > 0 else spec.width,
            y=y,
            vx=direction * speed,
            vy=rng.normal(0, 0.05 * speed),
            t_enter=rng.uniform(-lead, duration),
        )
        if direction < 0:
            obj.sprite, obj.alpha = obj.sprite[:, ::-1].copy(), obj.alpha[:, ::-1].copy()
        if rng.random() < spec.pause_prob:
            obj.pause_at = rng.uniform(0.2, 1.5) * (spec.width / speed) * 0.5
            obj.pause_for = rng.uniform(0.2, 0.8)
        objs.append(obj)
    return objs


def _paste(frame: np.ndarray, obj: _Object, x: float, y: float) -> tuple[int, int, int, int]:
    """Composite ``obj`` at sub-pixel (x, y); returns the touched region (x0, y0, x1, y1)."""
    fh, fw = frame.shape
    ix, iy = math.floor(x), math.floor(y)
    m = np.float32([[1, 0, x - ix + 1], [0, 1, y - iy + 1]])
    size = (obj.w + 3, obj.h + 3)
    sprite = cv2.warpAffine(obj.sprite, m, size, flags=cv2.INTER_LINEAR)
    alpha = cv2.warpAffine(obj.alpha, m, size, flags=cv2.INTER_LINEAR)
    x0, y0 = ix - 1, iy - 1
    a0, b0 = max(x0, 0), max(y0, 0)
    a1, b1 = min(x0 + size[0], fw), min(y0 + size[1], fh)
    if a1 <= a0 or b1 <= b0:
        return 0, 0, 0, 0
    al = alpha[b0 - y0 : b1 - y0, a0 - x0 : a1 - x0]
    sp = sprite[b0 - y0 : b1 - y0, a0 - x0 : a1 - x0]
    region = frame[b0:b1, a0:a1]
    region *= 1 - al
    region += al * sp
    return a0, b0, a1, b1


def render_recording(
    spec: SyntheticEventSpec, index: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One recording → (events ``{x, y, p, t}`` sorted by t, labels in ``BBOX_DTYPE``)."""
    rng = np.random.default_rng([spec.seed, index])
    h, w = spec.height, spec.width
    background = _background(rng, h, w)
    objs = _objects(rng, spec)
    thresh = np.clip(rng.normal(spec.contrast, spec.contrast_sigma, (h, w)), 0.05, None)
    thresh = thresh.astype(np.float32).ravel()

    def render(t: float) -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
        frame = background.copy()
        regions = []
        for o in objs:
            x, y = o.position(t)
            if x > w or x + o.w < 0 or y > h or y + o.h < 0:
                continue
            regions.append(_paste(frame, o, x, y))
        return np.log(frame), regions

    ref, prev_regions = render(0.0)
    ref = ref.ravel().copy()
    xs, ys, ps, ts = [], [], [], []
    step = spec.step_us
    for k in range(1, spec.duration_us // step + 1):
        t_prev = (k - 1) * step
        log_i, regions = render(k * step / 1e6)
        active = np.zeros((h, w), bool)
        for a0, b0, a1, b1 in regions + prev_regions:
            active[b0:b1, a0:a1] = True
        prev_regions = regions
        idx = np.flatnonzero(active)
        if len(idx):
            d = log_i.ravel()[idx] - ref[idx]
            c = thresh[idx]
            n = np.floor(np.abs(d) / c).astype(np.int64)
            hit = n > 0
            idx, d, c, n = idx[hit], d[hit], c[hit], n[hit]
            if len(idx):
                rep = np.repeat(np.arange(len(idx)), n)
                j = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)
                frac = (j + 1) * c[rep] / np.abs(d[rep])
                ts.append(t_prev + np.minimum(frac, 1.0) * step)
                pix = idx[rep]
                xs.append(pix % w)
                ys.append(pix // w)
                ps.append((d[rep] > 0).astype(np.uint8))
                ref[idx] += np.sign(d) * n * c
        n_noise = int(rng.poisson(spec.noise_hz * h * w * step / 1e6))
        if n_noise:
            pix = rng.integers(0, h * w, n_noise)
            xs.append(pix % w)
            ys.append(pix // w)
            ps.append(rng.integers(0, 2, n_noise).astype(np.uint8))
            ts.append(t_prev + rng.random(n_noise) * step)
    if ts:
        t = np.concatenate(ts).astype(np.int64)
        order = np.argsort(t, kind="stable")
        events = {
            "x": np.concatenate(xs)[order].astype(np.uint16),
            "y": np.concatenate(ys)[order].astype(np.uint16),
            "p": np.concatenate(ps)[order],
            "t": t[order],
        }
    else:
        z = np.zeros(0, np.int64)
        events = {
            "x": z.astype(np.uint16),
            "y": z.astype(np.uint16),
            "p": z.astype(np.uint8),
            "t": z,
        }
    return events, _labels(spec, objs)


def _labels(spec: SyntheticEventSpec, objs: list[_Object]) -> np.ndarray:
    rows = []
    for t_us in range(spec.label_period_us, spec.duration_us + 1, spec.label_period_us):
        t = t_us / 1e6
        for track, o in enumerate(objs):
            x, y = o.position(t)
            x0, y0 = max(x, 0.0), max(y, 0.0)
            x1, y1 = min(x + o.w, spec.width), min(y + o.h, spec.height)
            if x1 - x0 < 2 or y1 - y0 < 2:
                continue
            if (x1 - x0) * (y1 - y0) < spec.min_visible * o.w * o.h:
                continue
            rows.append((t_us, x0, y0, x1 - x0, y1 - y0, o.cls, track, 1.0))
    return np.array(rows, dtype=BBOX_DTYPE)
