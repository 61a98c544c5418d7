"""Size-aware loss weights: the formulas, the registry, and their effect on the FCOS loss."""

from __future__ import annotations

import math

import pytest
import torch

from detlab.modeling import SIZE_WEIGHT_REGISTRY, build_model
from detlab.modeling.losses.size_weights import SizeWeighting
from detlab.utils.errors import UnknownNameError, UserError

KW = {"max_weight": 2.5, "small_area": 1024.0, "medium_area": 9216.0}


def test_exponential_matches_formula():
    fn = SIZE_WEIGHT_REGISTRY.get("exponential")
    w = fn(torch.tensor([16.0**2, 20.0**2, 40.0**2, 0.0]), **KW)
    assert w[0].item() == pytest.approx(1.95, abs=0.005)
    assert w[1].item() == pytest.approx(1.69, abs=0.005)
    assert w[2].item() == 1.0
    assert w[3].item() == pytest.approx(2.5)
    areas = torch.linspace(0, 20000, 101)
    ref = torch.tensor([max(1.0, 2.5 * math.exp(-a / 1024.0)) for a in areas.tolist()])
    torch.testing.assert_close(fn(areas, **KW), ref)


def test_linear_and_step():
    areas = torch.tensor([0.0, 500.0, 4608.0, 9216.0, 20000.0])
    lin = SIZE_WEIGHT_REGISTRY.get("linear")(areas, **KW)
    torch.testing.assert_close(lin, torch.tensor([2.5, 2.5 - 1.5 * 500 / 9216, 1.75, 1.0, 1.0]))
    st = SIZE_WEIGHT_REGISTRY.get("step")(areas, **KW)
    torch.testing.assert_close(st, torch.tensor([2.5, 2.5, 1.75, 1.0, 1.0]))
    for name in ("exponential", "linear", "step"):
        w = SIZE_WEIGHT_REGISTRY.get(name)(torch.rand(50) * 3e4, **KW)
        assert (w >= 1).all() and (w <= 2.5).all()


def test_bad_names_fail_readably():
    with pytest.raises(UnknownNameError, match="did you mean 'exponential'"):
        SizeWeighting("exponental")
    with pytest.raises(UserError, match="NORMALIZE"):
        SizeWeighting(normalize="mean")


def _fcos_losses(tiny_cfg, make_batch, enabled, scale=1.0, normalize="num_pos"):
    torch.manual_seed(0)
    cfg = tiny_cfg("FCOS")
    cfg.MODEL.SIZE_AWARE_LOSS.ENABLED = enabled
    cfg.MODEL.SIZE_AWARE_LOSS.NORMALIZE = normalize
    model = build_model(cfg).train()
    with torch.no_grad():
        return {k: v.item() for k, v in model(make_batch(scale=scale)).items()}


def test_size_weights_change_fcos_loss(tiny_cfg, make_batch):
    plain = _fcos_losses(tiny_cfg, make_batch, False)
    # Original image half the network input: boxes of 225..750 px², weights 1.2..2.0.
    small = _fcos_losses(tiny_cfg, make_batch, True, scale=0.5)
    assert _fcos_losses(tiny_cfg, make_batch, False, scale=0.5) == pytest.approx(plain)
    assert small["loss_fcos_cls"] > plain["loss_fcos_cls"]
    for k in ("loss_fcos_loc", "loss_fcos_ctr"):
        assert 1.2 * plain[k] < small[k] < 2.0 * plain[k], k
    # The same network input with an original image 4× larger: areas × 16, weights = 1.
    big_plain = _fcos_losses(tiny_cfg, make_batch, False, scale=4.0)
    big_weighted = _fcos_losses(tiny_cfg, make_batch, True, scale=4.0)
    assert big_plain == pytest.approx(plain)
    assert big_weighted == pytest.approx(plain)


def test_weight_sum_normalisation_keeps_uniform_weights_neutral(tiny_cfg, make_batch):
    plain = _fcos_losses(tiny_cfg, make_batch, False)
    by_sum = _fcos_losses(tiny_cfg, make_batch, True, scale=0.5, normalize="weight_sum")
    by_pos = _fcos_losses(tiny_cfg, make_batch, True, scale=0.5, normalize="num_pos")
    # Dividing by the weight sum redistributes: the regression term is a weighted mean of
    # per-location GIoU losses, so it stays between their min and max, unlike num_pos.
    assert by_sum["loss_fcos_loc"] < by_pos["loss_fcos_loc"]
    assert by_sum["loss_fcos_loc"] == pytest.approx(plain["loss_fcos_loc"], rel=0.2)
