"""Model checks: build, parameters, FLOPs (fvcore), weights, one forward+backward, and an
overfit-one-batch run (the loss must fall by a set fraction within N steps)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch
from torch import nn

from detlab.diagnostics.core import FAIL, PASS, SKIP, WARN, Report
from detlab.utils.env import resolve_device

__all__ = ["check_model", "check_overfit", "count_flops"]


class _InferenceView(nn.Module):
    """``image`` 1×C×H×W → the eager detector's outputs, for fvcore's tracer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inst = self.model([{"image": image[0]}])[0]["instances"]
        return inst.boxes, inst.scores


def count_flops(model: nn.Module, image: torch.Tensor) -> float:
    """fvcore's count for one C×H×W image in eval mode (one multiply-add = one flop)."""
    was = model.training
    model.eval()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    try:
        with torch.no_grad(), _quiet():
            from fvcore.nn import FlopCountAnalysis

            analysis = FlopCountAnalysis(_InferenceView(model), (image[None],))
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return float(analysis.total())
    finally:
        model.train(was)


class _quiet:
    def __enter__(self) -> None:
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._w.__exit__(*exc)


def _test_image(cfg: Any, batch: list[dict]) -> torch.Tensor:
    if batch:
        return batch[0]["image"]
    c = len(cfg.MODEL.PIXEL_MEAN)
    s = int(cfg.INPUT.MIN_SIZE_TEST) or 512
    return torch.rand(c, s, s) * 255


def check_model(cfg: Any, report: Report, batch: list[dict]) -> nn.Module | None:
    """Build the model, count parameters and FLOPs, load MODEL.WEIGHTS, run forward+backward."""
    from detlab.modeling import build_model, load_model_weights

    s = "model"
    torch.manual_seed(0)
    model = report.run(s, "build", lambda: build_model(cfg),
                       "check the MODEL.* keys named in the message.")  # fmt: skip
    if model is None:
        return None
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report.add(s, "build", PASS, f"{cfg.MODEL.META_ARCHITECTURE} with "
               f"{cfg.MODEL.BACKBONE.NAME}: {total / 1e6:.2f} M parameters "
               f"({train / 1e6:.2f} M trainable)", parameters=total, trainable=train)  # fmt: skip

    image = _test_image(cfg, batch).to(resolve_device(cfg.MODEL.DEVICE))
    try:
        flops = count_flops(model, image)
        report.add(s, "FLOPs", PASS, f"{flops / 1e9:.3f} GFLOPs (fvcore, one {tuple(image.shape)} "
                   "image, inference)", gflops=flops / 1e9)  # fmt: skip
    except Exception as err:  # noqa: BLE001 - counting is informative, not required
        report.add(s, "FLOPs", WARN, f"fvcore could not count: {str(err).splitlines()[0][:150]}",
                   "nothing to fix for training; custom modules may not trace.")  # fmt: skip

    if cfg.MODEL.WEIGHTS:
        res = report.run(
            s,
            "MODEL.WEIGHTS",
            lambda: load_model_weights(model, cfg.MODEL.WEIGHTS),
            "check the MODEL.WEIGHTS path and that it holds a state dict.",
        )
        if res is not None:  # fmt: skip
            status = WARN if not res["loaded"] or res["skipped"] else PASS
            counts = ", ".join(f"{k} {len(v)}" for k, v in res.items() if v)
            report.add(s, "MODEL.WEIGHTS", status, f"{cfg.MODEL.WEIGHTS}: {counts} tensors",
                       "" if status == PASS else "the checkpoint does not fit this model; check "
                       "the backbone name, channels and NUM_CLASSES.")  # fmt: skip

    if not batch:
        report.add(s, "forward+backward", SKIP, "no training batch (see the data checks)")
        return model
    model.train()
    t0 = time.perf_counter()
    losses = report.run(s, "forward+backward", lambda: model(batch))
    if losses is None:
        return None
    bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v).all()}
    if not losses or bad:
        report.add(
            s,
            "forward+backward",
            FAIL,
            f"non-finite losses {bad}" if bad else "the model returned no losses in training mode",
            "check MODEL.PIXEL_MEAN/PIXEL_STD against the mapper's 0..255 scale and the "
            "annotations; lower SOLVER.BASE_LR.",
        )
        return None  # fmt: skip
    total_loss = sum(losses.values())
    total_loss.backward()
    seconds = time.perf_counter() - t0
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in params if p.grad is None]
    nonfinite = [n for n, p in params if p.grad is not None and not torch.isfinite(p.grad).all()]
    model.zero_grad(set_to_none=True)
    values = {k: float(v.detach()) for k, v in losses.items()}
    terms = ", ".join(f"{k} {v:.3f}" for k, v in values.items())
    if nonfinite:
        report.add(
            s,
            "forward+backward",
            FAIL,
            f"non-finite gradients in {nonfinite[:3]}",
            "enable SOLVER.CLIP_GRADIENTS and lower SOLVER.BASE_LR; check the inputs.",
        )
        return None  # fmt: skip
    detail = f"{len(batch)} images, {seconds:.2f} s; {terms}"
    if no_grad:  # informational: the trainer's DDP wrapper detects unused parameters
        detail += f"; {len(no_grad)} parameters unused (first: {no_grad[0]})"
    report.add(s, "forward+backward", PASS, detail, losses=values, unused=len(no_grad))
    return model


def check_overfit(
    report: Report,
    model: nn.Module | None,
    batch: list[dict],
    steps: int = 50,
    drop: float = 0.6,
    lr: float = 1e-3,
) -> None:
    """Train on one fixed batch (AdamW at ``lr``, gradient norm clipped at 10): pass when the
    total loss falls to ``(1 - drop)`` of its first value within ``steps`` steps.

    The optimizer is fixed (not SOLVER.*) so the check tests the model, its targets and its
    losses; a failure means they cannot fit even one batch.
    """
    s = "overfit"
    if model is None or not batch or steps <= 0:
        report.add(
            s,
            "one batch",
            SKIP,
            "needs a built model and a training batch"
            if steps > 0
            else "disabled (--overfit-steps 0)",
        )
        return  # fmt: skip
    torch.manual_seed(0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    history: list[float] = []
    t0 = time.perf_counter()
    for _ in range(steps):
        losses = model(batch)
        total = sum(losses.values())
        value = float(total.detach())
        if not math.isfinite(value):
            report.add(
                s,
                "one batch",
                FAIL,
                f"the loss became {value} after {len(history)} steps",
                "lower the learning rate (--overfit-lr) and check the inputs; "
                "enable SOLVER.CLIP_GRADIENTS for training.",
                history=history,
            )
            return  # fmt: skip
        history.append(value)
        if value <= (1.0 - drop) * history[0]:
            break
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
    opt.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    first, best = history[0], min(history)
    detail = (
        f"loss {first:.3f} -> {history[-1]:.3f} (best {best:.3f}, "
        f"-{100 * (1 - best / first):.0f} %) in {len(history) - 1} steps, {seconds:.1f} s"
    )
    if best <= (1.0 - drop) * first:  # fmt: skip
        report.add(s, "one batch", PASS, detail, history=history)
    else:
        report.add(s, "one batch", FAIL, detail + f"; needed -{100 * drop:.0f} %",
                   "the model cannot fit one batch: check the target assignment (box format "
                   "XYXY, NUM_CLASSES, size ranges / anchors for your object sizes) and that "
                   "images and boxes line up (tools/visualize.py); or raise --overfit-steps.",
                   history=history)  # fmt: skip
