"""``META_ARCH_REGISTRY`` and :func:`build_model`."""

from __future__ import annotations

from typing import Any

from detlab.modeling.contracts import check_meta_arch
from detlab.utils.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model"]

META_ARCH_REGISTRY = Registry(
    "META_ARCH",
    doc="""Whole detectors, selected by ``MODEL.META_ARCHITECTURE``.

A registered class is an ``nn.Module`` whose ``from_config(cfg) -> dict`` returns its
constructor's keyword arguments (checked when built: an ``nn.Module`` whose ``forward`` takes
the batch). ``forward`` takes a list of mapper outputs (``image`` C×H×W float tensor,
``instances`` with ``boxes``/``classes``, ``height``, ``width``, ``image_id``). In training
mode it returns ``dict[str, Tensor]`` of named scalar losses; in eval mode a list with one
``{"instances": Instances}`` per image whose ``boxes`` (XYXY), ``scores`` and ``classes`` are in
the original image's pixels.
""",
    check=check_meta_arch,
)


def build_model(cfg: Any) -> Any:
    """Build the detector named by ``cfg.MODEL.META_ARCHITECTURE`` on ``cfg.MODEL.DEVICE``
    (``"auto"``: CUDA when available, else CPU)."""
    from detlab.utils.env import resolve_device

    model = META_ARCH_REGISTRY.build(cfg.MODEL.META_ARCHITECTURE, cfg)
    return model.to(resolve_device(cfg.MODEL.DEVICE))
