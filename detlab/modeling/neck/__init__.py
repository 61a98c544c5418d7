"""Necks; importing this package registers them in ``NECK_REGISTRY``."""

from detlab.modeling.neck.build import NECK_REGISTRY, build_neck
from detlab.modeling.neck.fpn import FPN, PAFPN
from detlab.modeling.neck.pan import PAN

__all__ = ["FPN", "NECK_REGISTRY", "PAFPN", "PAN", "build_neck"]
