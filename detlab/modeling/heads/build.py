"""Head registries, one call shape each: dense heads, proposal generators, ROI heads.

Every head is built by its registry's ``build`` from a name, the config and ``input_shape``
(the neck levels it reads, ``{name: ShapeSpec}`` finest first), and checked against its
family's contract when built (one ContractError sentence naming the head and the mismatch).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from detlab.modeling.contracts import check_dense_head, check_proposal_generator, check_roi_heads
from detlab.structures import ShapeSpec
from detlab.utils.registry import Registry

__all__ = [
    "DENSE_HEAD_REGISTRY",
    "PROPOSAL_GENERATOR_REGISTRY",
    "ROI_HEADS_REGISTRY",
    "build_dense_head",
    "build_proposal_generator",
    "build_roi_heads",
]

DENSE_HEAD_REGISTRY = Registry(
    "DENSE_HEAD",
    doc="""One-stage (dense) detection heads: ``FCOSHead``, ``YOLOHead``; RetinaNet fits here.

Contract:

* registered: an ``nn.Module`` class with ``from_config(cfg, input_shape) -> dict`` of
  constructor arguments; ``input_shape`` is ``{level name: ShapeSpec}`` of the neck levels the
  head reads, finest first (it takes its strides from there, never from level indices);
* ``forward(features: list[Tensor], image_sizes: list[(h, w)], targets: list[Instances] |
  None = None)``: ``features`` are those levels in ``input_shape`` order (``B × C × H_l ×
  W_l``), ``image_sizes`` the unpadded network-input size of each image, ``targets`` per image
  ``Instances`` with ``boxes`` (N×4 XYXY, input pixels), ``classes`` (N, int64, 0..K-1) and
  ``areas`` (N, px² in the original image, for size-aware losses);
* with ``targets``: a ``dict[str, Tensor]`` of named scalar losses; without: per image an
  ``Instances`` with ``boxes`` (XYXY in the network input's pixels), ``scores`` and ``classes``
  that the meta-architecture rescales to the original image.
""",
    check=check_dense_head,
)

PROPOSAL_GENERATOR_REGISTRY = Registry(
    "PROPOSAL_GENERATOR",
    doc="""Proposal generators of two-stage detectors (RPN), ``MODEL.PROPOSAL_GENERATOR.NAME``.

Contract:

* registered: an ``nn.Module`` class with ``from_config(cfg, input_shape) -> dict``
  (``input_shape`` as for dense heads);
* ``forward(features: list[Tensor], image_sizes, targets=None) -> (proposals, losses)``:
  per image an ``Instances`` with ``proposal_boxes`` (XYXY input pixels) and
  ``objectness_logits``, and a dict of named scalar losses (empty unless training with
  targets). Train and test proposal counts come from the module's train/eval mode.
""",
    check=check_proposal_generator,
)

ROI_HEADS_REGISTRY = Registry(
    "ROI_HEADS",
    doc="""Second-stage heads on pooled regions, selected by ``MODEL.ROI_HEADS.NAME``.

Contract:

* registered: an ``nn.Module`` class with ``from_config(cfg, input_shape) -> dict``
  (``input_shape``: the levels RoIs are pooled from);
* ``forward(features: dict[str, Tensor], proposals: list[Instances], image_sizes,
  targets=None)``: in training with targets a dict of named scalar losses; otherwise per image
  an ``Instances`` with ``boxes`` (XYXY input pixels), ``scores`` and ``classes``.
""",
    check=check_roi_heads,
)


def build_dense_head(cfg: Any, name: str, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build and check the dense head registered as ``name`` over ``input_shape``."""
    return DENSE_HEAD_REGISTRY.build(name, cfg, input_shape)


def build_proposal_generator(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build and check ``MODEL.PROPOSAL_GENERATOR.NAME`` over ``input_shape``."""
    return PROPOSAL_GENERATOR_REGISTRY.build(cfg.MODEL.PROPOSAL_GENERATOR.NAME, cfg, input_shape)


def build_roi_heads(cfg: Any, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """Build and check ``MODEL.ROI_HEADS.NAME`` over ``input_shape``."""
    return ROI_HEADS_REGISTRY.build(cfg.MODEL.ROI_HEADS.NAME, cfg, input_shape)
