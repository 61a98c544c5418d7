"""``TEMPORAL_REGISTRY``: recurrent cells for event streams, and :func:`build_temporal`."""

from __future__ import annotations

from typing import Any

from detlab.modeling.contracts import check_temporal_cell
from detlab.utils.errors import UserError
from detlab.utils.registry import Registry

__all__ = ["TEMPORAL_REGISTRY", "build_temporal"]

TEMPORAL_REGISTRY = Registry(
    "TEMPORAL",
    doc="""Recurrent cells applied to one feature level, selected by ``MODEL.TEMPORAL.NAME``.

A registered class is an ``nn.Module`` taking plain arguments (``channels``, ``kernel_size``)
with ``from_config(cfg, channels: int) -> dict``. ``forward(x, state)`` takes ``x`` of shape
``B×C×H×W`` and ``state`` (a tuple of ``B×C×H×W`` tensors, or None for a fresh start) and
returns ``(out, new_state)`` with ``out`` of ``x``'s shape, so the neck after it sees the
backbone's channels and strides unchanged. Checked when built (a probe of two steps).
""",
    check=check_temporal_cell,
)


def build_temporal(cfg: Any, input_shape: dict, neck_features: list[str]) -> Any:
    """The :class:`RecurrentMemory` of ``MODEL.TEMPORAL`` over ``input_shape`` (the backbone's
    ``output_shape()``), or None when ``MODEL.TEMPORAL.NAME`` is empty or ``"none"`` (any
    case; the spelling a sweep spec can list next to the cells)."""
    from detlab.modeling.temporal.memory import RecurrentMemory

    t = cfg.MODEL.TEMPORAL
    if not t.NAME or str(t.NAME).lower() == "none":
        return None
    names = list(t.IN_FEATURES) or list(neck_features)
    unknown = [n for n in names if n not in input_shape]
    if unknown:
        raise UserError(
            f"MODEL.TEMPORAL.IN_FEATURES names {unknown}, which the backbone does not output "
            f"(it has {list(input_shape)}); pick from those."
        )
    cells = {n: TEMPORAL_REGISTRY.build(t.NAME, cfg, input_shape[n].channels) for n in names}
    return RecurrentMemory(cells, detach_every=int(t.DETACH_EVERY))
