"""Detection heads; importing this package registers them in ``HEAD_REGISTRY``."""

from detlab.modeling.heads.build import HEAD_REGISTRY
from detlab.modeling.heads.fcos_head import FCOSHead

__all__ = ["FCOSHead", "HEAD_REGISTRY"]
