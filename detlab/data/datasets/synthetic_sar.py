"""Synthetic SAR ship scenes: speckled sea clutter, rotated hulls, land, sidelobes, ghosts.

A scene is built in linear intensity (DN², arbitrary calibration) and written as 16-bit
*amplitude* (``DN = sqrt(I)``, like Sentinel-1 GRD products):

* **Sea clutter**: mean reflectivity ``m²`` (``m`` log-uniform in 40..250 DN) times a smooth
  gamma texture (shape ``nu`` 3..30: sea state) and a faint swell, times multiplicative
  speckle with ``L`` looks (``L`` in 1..4; gamma distributed with unit mean, correlated over
  the ~0.6 px impulse response), plus a thermal noise floor. Moving ships leave dark wakes.
* **Ships**: rotated hulls (pointed bow, length/width 3..8) with type-specific scattering:
  cargo (container bands + bridge), tanker (uniform deck, bright stern castle and bow),
  fishing (small, bright mast), generic. Mean hull ship-to-clutter ratio (SCR) from ~3 dB to
  ~20 dB; hull smoothed by a ~0.7 px impulse response and speckled; bright scatterers added.
  Boxes are the axis-aligned extent of the rendered hull (anti-aliased coverage >= 25 %).
* **Hard negatives** (not annotated): land/harbour with bright built-up points and piers
  (ship-like bright lines), azimuth-ambiguity ghosts of bright ships (12..20 dB weaker,
  shifted in azimuth), sidelobe streaks (cross-shaped, from very bright scatterers), buoys
  (bright compact points), low-wind dark patches.

Each image is drawn from its own generator ``default_rng([seed, index])``, so a dataset is
deterministic for a seed and images can be produced in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

GENERATOR_VERSION = 3  # bump whenever scenes change, so cached sets are regenerated

__all__ = ["GENERATOR_VERSION", "SHIP_TYPES", "SyntheticSARSpec", "render_scene"]

# Ship types: (min length px, max length px, min aspect, max aspect).
SHIP_TYPES: dict[str, tuple[float, float, float, float]] = {
    "cargo": (10.0, 150.0, 5.5, 7.5),
    "tanker": (20.0, 170.0, 4.5, 6.0),
    "fishing": (8.0, 18.0, 3.0, 4.5),
    "generic": (8.0, 120.0, 4.0, 8.0),
}


@dataclass
class SyntheticSARSpec:
    """What to generate. ``classes`` maps each class name to (frequency, ship types)."""

    num_images: int = 1000
    height: int = 256
    width: int = 256
    seed: int = 0
    classes: dict[str, tuple[float, tuple[str, ...]]] = field(
        default_factory=lambda: {"ship": (1.0, ("cargo", "tanker", "fishing", "generic"))}
    )
    looks: tuple[int, int] = (1, 4)  # speckle looks, inclusive range
    scr_db: tuple[float, float] = (3.0, 20.0)  # mean hull SCR range, dB
    ships_per_image: tuple[int, int] = (0, 7)  # inclusive range
    # Fraction of ships drawn with a short hull (length <= 24 px), i.e. mostly small boxes.
    short_fraction: float = 0.4
    hard_negative_prob: float = 0.45  # chance of each image drawing hard-negative clutter
    ext: str = "png"  # "png" or "tif"

    def fingerprint(self) -> str:
        """A short stable text of every parameter (names the cache folder)."""
        cls = ";".join(f"{k}={v[0]:g}:{','.join(v[1])}" for k, v in self.classes.items())
        return (
            f"g{GENERATOR_VERSION}_n{self.num_images}_{self.height}x{self.width}_s{self.seed}_L{self.looks}_"
            f"scr{self.scr_db}_k{self.ships_per_image}_sf{self.short_fraction:g}_"
            f"hn{self.hard_negative_prob:g}_{self.ext}_{cls}"
        )


def _hull(length: float, width: float) -> np.ndarray:
    """Hull outline in ship coordinates (u along the keel, stern at -L/2), shape (K, 2)."""
    half_l, half_w = length / 2, width / 2
    u = np.array([-1.0, -0.8, 0.3, 0.75, 1.0, 0.75, 0.3, -0.8, -1.0]) * half_l
    v = np.array([-0.8, -1.0, -1.0, -0.55, 0.0, 0.55, 1.0, 1.0, 0.8]) * half_w
    return np.stack([u, v], 1)


def _to_image(pts: np.ndarray, cx: float, cy: float, theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    x = cx + pts[:, 0] * c - pts[:, 1] * s
    y = cy + pts[:, 0] * s + pts[:, 1] * c
    return np.stack([x, y], 1)


def _fill(shape: tuple[int, int], poly: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (0..1 float32) of a polygon given in pixel-corner coordinates."""
    canvas = np.zeros(shape, np.uint8)
    # Pixel (i, j) covers [j, j+1) x [i, i+1); its centre is at +0.5.
    pts = np.round((poly - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int, nu: float):
    """Gamma texture (unit mean, shape ``nu``) interpolated from a grid of ``cell`` px."""
    h, w = shape
    grid = rng.gamma(nu, 1.0 / nu, size=(h // cell + 3, w // cell + 3)).astype(np.float32)
    big = cv2.resize(grid, (w + 3 * cell, h + 3 * cell), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, cell, 2)
    return np.clip(big[oy : oy + h, ox : ox + w], 0.15, None)


def _draw_ship(rng, kind: str, shape, cx, cy, theta, length, width, level):
    """Mean intensity of one ship (H×W float32, only nonzero near it) and its hull mask."""
    h, w = shape
    poly = _to_image(_hull(length, width), cx, cy, theta)
    mask = _fill(shape, poly)
    x0, y0 = np.floor(poly.min(0)).astype(int) - 2
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
    # Normalised keel coordinate t in [0, 1] (stern -> bow).
    t = ((xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)) / length + 0.5
    if kind == "cargo":
        bands = max(2, int(length / 6))
        pattern = 0.55 + 0.9 * ((t * bands) % 1.0 < 0.55)
        points = [(0.12, 4.0)]
    elif kind == "tanker":
        pattern = 1.0 + 0.0 * t
        points = [(0.08, 8.0), (0.93, 3.0)]
    elif kind == "fishing":
        pattern = 0.7 + 0.0 * t
        points = [(0.55, 6.0)]
    else:
        pattern = 0.6 + 0.8 * rng.random() * np.cos(np.pi * (t - 0.5))
        points = [(float(rng.uniform(0.1, 0.9)), float(rng.uniform(2.0, 6.0)))]
    layer = np.zeros(shape, np.float32)
    sub = mask[y0:y1, x0:x1]
    layer[y0:y1, x0:x1] = sub * pattern
    mean = layer[y0:y1, x0:x1].sum() / max(sub.sum(), 1e-6)
    layer *= level / max(mean, 1e-6)
    # Bright point scatterers on the keel (superstructure, masts), in units of the hull level.
    sigma = 0.6 + 0.02 * width
    for pos, gain in points:
        px = cx + (pos - 0.5) * length * np.cos(theta)
        py = cy + (pos - 0.5) * length * np.sin(theta)
        layer[y0:y1, x0:x1] += (
            (gain * level)
            * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2))
            * (sub > 0.05)
        )
    return layer, mask


def _box_from_mask(mask: np.ndarray) -> list[float] | None:
    ys, xs = np.nonzero(mask >= 0.25)
    if len(xs) == 0:
        return None
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _land(rng, shape, m2):
    """Land/harbour reflectivity and its mask (bool), or zeros. Coast along a random side."""
    h, w = shape
    side = int(rng.integers(4))
    n = w if side in (0, 1) else h
    depth = rng.uniform(0.15, 0.45) * (h if side in (0, 1) else w)
    knots = rng.normal(0, 1, (1, n // 48 + 3)).astype(np.float32)
    wiggle = cv2.resize(knots, (n, 1), interpolation=cv2.INTER_CUBIC)
    wiggle = cv2.GaussianBlur(wiggle, (0, 0), sigmaX=6, sigmaY=0.1)[0] * rng.uniform(3, 15)
    wiggle += cv2.GaussianBlur(
        rng.normal(0, 1.0, (1, n)).astype(np.float32), (0, 0), 1.5, sigmaY=0.1
    )[0]  # small-scale roughness of the shore
    coast = depth + wiggle  # distance of the coast from the chosen side, per column/row
    yy, xx = np.mgrid[0:h, 0:w]
    dist = {0: yy, 1: h - 1 - yy, 2: xx, 3: w - 1 - xx}[side]
    along = xx if side in (0, 1) else yy
    mask = dist < coast[along]
    refl = m2 * 10 ** (rng.uniform(4, 12) / 10) * _smooth_noise(rng, shape, 8, rng.uniform(1, 4))
    n_pts = int(rng.integers(20, 80))
    pts = np.zeros(shape, np.float32)
    ys, xs = rng.integers(0, h, n_pts), rng.integers(0, w, n_pts)
    pts[ys, xs] = m2 * 10 ** (rng.uniform(12, 25, n_pts) / 10)
    pts = cv2.GaussianBlur(pts, (0, 0), 0.7) * 6
    land = np.where(mask, refl + pts, 0).astype(np.float32)
    # Piers / breakwaters: straight bright strips from the coast into the sea (ship-like).
    for _ in range(int(rng.integers(0, 4))):
        a = int(rng.integers(0, n))
        start = float(coast[a]) - 3
        ln, wd = rng.uniform(12, 50), rng.uniform(2.0, 4.0)
        ang = rng.uniform(-0.5, 0.5) + {0: np.pi / 2, 1: -np.pi / 2, 2: 0.0, 3: np.pi}[side]
        if side in (0, 1):
            sx, sy = a, start if side == 0 else h - 1 - start
        else:
            sx, sy = start if side == 2 else w - 1 - start, a
        cx, cy = sx + np.cos(ang) * ln / 2, sy + np.sin(ang) * ln / 2
        rect = _to_image(
            np.array([[-ln / 2, -wd / 2], [ln / 2, -wd / 2], [ln / 2, wd / 2], [-ln / 2, wd / 2]]),
            cx,
            cy,
            ang,
        )
        pier = _fill(shape, rect)
        land += pier * m2 * 10 ** (rng.uniform(8, 18) / 10)
        mask |= pier > 0.05
    return land, mask


def render_scene(spec: SyntheticSARSpec, index: int) -> tuple[np.ndarray, list[dict], dict]:
    """One scene: (H×W uint16 amplitude, annotations, image info).

    Annotations: ``bbox`` (XYWH px), ``category`` (class index in ``spec.classes``),
    ``ship_type``, ``scr_db``. Info: ``looks``, ``hard_negatives`` (list of clutter kinds).
    """
    rng = np.random.default_rng([spec.seed, index])
    shape = (spec.height, spec.width)
    h, w = shape
    looks = int(rng.integers(spec.looks[0], spec.looks[1] + 1))
    m = float(np.exp(rng.uniform(np.log(40.0), np.log(250.0))))
    m2 = m * m
    sea = m2 * _smooth_noise(rng, shape, 24, rng.uniform(3, 30))
    if rng.random() < 0.6:  # swell
        k = 2 * np.pi / rng.uniform(8, 30)
        phi = rng.uniform(0, 2 * np.pi)
        a = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        sea *= 1 + rng.uniform(0.05, 0.25) * np.sin(k * (xx * np.cos(a) + yy * np.sin(a)) + phi)
    hard: list[str] = []
    extra = np.zeros(shape, np.float32)  # unannotated bright clutter
    blocked = np.zeros(shape, bool)
    hard_image = rng.random() < spec.hard_negative_prob
    if hard_image and rng.random() < 0.45:
        land, blocked = _land(rng, shape, m2)
        sea = np.where(blocked, 0, sea)
        extra += land
        hard.append("land")
    if hard_image and rng.random() < 0.3:  # low-wind dark patch
        patch = cv2.GaussianBlur(
            (_smooth_noise(rng, shape, 48, 2.0) > 1.3).astype(np.float32), (0, 0), 6
        )
        sea *= 1 - rng.uniform(0.5, 0.8) * patch

    names = list(spec.classes)
    freqs = np.array([spec.classes[c][0] for c in names], float)
    freqs /= freqs.sum()
    target = np.zeros(shape, np.float32)
    anns: list[dict] = []
    occupied: list[tuple[float, float, float, float]] = []
    for _ in range(int(rng.integers(spec.ships_per_image[0], spec.ships_per_image[1] + 1))):
        cls = int(rng.choice(len(names), p=freqs))
        kinds = spec.classes[names[cls]][1]
        kind = kinds[int(rng.integers(len(kinds)))]
        lmin, lmax, amin, amax = SHIP_TYPES[kind]
        if rng.random() < spec.short_fraction:
            lmax = min(lmax, max(lmin + 2, 24.0))
        else:
            lmin = min(max(lmin, 24.0), lmax - 2)
        length = float(np.exp(rng.uniform(np.log(lmin), np.log(lmax))))
        length = min(length, 0.8 * min(h, w))
        width = max(length / rng.uniform(amin, amax), 2.0)
        theta = rng.uniform(0, np.pi)
        ext_x = abs(length * np.cos(theta)) / 2 + width / 2 + 2
        ext_y = abs(length * np.sin(theta)) / 2 + width / 2 + 2
        if 2 * ext_x >= w - 1 or 2 * ext_y >= h - 1:
            continue  # does not fit into a tiny image
        for _try in range(20):
            cx, cy = rng.uniform(ext_x, w - ext_x), rng.uniform(ext_y, h - ext_y)
            box = (cx - ext_x, cy - ext_y, cx + ext_x, cy + ext_y)
            free = all(
                box[2] < o[0] or o[2] < box[0] or box[3] < o[1] or o[3] < box[1] for o in occupied
            )
            iy0, iy1 = int(max(box[1] - 3, 0)), int(min(box[3] + 3, h))
            ix0, ix1 = int(max(box[0] - 3, 0)), int(min(box[2] + 3, w))
            if free and not blocked[iy0:iy1, ix0:ix1].any():
                break
        else:
            continue
        local = float(sea[int(cy), int(cx)]) or m2
        scr = spec.scr_db[0] + (spec.scr_db[1] - spec.scr_db[0]) * rng.beta(1.6, 1.6)
        if kind == "fishing" or length < 14:
            scr = min(scr + 2.0, spec.scr_db[1])  # small hulls still need a visible return
        layer, mask = _draw_ship(
            rng, kind, shape, cx, cy, theta, length, width, local * 10 ** (scr / 10)
        )
        bbox = _box_from_mask(mask)
        if bbox is None:
            continue
        occupied.append(box)
        target += layer
        if rng.random() < 0.3:  # moving ship: dark turbulent wake behind the stern
            sea *= _wake(shape, cx, cy, theta, length, width)
        anns.append({"bbox": bbox, "category": cls, "ship_type": kind, "scr_db": round(scr, 2)})
        peak = float(layer.max())
        if hard_image and peak > 40 * local and rng.random() < 0.5:  # azimuth ambiguity
            shift = int(rng.choice([-1, 1]) * rng.uniform(0.25, 0.45) * h)
            ghost = np.roll(layer, shift, axis=0) * 10 ** (-rng.uniform(12, 20) / 10)
            if shift > 0:
                ghost[:shift] = 0
            else:
                ghost[shift:] = 0
            extra += ghost
            hard.append("ambiguity")
        if peak > 60 * local and rng.random() < 0.5:  # sidelobes of a bright ship
            extra += _streaks(shape, cx, cy, peak * rng.uniform(0.02, 0.06))
            hard.append("sidelobes")
    if hard_image and rng.random() < 0.35:  # sidelobe streaks of an off-target scatterer
        sx, sy = rng.uniform(0, w), rng.uniform(0, h)
        extra += _streaks(shape, sx, sy, m2 * 10 ** (rng.uniform(8, 14) / 10))
        hard.append("streaks")
    if hard_image and rng.random() < 0.4:  # buoys / breaking waves: compact bright points
        pts = np.zeros(shape, np.float32)
        n = int(rng.integers(1, 5))
        ys, xs = rng.integers(2, h - 2, n), rng.integers(2, w - 2, n)
        pts[ys, xs] = m2 * 10 ** (rng.uniform(10, 16, n) / 10) * 8
        extra += cv2.GaussianBlur(pts, (0, 0), rng.uniform(0.7, 1.1))
        hard.append("buoys")

    target = cv2.GaussianBlur(target, (0, 0), 0.7)
    speckle = _speckle(rng, shape, looks)
    # strong scatterers fluctuate less: 2L looks, uncorrelated (targets cover few pixels)
    target_speckle = rng.standard_gamma(2 * looks, size=shape, dtype=np.float32) / (2 * looks)
    noise = rng.standard_exponential(shape, dtype=np.float32)
    noise *= np.float32(m2 * 10 ** (-rng.uniform(8, 15) / 10))
    intensity = (sea + extra) * speckle + target * target_speckle + noise
    amp = np.sqrt(np.clip(intensity, 0, None))
    image = np.clip(np.rint(amp), 0, 65535).astype(np.uint16)
    info = {"looks": looks, "hard_negatives": sorted(set(hard))}
    return image, anns, info


def _speckle(rng: np.random.Generator, shape, looks: int, psf: float = 0.6) -> np.ndarray:
    """Unit-mean multiplicative speckle of ``looks`` looks, spatially correlated by the PSF.

    Each look is the squared modulus of circular complex Gaussian noise smoothed by the
    impulse response (so each look is exponential, as fully developed speckle is); the mean of
    ``looks`` independent looks is gamma distributed with shape ``looks``.
    """
    # 2·looks real fields (real and imaginary parts) blurred at once as channels of one image
    field = rng.standard_normal((*shape, 2 * looks), dtype=np.float32)
    field = cv2.GaussianBlur(field, (0, 0), psf).reshape(*shape, 2 * looks)
    acc = np.einsum("hwc,hwc->hw", field, field)
    return acc / float(acc.mean())


def _wake(shape, cx, cy, theta, length, width) -> np.ndarray:
    """Dark turbulent wake behind a moving ship: multiplicative damping (1 = none)."""
    h, w = shape
    tail = np.zeros(shape, np.float32)
    span = length * (1.5 + 2.5 * ((cx * 7.31 + cy * 3.17) % 1.0))
    x0, y0 = cx - np.cos(theta) * length / 2, cy - np.sin(theta) * length / 2
    x1, y1 = x0 - np.cos(theta) * span, y0 - np.sin(theta) * span
    thick = max(1, int(round(width * 0.8)))
    cv2.line(tail, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, thick, lineType=cv2.LINE_AA)
    return 1.0 - 0.6 * cv2.GaussianBlur(tail, (0, 0), 1.0 + width / 3)


def _streaks(shape, x: float, y: float, power: float) -> np.ndarray:
    """Cross-shaped sidelobes (range and azimuth) of a point at (x, y), ~1/d² decay."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    dx = np.abs(np.arange(w, dtype=np.float32) + 0.5 - x)
    dy = np.abs(np.arange(h, dtype=np.float32) + 0.5 - y)
    row, col = int(np.clip(y, 0, h - 1)), int(np.clip(x, 0, w - 1))
    out[row, :] += power / (1 + (dx / 3) ** 2) ** 0.6
    out[:, col] += power / (1 + (dy / 3) ** 2) ** 0.6
    return cv2.GaussianBlur(out, (0, 0), 0.6)
