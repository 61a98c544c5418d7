"""Optimizer groups, LR schedules and gradient clipping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detlab.config import get_cfg
from detlab.solver import (
    WarmupLRScheduler,
    build_lr_scheduler,
    build_optimizer,
    clip_gradients,
    global_grad_norm,
    lr_factor,
)
from detlab.utils.errors import ConfigError


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1), nn.GroupNorm(1, 2)
    )


def _cfg(**solver):
    cfg = get_cfg()
    cfg.merge_from_dict({"SOLVER": solver})
    return cfg


def test_weight_decay_groups_norm_and_bias():
    net = _net()
    opt = build_optimizer(
        _cfg(WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0, WEIGHT_DECAY_BIAS=0.0), net
    )
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd_of[id(net[0].weight)] == pytest.approx(1e-4)
    assert wd_of[id(net[2].weight)] == pytest.approx(1e-4)
    for p in (net[0].bias, net[2].bias, net[1].weight, net[1].bias, net[3].weight, net[3].bias):
        assert wd_of[id(p)] == 0.0
    assert len(wd_of) == sum(1 for _ in net.parameters())
    # None = biases decay like weights; norms keep their own value
    opt = build_optimizer(_cfg(WEIGHT_DECAY=1e-4, WEIGHT_DECAY_NORM=0.0), net)
    wd_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert wd_of[id(net[0].bias)] == pytest.approx(1e-4)
    assert wd_of[id(net[1].weight)] == 0.0


def test_optimizer_kinds_and_frozen_params():
    net = _net()
    net[0].weight.requires_grad_(False)
    sgd = build_optimizer(_cfg(OPTIMIZER="SGD", MOMENTUM=0.9, NESTEROV=True), net)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"]
    assert all(p is not net[0].weight for g in sgd.param_groups for p in g["params"])
    adamw = build_optimizer(_cfg(OPTIMIZER="AdamW", BASE_LR=3e-4, ADAMW_BETAS=(0.8, 0.99)), net)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.8, 0.99)
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_cfg(OPTIMIZER="Adam"), net)


def _lrs(cfg, n):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, sched


def test_multistep_with_linear_warmup():
    cfg = _cfg(
        BASE_LR=0.1, MAX_ITER=30, STEPS=(10, 20), GAMMA=0.1, WARMUP_ITERS=5, WARMUP_FACTOR=0.01
    )
    lrs, _ = _lrs(cfg, 30)
    for it in range(5):
        a = it / 5
        assert lrs[it] == pytest.approx(0.1 * (0.01 * (1 - a) + a))
    assert lrs[5:10] == pytest.approx([0.1] * 5)
    assert lrs[10:20] == pytest.approx([0.01] * 10)
    assert lrs[20:30] == pytest.approx([0.001] * 10)


def test_cosine_with_constant_warmup():
    cfg = _cfg(
        BASE_LR=0.2,
        MAX_ITER=100,
        LR_SCHEDULER_NAME="WarmupCosineLR",
        WARMUP_ITERS=10,
        WARMUP_FACTOR=0.1,
        WARMUP_METHOD="constant",
    )
    lrs, _ = _lrs(cfg, 100)
    for it in (0, 5, 9):
        cos = 0.5 * (1 + math.cos(math.pi * it / 100))
        assert lrs[it] == pytest.approx(0.2 * 0.1 * cos)
    for it in (10, 50, 99):
        assert lrs[it] == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * it / 100)))
    assert lrs[50] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))


def test_backoff_and_state_round_trip():
    cfg = _cfg(BASE_LR=0.1, MAX_ITER=20, STEPS=(10,), WARMUP_ITERS=0)
    lrs, sched = _lrs(cfg, 12)
    sched.backoff(0.5)
    assert sched.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 * 0.5)
    state = sched.state_dict()
    p = nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([p], lr=0.1)
    sched2 = build_lr_scheduler(cfg, opt2)
    sched2.load_state_dict(state)
    sched.step()
    sched2.step()
    assert sched2.lr_multiplier == 0.5 and sched2.last_epoch == sched.last_epoch
    assert opt2.param_groups[0]["lr"] == pytest.approx(sched.optimizer.param_groups[0]["lr"])
    assert isinstance(sched2, WarmupLRScheduler)
    assert lr_factor(3, max_iter=10, steps=(2,), gamma=0.5) == 0.5


def test_bad_schedule_names_are_user_errors():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    with pytest.raises(ConfigError, match="LR_SCHEDULER_NAME"):
        build_lr_scheduler(_cfg(LR_SCHEDULER_NAME="Step"), opt)
    with pytest.raises(ConfigError, match="WARMUP_METHOD"):
        build_lr_scheduler(_cfg(WARMUP_METHOD="exp"), opt)


def _params_with_grads(seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape, scale in (((10, 5), 3.0), ((7,), 0.01), ((3, 3, 2), 10.0)):
        p = nn.Parameter(torch.zeros(shape))
        p.grad = torch.randn(shape, generator=g) * scale
        params.append(p)
    return params


def test_clip_value_bounds_every_element():
    params = _params_with_grads()
    n = clip_gradients(params, "value", 0.5)
    assert n == 2  # the 0.01-scale gradient is untouched
    for p in params:
        assert float(p.grad.abs().max()) <= 0.5
    assert clip_gradients(params, "value", 0.5) == 0


def test_clip_norm_bounds_each_parameter():
    params = _params_with_grads()
    before = [p.grad.clone() for p in params]
    n = clip_gradients(params, "norm", 1.0)
    assert n == 2
    for p, b in zip(params, before, strict=True):
        assert float(p.grad.norm()) <= 1.0 + 1e-5
        # direction is kept
        cos = torch.nn.functional.cosine_similarity(p.grad.flatten(), b.flatten(), dim=0)
        assert float(cos) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(params[1].grad, before[1])


def test_clip_full_model_matches_torch_reference():
    params = _params_with_grads()
    ref = _params_with_grads()
    total = global_grad_norm(params)
    ref_total = torch.nn.utils.clip_grad_norm_(ref, max_norm=2.0)
    assert float(total) == pytest.approx(float(ref_total), rel=1e-6)
    assert clip_gradients(params, "full_model", 2.0, total_norm=total) == 3
    assert float(global_grad_norm(params)) <= 2.0 + 1e-5
    for p, r in zip(params, ref, strict=True):
        torch.testing.assert_close(p.grad, r.grad)
    assert clip_gradients(params, "full_model", 100.0) == 0


def test_global_norm_detects_non_finite():
    params = _params_with_grads()
    params[1].grad[0] = float("nan")
    assert not math.isfinite(float(global_grad_norm(params)))
