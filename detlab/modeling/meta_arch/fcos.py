"""The FCOS one-stage detector (Tian et al. 2019): backbone → neck → FCOS head."""

from __future__ import annotations

from typing import Any

from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY
from detlab.modeling.meta_arch.one_stage import OneStageDetector

__all__ = ["FCOS"]


@META_ARCH_REGISTRY.register()
class FCOS(OneStageDetector):
    """FCOS detector: the dense head ``MODEL.FCOS.HEAD_NAME`` on ``MODEL.FCOS.IN_FEATURES``.

    Arguments as :class:`OneStageDetector`.
    """

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.FCOS
        return cls.parts_from_config(cfg, c.HEAD_NAME, c.IN_FEATURES, "MODEL.FCOS.IN_FEATURES")
