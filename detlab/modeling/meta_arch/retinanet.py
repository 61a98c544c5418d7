"""The RetinaNet one-stage detector (Lin et al. 2017): backbone → neck → RetinaNet head."""

from __future__ import annotations

from typing import Any

from detlab.modeling.meta_arch.build import META_ARCH_REGISTRY
from detlab.modeling.meta_arch.one_stage import OneStageDetector

__all__ = ["RetinaNet"]


@META_ARCH_REGISTRY.register()
class RetinaNet(OneStageDetector):
    """RetinaNet: the dense head ``MODEL.RETINANET.HEAD_NAME`` on ``MODEL.RETINANET.IN_FEATURES``.

    Arguments as :class:`OneStageDetector`. With ``MODEL.FPN.TOP_BLOCK P6P7C5`` and the
    ``MODEL.RETINANET`` defaults it is Detectron2's and torchvision's RetinaNet.
    """

    @classmethod
    def from_config(cls, cfg: Any) -> dict[str, Any]:
        c = cfg.MODEL.RETINANET
        return cls.parts_from_config(cfg, c.HEAD_NAME, c.IN_FEATURES, "MODEL.RETINANET.IN_FEATURES")
