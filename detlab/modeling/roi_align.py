"""RoIAlign on CPU as one sparse bilinear-weight product over channels-last features.

torchvision's CPU ``roi_align`` walks every (RoI, channel, bin, sample) with scalar code and
scatters its gradient the same way; on CPU it is most of Faster R-CNN's time outside the
convolutions. Here the same sampling is written as a matrix: every output cell (RoI, bin) is a
weighted sum of feature-map pixels, each pixel a C-vector of an NHWC feature map. The weights
(``bilinear_entries``) are the ones torchvision's kernel uses — same sample positions, same
boundary rules (``aligned`` half-pixel offset, minimum RoI size 1 when not aligned, adaptive
``sampling_ratio = 0`` grid of ceil(roi_size / output_size), samples beyond one pixel outside
the map dropped, clamping at the last row/column) — so results agree up to float rounding (the
division by the sample count is folded into the weights). The product runs as
``F.embedding_bag(mode="sum", per_sample_weights=...)`` (one contiguous C-vector per entry);
its gradient is the transposed product, the entries sorted by pixel and summed the same way, so
both directions are deterministic.

Several pyramid levels are pooled in one product by stacking their pixels; each RoI reads only
the level it was assigned to.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align as tv_roi_align

__all__ = [
    "LEVEL_RULES",
    "POOLER_KERNELS",
    "ROIPooler",
    "assign_levels",
    "bilinear_entries",
    "multilevel_roi_align",
    "roi_align",
    "uses_bilinear_matrix",
]

# Above this many (RoI, bin, sample, corner) entries the weights would take more memory than
# the scalar kernel's time is worth (huge RoIs with the adaptive sampling grid): use torchvision.
MAX_ENTRIES = 1 << 26


def uses_bilinear_matrix(features: torch.Tensor) -> bool:
    """Whether :func:`roi_align` takes the bilinear-matrix path for these features (CPU)."""
    return features.device.type == "cpu" and features.dtype in (
        torch.float32,
        torch.float64,
        torch.bfloat16,
        torch.float16,
    )


@torch.no_grad()
def bilinear_entries(
    rois: torch.Tensor,
    heights: torch.Tensor,
    widths: torch.Tensor,
    scales: torch.Tensor,
    offsets: torch.Tensor,
    output_size: int,
    sampling_ratio: int,
    aligned: bool,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, int] | None:
    """Pixel indices and weights of every (RoI, bin) of RoIAlign.

    Args:
        rois: K×5 ``(batch index, x1, y1, x2, y2)`` in input pixels.
        heights, widths, scales, offsets: per-RoI (K,) map height and width, spatial scale
            (1 / stride) and the index of the RoI's map's pixel (0, 0) of image 0 in the
            stacked pixel table (maps stacked level after level, each N×H×W row-major).
        output_size: bins per side (R).
        sampling_ratio: samples per bin side; 0 = ceil(roi side / R) per RoI.
        aligned: shift the box by -0.5 pixel (pixel centres at +0.5).
        dtype: float type of the sampling arithmetic (torchvision's kernel uses the
            features' type).

    Returns:
        ``(index, weight, per_bin)``: K·R·R×per_bin pixel indices (int64) and weights, the
        division by each bin's sample count included, zero weight for padding entries; or
        None when the table would exceed :data:`MAX_ENTRIES`.
    """
    k, r = rois.shape[0], int(output_size)
    rois = rois.to(dtype)
    half = 0.5 if aligned else 0.0
    x1 = rois[:, 1] * scales - half
    y1 = rois[:, 2] * scales - half
    rw = rois[:, 3] * scales - half - x1
    rh = rois[:, 4] * scales - half - y1
    if not aligned:  # torchvision's legacy behaviour: RoIs at least one pixel
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    finite = torch.isfinite(x1) & torch.isfinite(y1) & torch.isfinite(rw) & torch.isfinite(rh)
    x1, y1 = torch.where(finite, x1, 0), torch.where(finite, y1, 0)
    rw, rh = torch.where(finite, rw, 0), torch.where(finite, rh, 0)
    bw, bh = rw / r, rh / r
    if sampling_ratio > 0:
        gh = torch.full((k,), int(sampling_ratio), dtype=torch.int64, device=rois.device)
        gw = gh
    else:
        grid_h, grid_w = torch.ceil(bh).clamp(min=0), torch.ceil(bw).clamp(min=0)
        if k and float(torch.maximum(grid_h, grid_w).max()) * r > MAX_ENTRIES:
            return None
        gh, gw = grid_h.to(torch.int64), grid_w.to(torch.int64)
    big_h = max(int(gh.max()), 1) if k else 1
    big_w = max(int(gw.max()), 1) if k else 1
    per_bin = big_h * big_w * 4
    if k * r * r * per_bin > MAX_ENTRIES:
        return None
    count = (gh * gw).clamp(min=1).to(dtype)
    cells = torch.arange(r, dtype=dtype, device=rois.device)

    def axis(start, size, grid, big, limit):
        """Per RoI, bin and sample along one axis: (low, high) pixel and (1-l, l) weights."""
        i = torch.arange(big, dtype=dtype, device=rois.device)
        g = grid.clamp(min=1).to(dtype)[:, None, None]  # a 0-sample grid pools nothing
        # Same operation order as torchvision: start + p·bin + (i + .5)·bin / grid.
        pos = start[:, None, None] + cells[None, :, None] * size[:, None, None]
        pos = pos + (i[None, None, :] + 0.5) * size[:, None, None] / g
        lim = limit.to(dtype)[:, None, None]
        valid = (i[None, None, :] < grid[:, None, None]) & (pos >= -1.0) & (pos <= lim)
        valid = valid & finite[:, None, None]
        pos = torch.minimum(pos.clamp(min=0), lim)  # beyond the map: invalid, index kept in range
        low = pos.to(torch.int64)
        top = limit[:, None, None] - 1
        edge = low >= top
        low = torch.where(edge, top, low)
        high = torch.where(edge, top, low + 1)
        frac = torch.where(edge, 0, pos - low.to(dtype))
        w = torch.stack([1 - frac, frac], -1) * valid[..., None]
        return torch.stack([low, high], -1), w  # K×R×big×2

    iy, wy = axis(y1, bh, gh, big_h, heights)
    ix, wx = axis(x1, bw, gw, big_w, widths)
    # K × R(y) × R(x) × big_h × big_w × 2(y) × 2(x)
    weight = wy[:, :, None, :, None, :, None] * wx[:, None, :, None, :, None, :]
    weight = weight / count[:, None, None, None, None, None, None]
    batch = rois[:, 0].to(torch.int64)
    base = offsets + batch * heights * widths
    row = base[:, None, None, None] + iy * widths[:, None, None, None]  # K×R×big_h×2
    index = row[:, :, None, :, None, :, None] + ix[:, None, :, None, :, None, :]
    return index.reshape(k * r * r, per_bin), weight.reshape(k * r * r, per_bin), per_bin


class _WeightedGather(torch.autograd.Function):
    """``out[i] = Σ_j weight[i, j] · table[index[i, j]]`` and its transpose for the gradient."""

    @staticmethod
    def forward(ctx, table, index, weight):
        ctx.save_for_backward(index, weight)
        ctx.rows = table.shape[0]
        return F.embedding_bag(index, table, mode="sum", per_sample_weights=weight)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        index, weight = ctx.saved_tensors
        flat_index, flat_weight = index.reshape(-1), weight.reshape(-1)
        order = torch.argsort(flat_index, stable=True)
        source = torch.div(order, index.shape[1], rounding_mode="floor")
        counts = torch.bincount(flat_index, minlength=ctx.rows)
        bag_starts = torch.cumsum(counts, 0) - counts
        grad_table = F.embedding_bag(
            source,
            grad.contiguous(),
            bag_starts,
            mode="sum",
            per_sample_weights=flat_weight[order].to(grad.dtype),
        )
        return grad_table, None, None


def _torchvision_levels(
    features: Sequence[torch.Tensor],
    scales: Sequence[float],
    rois: torch.Tensor,
    levels: torch.Tensor,
    output_size: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """Each level's RoIs pooled by torchvision's kernel, put back in the RoIs' order."""
    r = int(output_size)
    out = features[0].new_zeros((rois.shape[0], features[0].shape[1], r, r))
    for i, (f, s) in enumerate(zip(features, scales, strict=True)):
        idx = torch.where(levels == i)[0]  # empty levels too: the output keeps its graph
        pooled = tv_roi_align(f, rois[idx], (r, r), s, sampling_ratio, aligned)
        out = out.index_put((idx,), pooled.to(out.dtype))
    return out


def _pixel_table(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack N×C×H×W maps as one (Σ N·H·W)×C table of pixel vectors (NHWC order)."""
    rows = [f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in features]
    return rows[0] if len(rows) == 1 else torch.cat(rows)


def multilevel_roi_align(
    features: Sequence[torch.Tensor],
    scales: Sequence[float],
    rois: torch.Tensor,
    levels: torch.Tensor,
    output_size: int,
    sampling_ratio: int,
    aligned: bool,
) -> torch.Tensor:
    """RoIAlign of each RoI on its level → K×C×R×R (channels-last strides), features' dtype.

    Args:
        features: per level an N×C×H×W map (any memory format, same N and C).
        scales: per level the spatial scale (1 / stride).
        rois: K×5 ``(batch index, x1, y1, x2, y2)`` in input pixels.
        levels: K indices into ``features``.
        output_size, sampling_ratio, aligned: as :func:`torchvision.ops.roi_align`.

    Off CPU, or where the weight table would be too large, each level is pooled by
    torchvision's kernel instead (same values up to float rounding).
    """
    first = features[0]
    n, c = first.shape[:2]
    r = int(output_size)
    k = rois.shape[0]
    if any(f.shape[:2] != (n, c) for f in features):
        raise ValueError("multilevel_roi_align: every level needs the same batch and channels")
    entries = None
    if uses_bilinear_matrix(first) and k:
        if rois.shape[1] != 5:
            raise ValueError(f"rois must be K×5 (batch index, x1, y1, x2, y2), got {rois.shape}")
        batch = rois[:, 0]
        if bool(((batch < 0) | (batch >= n) | (batch != batch.floor())).any()):
            raise ValueError(f"roi batch indices must be integers in [0, {n}); got {batch}")
        dev = first.device
        sizes = torch.tensor([f.shape[-2] for f in features], device=dev)[levels]
        widths = torch.tensor([f.shape[-1] for f in features], device=dev)[levels]
        pixels = torch.tensor([n * f.shape[-2] * f.shape[-1] for f in features], device=dev)
        starts = (torch.cumsum(pixels, 0) - pixels)[levels]
        calc = torch.float64 if first.dtype == torch.float64 else torch.float32
        lvl_scales = torch.tensor(list(scales), dtype=calc, device=dev)[levels]
        entries = bilinear_entries(
            rois, sizes, widths, lvl_scales, starts, r, sampling_ratio, aligned, calc
        )
    if entries is None:
        return _torchvision_levels(features, scales, rois, levels, r, sampling_ratio, aligned)
    index, weight, _ = entries
    dtype = torch.float64 if first.dtype == torch.float64 else torch.float32
    table = _pixel_table([f.to(dtype) for f in features])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _WeightedGather.apply(table, index, weight.to(dtype))
    return out.view(k, r, r, c).permute(0, 3, 1, 2).to(first.dtype)


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> torch.Tensor:
    """Drop-in for :func:`torchvision.ops.roi_align` with K×5 ``rois`` and a square output.

    ``sampling_ratio <= 0`` is the adaptive grid (torchvision's -1 and 0 mean the same).
    """
    levels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
    return multilevel_roi_align(
        [features], [spatial_scale], rois, levels, output_size, max(sampling_ratio, 0), aligned
    )


LEVEL_RULES = ("torchvision", "detectron2")


def assign_levels(
    boxes: torch.Tensor, min_level: int, max_level: int, rule: str = "torchvision"
) -> torch.Tensor:
    """Pyramid level index (0 = ``min_level``) of each XYXY box by the FPN paper's rule.

    k = floor(4 + log2(sqrt(area) / 224)), clamped to [min_level, max_level]. ``rule``
    picks where the tiny epsilon goes, which decides boxes exactly on a boundary:
    ``"torchvision"`` (``MultiScaleRoIAlign``: + 1e-6 after the log) or ``"detectron2"``
    (its ``assign_boxes_to_levels``: + 1e-8 inside the log).
    """
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    size = torch.sqrt(area)
    if rule == "torchvision":
        k = torch.floor(4 + torch.log2(size / 224) + torch.tensor(1e-6, dtype=size.dtype))
    elif rule == "detectron2":
        k = torch.floor(4 + torch.log2(size / 224 + 1e-8))
    else:
        raise ValueError(f"level rule must be one of {LEVEL_RULES}, got '{rule}'")
    return (k.clamp(min_level, max_level) - min_level).to(torch.int64)


POOLER_KERNELS = ("auto", "torchvision")


class ROIPooler(nn.Module):
    """RoIAlign of each box on its pyramid level (the level by :func:`assign_levels`).

    Args:
        in_features: names of the levels, finest first (keys of the feature dict).
        strides: their strides (powers of two, ascending).
        output_size: cells per side of each pooled RoI.
        sampling_ratio: samples per cell side (0 = adaptive).
        aligned: half-pixel offset (Detectron2's ROIAlignV2) or not (torchvision's).
        level_rule: see :func:`assign_levels`.
        kernel: ``"auto"`` = the bilinear-matrix product on CPU (:func:`multilevel_roi_align`),
            torchvision's kernel elsewhere and while tracing for export; ``"torchvision"`` =
            torchvision's kernel always.

    ``forward(features, boxes, image_shapes=None)`` takes the ``{name: B×C×H×W}`` dict and one
    K_i×4 XYXY tensor (input pixels) per image; returns (ΣK_i)×C×R×R in the boxes' order.
    """

    def __init__(
        self,
        in_features: Sequence[str],
        strides: Sequence[int],
        output_size: int,
        sampling_ratio: int = 0,
        aligned: bool = False,
        level_rule: str = "torchvision",
        kernel: str = "auto",
    ) -> None:
        super().__init__()
        if kernel not in POOLER_KERNELS:
            raise ValueError(f"pooler kernel must be one of {POOLER_KERNELS}, got '{kernel}'")
        if level_rule not in LEVEL_RULES:
            raise ValueError(f"level rule must be one of {LEVEL_RULES}, got '{level_rule}'")
        self.in_features = list(in_features)
        self.strides = [int(s) for s in strides]
        self.output_size = int(output_size)
        self.sampling_ratio = max(int(sampling_ratio), 0)
        self.aligned = bool(aligned)
        self.level_rule = level_rule
        self.kernel = kernel
        self.min_level = int(math.log2(self.strides[0]))
        self.max_level = int(math.log2(self.strides[-1]))

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: object = None,
    ) -> torch.Tensor:
        del image_shapes  # the levels have fixed strides
        with torch.profiler.record_function("detlab::roi_align"):
            return self._pool(features, boxes)

    def _pool(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        maps = [features[n] for n in self.in_features]
        all_boxes = torch.cat(boxes).to(maps[0].dtype)
        index = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
        rois = torch.cat([index.to(all_boxes.dtype), all_boxes], 1)
        if len(maps) == 1:
            levels = torch.zeros(rois.shape[0], dtype=torch.int64, device=rois.device)
        else:
            levels = assign_levels(all_boxes, self.min_level, self.max_level, self.level_rule)
        scales = [1.0 / s for s in self.strides]
        # Exporters trace torchvision's op (ONNX RoiAlign); the matrix product does not export.
        exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        use_tv = self.kernel == "torchvision" or exporting
        pool = _torchvision_levels if use_tv else multilevel_roi_align
        return pool(maps, scales, rois, levels, self.output_size, self.sampling_ratio, self.aligned)
