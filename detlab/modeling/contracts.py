"""Build-time checks of the model registries' contracts (one sentence on a mismatch).

Each registry in :mod:`detlab.modeling` runs its check on every component it builds. Static
parts (an ``nn.Module``, ``output_shape()`` names and strides, a ``forward`` that accepts the
family's call shape) are checked first; then a probe runs the module once in eval mode under
``torch.no_grad()`` on small random inputs of the declared shapes and compares what comes back
with what was declared (names, channels, spatial size = ceil(input size / stride)). The probe
restores the module's train/eval mode and the global random state, so building a model draws
exactly the random numbers it drew before the checks existed.

Naming rule shared by every family: a map of stride ``s = 2**k`` (input pixels per cell) is
``res{k}`` when a backbone returns it and ``p{k}`` when a neck returns it.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from detlab.structures import Instances, ShapeSpec
from detlab.utils.errors import ContractError

__all__ = [
    "check_backbone",
    "check_dense_head",
    "check_meta_arch",
    "check_neck",
    "check_proposal_generator",
    "check_roi_heads",
    "check_shapes",
    "level_name",
]


def level_name(prefix: str, stride: int) -> str:
    """``level_name("res", 8) == "res3"``: the name of a map of stride 2**k."""
    return f"{prefix}{int(math.log2(stride))}"


def _fail(label: str, what: str) -> ContractError:
    return ContractError(f"{label} breaks its contract: {what}.")


def _module(component: Any, label: str) -> nn.Module:
    if not isinstance(component, nn.Module):
        raise _fail(label, f"it built a {type(component).__name__}, not an nn.Module")
    return component


def check_shapes(shapes: Any, label: str, prefix: str, what: str = "output_shape()") -> None:
    """``shapes`` is a non-empty ``{name: ShapeSpec}`` with names ``{prefix}{log2 stride}``,
    power-of-two strides, ascending."""
    if not isinstance(shapes, dict) or not shapes:
        raise _fail(label, f"{what} must return a non-empty dict of name -> ShapeSpec")
    strides = []
    for name, spec in shapes.items():
        if not isinstance(spec, ShapeSpec):
            raise _fail(label, f"{what}['{name}'] is a {type(spec).__name__}, not a ShapeSpec")
        s = spec.stride
        if s < 1 or s & (s - 1):
            raise _fail(label, f"{what}['{name}'] has stride {s}, not a power of two")
        if name != level_name(prefix, s):
            raise _fail(
                label,
                f"{what} names the stride-{s} map '{name}' but a stride-{s} map is "
                f"'{level_name(prefix, s)}' ({prefix}k has stride 2**k)",
            )
        strides.append(s)
    if strides != sorted(set(strides)):
        raise _fail(label, f"{what} strides {strides} are not ascending (finest first)")


def _takes(fn: Any, *args: Any) -> bool:
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        return False
    except ValueError:  # no signature (builtins): accept
        return True
    return True


@contextlib.contextmanager
def _probing(module: nn.Module) -> Iterator[torch.Generator]:
    """Eval mode, no grad, global RNG untouched; yields a seeded generator for probe inputs."""
    was = module.training
    module.eval()
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            yield torch.Generator().manual_seed(0)
    finally:
        module.train(was)


def _device(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def _random_features(
    shapes: dict[str, ShapeSpec], size: int, gen: torch.Generator, device: torch.device
) -> dict[str, torch.Tensor]:
    return {
        n: torch.randn(1, s.channels, -(-size // s.stride), -(-size // s.stride), generator=gen).to(
            device
        )
        for n, s in shapes.items()
    }


def _compare(out: Any, declared: dict[str, ShapeSpec], size: int, label: str, call: str) -> None:
    if not isinstance(out, dict) or list(out) != list(declared):
        got = list(out) if isinstance(out, dict) else type(out).__name__
        raise _fail(label, f"{call} returned {got} but output_shape() declares {list(declared)}")
    for name, spec in declared.items():
        t = out[name]
        side = -(-size // spec.stride)
        want = (1, spec.channels, side, side)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise _fail(
                label,
                f"on a {size}x{size} input {call} gave '{name}' of shape {got}, but its declared "
                f"ShapeSpec(channels={spec.channels}, stride={spec.stride}) means {want}",
            )


def _declared(component: Any, label: str, prefix: str) -> tuple[nn.Module, dict[str, ShapeSpec]]:
    module = _module(component, label)
    if not callable(getattr(module, "output_shape", None)):
        raise _fail(label, "it has no output_shape() method")
    shapes = module.output_shape()
    check_shapes(shapes, label, prefix)
    return module, shapes


def check_backbone(component: Any, label: str) -> None:
    """BACKBONE contract (see :data:`detlab.modeling.backbone.BACKBONE_REGISTRY`)."""
    module, shapes = _declared(component, label, "res")
    in_ch = getattr(module, "in_channels", None)
    if not isinstance(in_ch, int) or in_ch < 1:
        raise _fail(label, "it has no integer in_channels attribute (image channels it takes)")
    size = 2 * max(s.stride for s in shapes.values())
    with _probing(module) as gen:
        x = torch.randn(1, in_ch, size, size, generator=gen).to(_device(module))
        _compare(module(x), shapes, size, label, "forward(image)")


def check_neck(component: Any, label: str, input_shape: dict[str, ShapeSpec]) -> None:
    """NECK contract (see :data:`detlab.modeling.neck.NECK_REGISTRY`)."""
    module, shapes = _declared(component, label, "p")
    names = getattr(module, "in_features", None)
    if not isinstance(names, (list, tuple)) or not names:
        raise _fail(label, "it has no in_features list naming the backbone maps it reads")
    unknown = [n for n in names if n not in input_shape]
    if unknown:
        raise _fail(label, f"it reads {unknown}, which the backbone does not declare")
    size = max(s.stride for s in (*shapes.values(), *input_shape.values()))
    with _probing(module) as gen:
        feats = _random_features(input_shape, size, gen, _device(module))
        _compare(module(feats), shapes, size, label, "forward(features)")


def _probe_levels(
    module: nn.Module, input_shape: dict[str, ShapeSpec], gen: torch.Generator
) -> tuple[dict[str, torch.Tensor], list[tuple[int, int]]]:
    size = 2 * max(s.stride for s in input_shape.values())
    feats = _random_features(input_shape, size, gen, _device(module))
    return feats, [(size, size)]


def _check_instances(out: Any, label: str, call: str, fields: Sequence[str]) -> None:
    if not isinstance(out, list) or len(out) != 1 or not isinstance(out[0], Instances):
        raise _fail(label, f"{call} in eval mode must return one Instances per image")
    missing = [f for f in fields if not out[0].has(f)]
    if missing:
        raise _fail(label, f"{call} in eval mode returned Instances without {missing}")


def _probe_on_levels(component: Any, label: str, input_shape: dict[str, ShapeSpec]) -> Any:
    """Check ``forward(features, image_sizes, targets=None)`` and run it once in eval mode on
    random levels of the declared shapes."""
    module = _module(component, label)
    if not _takes(module.forward, [], [], None):
        raise _fail(label, "forward must accept (features, image_sizes, targets=None)")
    with _probing(module) as gen:
        feats, sizes = _probe_levels(module, input_shape, gen)
        return module(list(feats.values()), sizes)


def check_dense_head(component: Any, label: str, input_shape: dict[str, ShapeSpec]) -> None:
    """DENSE_HEAD contract (see :data:`detlab.modeling.heads.DENSE_HEAD_REGISTRY`)."""
    out = _probe_on_levels(component, label, input_shape)
    _check_instances(out, label, "forward(features, image_sizes)", ("boxes", "scores", "classes"))


def check_proposal_generator(component: Any, label: str, input_shape: dict[str, ShapeSpec]) -> None:
    """PROPOSAL_GENERATOR contract (see ``PROPOSAL_GENERATOR_REGISTRY``)."""
    out = _probe_on_levels(component, label, input_shape)
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise _fail(label, "forward must return (proposals, losses dict)")
    _check_instances(out[0], label, "forward", ("proposal_boxes", "objectness_logits"))


def check_roi_heads(component: Any, label: str, input_shape: dict[str, ShapeSpec]) -> None:
    """ROI_HEADS contract (see :data:`detlab.modeling.heads.ROI_HEADS_REGISTRY`)."""
    module = _module(component, label)
    if not _takes(module.forward, {}, [], [], None):
        raise _fail(label, "forward must accept (features, proposals, image_sizes, targets=None)")
    with _probing(module) as gen:
        feats, sizes = _probe_levels(module, input_shape, gen)
        h, w = sizes[0]
        box = torch.tensor([[0.0, 0.0, w / 2, h / 2], [w / 4, h / 4, w, h]], device=_device(module))
        props = [Instances((h, w), proposal_boxes=box, objectness_logits=torch.zeros(2).to(box))]
        out = module(feats, props, sizes)
    _check_instances(out, label, "forward(features, proposals, image_sizes)", ("boxes", "scores"))


def check_meta_arch(component: Any, label: str) -> None:
    """META_ARCH contract: an ``nn.Module`` taking ``forward(batched_inputs)``."""
    module = _module(component, label)
    if not _takes(module.forward, []):
        raise _fail(label, "forward must accept (batched_inputs)")
