"""Mappers (``MAPPER_REGISTRY``): dataset dict → model input, chosen by ``DATALOADER.MAPPER``.

:class:`MosaicMapper` is not a registered mapper but a wrapper around one (``INPUT.MOSAIC``).
"""

from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.data.mappers.class_aware import ClassAwareMapper
from detlab.data.mappers.dataset_mapper import DatasetMapper
from detlab.data.mappers.mosaic import MosaicMapper
from detlab.data.mappers.ship_sar import ShipSARMapper, sar_augmentations

__all__ = [
    "MAPPER_REGISTRY",
    "ClassAwareMapper",
    "DatasetMapper",
    "MosaicMapper",
    "ShipSARMapper",
    "sar_augmentations",
]
