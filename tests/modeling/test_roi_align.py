"""The bilinear-matrix RoIAlign against torchvision's ``roi_align`` and ``MultiScaleRoIAlign``.

Values and gradients must agree up to float rounding on RoIs shaped like the wild: partly or
wholly outside the map, zero-sized and inverted boxes, non-finite coordinates, several images,
one-pixel maps, every sampling mode, both pixel conventions, NCHW and channels-last input.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align

from detlab.modeling import roi_align as ra
from detlab.modeling.roi_align import ROIPooler, assign_levels, roi_align


def _wild_rois(n_images: int, k: int, extent: float, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(k, 2, generator=g, dtype=dtype) * (extent + 20) - 10  # some start outside
    wh = torch.rand(k, 2, generator=g, dtype=dtype) * extent * 0.7 - 3  # some inverted
    rois = torch.cat([torch.randint(0, n_images, (k, 1), generator=g).to(dtype), xy, xy + wh], 1)
    rois[0, 1:] = torch.tensor([5.0, 5.0, 5.0, 5.0])  # zero size
    rois[1, 1:] = torch.tensor([-50.0, -50.0, -30.0, -30.0])  # wholly outside
    rois[2, 1:] = torch.tensor([0.0, 0.0, extent * 2, extent * 2])  # larger than the map
    return rois


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio", [0, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_torchvision_values_and_gradients(dtype, channels_last, sampling_ratio, aligned):
    g = torch.Generator().manual_seed(1)
    f = torch.randn(3, 5, 13, 17, generator=g, dtype=dtype)
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last)
    f.requires_grad_()
    rois = _wild_rois(3, 120, 70.0, dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for scale in (0.25, 0.5):
        want = tv_roi_align(f, rois, (7, 7), scale, sampling_ratio, aligned)
        got = roi_align(f, rois, 7, scale, sampling_ratio, aligned)
        assert got.dtype == dtype and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        grad_out = torch.randn(want.shape, generator=g, dtype=dtype)
        (want_grad,) = torch.autograd.grad(want, f, grad_out)
        (got_grad,) = torch.autograd.grad(got, f, grad_out)
        torch.testing.assert_close(got_grad, want_grad, atol=tol, rtol=tol)


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _wild_rois(2, 9, 24.0, torch.float64, seed=3)
    assert torch.autograd.gradcheck(lambda x: roi_align(x, rois, 3, 0.5, 2, True), (f,))


def test_one_pixel_map_and_empty_roi_set():
    f = torch.randn(1, 4, 1, 1, requires_grad=True)
    rois = torch.tensor([[0.0, -2.0, -2.0, 3.0, 3.0], [0.0, 0.2, 0.3, 0.9, 0.8]])
    torch.testing.assert_close(roi_align(f, rois, 2, 1.0, 0), tv_roi_align(f, rois, 2, 1.0, 0))
    empty = roi_align(f, rois[:0], 2, 1.0, 0)
    assert empty.shape == (0, 4, 2, 2)
    empty.sum().backward()  # the empty output is still part of the graph
    assert f.grad is not None and f.grad.abs().sum() == 0


def test_non_finite_rois_pool_zeros_and_leave_others_alone():
    f = torch.randn(1, 3, 8, 8)
    rois = torch.tensor(
        [
            [0.0, float("nan"), 0.0, 4.0, 4.0],
            [0.0, 0.0, 0.0, float("inf"), 4.0],
            [0.0, 1.0, 1.0, 6.0, 5.0],
        ]
    )
    out = roi_align(f, rois, 2, 1.0, 0)
    assert torch.isfinite(out).all() and out[:2].abs().sum() == 0
    torch.testing.assert_close(out[2:], tv_roi_align(f, rois[2:], 2, 1.0, 0))


def test_bad_batch_index_is_refused():
    f = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(f, torch.tensor([[2.0, 0.0, 0.0, 4.0, 4.0]]), 2)


def test_gradient_is_deterministic():
    f = torch.randn(2, 8, 32, 32).contiguous(memory_format=torch.channels_last)
    f.requires_grad_()
    rois = _wild_rois(2, 100, 30.0)
    grads = [
        torch.autograd.grad(roi_align(f, rois, 7, 1.0, 0).square().sum(), f)[0] for _ in range(2)
    ]
    assert torch.equal(grads[0], grads[1])


def test_too_large_weight_table_falls_back_to_torchvision(monkeypatch):
    monkeypatch.setattr(ra, "MAX_ENTRIES", 100)
    f = torch.randn(1, 3, 16, 16, requires_grad=True)
    rois = torch.tensor([[0.0, 0.0, 0.0, 15.0, 15.0], [0.0, 2.0, 3.0, 9.0, 12.0]])
    assert ra.bilinear_entries(
        rois, torch.tensor([16, 16]), torch.tensor([16, 16]), torch.ones(2),
        torch.zeros(2, dtype=torch.int64), 7, 0, False,
    ) is None  # fmt: skip
    torch.testing.assert_close(roi_align(f, rois, 7, 1.0, 0), tv_roi_align(f, rois, 7, 1.0, 0))


def _pyramid(seed=0, channels_last=True):
    g = torch.Generator().manual_seed(seed)
    names = ["p2", "p3", "p4", "p5"]
    feats = {}
    for i, n in enumerate(names):
        f = torch.randn(2, 6, 64 >> i, 48 >> i, generator=g)
        if channels_last:
            f = f.contiguous(memory_format=torch.channels_last)
        feats[n] = f.requires_grad_()
    return names, feats


def _boxes_on_level_boundaries():
    """Boxes of every scale, including sides exactly 112, 224 and 448 (level boundaries)."""
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(2):
        xy = torch.rand(80, 2, generator=g) * 150
        wh = 1 + torch.rand(80, 2, generator=g) ** 2 * 300
        exact = torch.tensor([[0.0, 0.0, 112.0, 112.0], [10, 10, 234, 234], [0, 0, 448, 448]])
        out.append(torch.cat([torch.cat([xy, xy + wh], 1), exact]))
    return out


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_pooler_matches_multiscale_roi_align(sampling_ratio):
    names, feats = _pyramid()
    boxes = _boxes_on_level_boundaries()
    want = MultiScaleRoIAlign(names, 7, sampling_ratio)(feats, boxes, [(256, 192)] * 2)
    want_grads = torch.autograd.grad((want * want).sum(), list(feats.values()))
    for kernel in ("auto", "torchvision"):
        pooler = ROIPooler(names, [4, 8, 16, 32], 7, sampling_ratio, kernel=kernel)
        got = pooler(feats, boxes)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        got_grads = torch.autograd.grad((got * got).sum(), list(feats.values()))
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_level_rules():
    boxes = torch.tensor([[0.0, 0.0, 224.0, 224.0], [0, 0, 111.9, 112.1], [0, 0, 10, 10]])
    tv_levels = assign_levels(boxes, 2, 5, "torchvision")
    assert tv_levels.tolist() == [2, 1, 0]  # 224 → level 4 (index 2); tiny → clamped to 2
    d2 = pytest.importorskip("detectron2.modeling.poolers")
    from detectron2.structures import Boxes

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * 100
    many = torch.cat([boxes, torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 900], 1)])
    want = d2.assign_boxes_to_levels([Boxes(many)], 2, 5, 224, 4)
    assert torch.equal(assign_levels(many, 2, 5, "detectron2"), want)


def test_bf16_autocast_pools_in_float32_and_returns_bf16():
    f = torch.randn(1, 4, 16, 16).to(torch.bfloat16)
    rois = torch.tensor([[0.0, 1.0, 2.0, 12.0, 9.0]])
    out = roi_align(f, rois, 3, 1.0, 2)
    assert out.dtype == torch.bfloat16
    want = tv_roi_align(f.float(), rois, (3, 3), 1.0, 2)
    torch.testing.assert_close(out.float(), want, atol=2e-2, rtol=2e-2)
