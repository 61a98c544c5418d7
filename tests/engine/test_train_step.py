"""TrainStep built from plain arguments: each phase against a hand-written reference step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detlab.config import get_cfg
from detlab.engine.nan_guard import NaNGuard
from detlab.engine.train_step import TrainStep
from detlab.solver import GradientClipper, build_gradient_clipper
from detlab.utils.errors import ConfigError
from detlab.utils.events import EventStorage


class _Regressor(nn.Module):
    """Training forward: ``{"loss_a": mse, "loss_b": 0.1·|w|₁}`` on ``[{"x", "y"}]`` batches."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        x = torch.stack([d["x"] for d in batch])
        y = torch.stack([d["y"] for d in batch])
        return {
            "loss_a": ((self.lin(x) - y) ** 2).mean(),
            "loss_b": 0.1 * self.lin.weight.abs().sum(),
        }


def _batches(n: int, seed: int = 0) -> list[list[dict]]:
    g = torch.Generator().manual_seed(seed)
    return [
        [{"x": torch.randn(4, generator=g) * 5, "y": torch.randn(2, generator=g)} for _ in range(2)]
        for _ in range(n)
    ]


def _pair(lr: float = 0.5):
    torch.manual_seed(0)
    a = _Regressor()
    b = _Regressor()
    b.load_state_dict(a.state_dict())
    return a, torch.optim.SGD(a.parameters(), lr=lr), b, torch.optim.SGD(b.parameters(), lr=lr)


def _reference_step(model, opt, batches, clip=None):
    opt.zero_grad()
    for batch in batches:
        (sum(model(batch).values()) / len(batches)).backward()
    if clip is not None:
        clip(list(model.parameters()))
    opt.step()


@pytest.mark.parametrize("accum", [1, 3])
@pytest.mark.parametrize(
    "clipper, reference",
    [
        (None, None),
        (
            GradientClipper("full_model", 0.3),
            lambda ps: torch.nn.utils.clip_grad_norm_(ps, 0.3),
        ),
        (
            GradientClipper("value", 0.05),
            lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.05),
        ),
    ],
)
def test_one_step_matches_a_hand_written_step(accum, clipper, reference):
    model, opt, ref, ref_opt = _pair()
    step = TrainStep(model, opt, NaNGuard(), clipper=clipper, accum_steps=accum)
    batches = _batches(accum)
    with EventStorage(0) as storage:
        verdict = step(iter(batches), 0)
    _reference_step(ref, ref_opt, batches, reference)
    assert verdict == "ok"
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert storage.history("total_loss").latest() > 0
    assert (step.clip_count == 1) == (clipper is not None)


def test_non_finite_loss_skips_the_step_and_still_draws_every_batch():
    model, opt, _, _ = _pair()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    guard = NaNGuard(inject_iters=[0], inject_kind="loss")
    step = TrainStep(model, opt, guard, accum_steps=3)
    batches = iter(_batches(4))
    with EventStorage(0):
        assert step(batches, 0) == "skip"
    assert len(list(batches)) == 1  # three of four drawn: the data position stays exact
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert guard.skipped == 1


def test_disabled_guard_raises_on_a_non_finite_loss():
    model, opt, _, _ = _pair()
    step = TrainStep(model, opt, NaNGuard(enabled=False, inject_iters=[3]))
    with EventStorage(0), pytest.raises(FloatingPointError, match="iteration=3"):
        step(iter(_batches(1)), 3)


def test_after_backward_runs_between_backward_and_step():
    model, opt, _, _ = _pair()
    seen = []

    def after_backward():
        seen.append((model.lin.weight.grad is not None, model.lin.weight.detach().clone()))

    w0 = model.lin.weight.detach().clone()
    with EventStorage(0):
        TrainStep(model, opt, NaNGuard())(iter(_batches(1)), 0, after_backward)
    assert seen[0][0] and torch.equal(seen[0][1], w0)
    assert not torch.equal(model.lin.weight, w0)


def test_clipper_is_validated_once_from_the_config():
    cfg = get_cfg()
    assert build_gradient_clipper(cfg) is None  # disabled by default
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 10.0
    clipper = build_gradient_clipper(cfg)
    assert (clipper.clip_type, clipper.clip_value, clipper.norm_type) == ("full_model", 10.0, 2.0)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "global"
    with pytest.raises(ConfigError, match="CLIP_TYPE must be one of value, norm, full_model"):
        build_gradient_clipper(cfg)
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "value"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 0.0
    with pytest.raises(ConfigError, match="CLIP_VALUE must be > 0"):
        build_gradient_clipper(cfg)
