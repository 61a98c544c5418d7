"""``MAPPER_REGISTRY``: dataset dict → model input, and the mapper contract check."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from detlab.utils.errors import ContractError
from detlab.utils.registry import Registry

__all__ = ["MAPPER_REGISTRY", "check_mapper"]


def check_mapper(mapper: Any, label: str = "the mapper", *_: Any) -> None:
    """Raise :class:`ContractError` unless ``mapper`` can be called as ``mapper(dataset_dict,
    rng)`` (a contract check when the loader is built, not an adaptation per call)."""
    if not callable(mapper):
        kind = type(mapper).__name__
        raise ContractError(f"{label} breaks its contract: a {kind} is not callable.")
    try:
        inspect.signature(mapper).bind({}, np.random.default_rng(0))
    except TypeError:
        raise ContractError(
            f"{label} breaks its contract: it cannot be called as mapper(dataset_dict, rng); "
            "take the numpy Generator the loader passes and draw all randomness from it."
        ) from None
    except ValueError:  # no introspectable signature: trust it
        pass


MAPPER_REGISTRY = Registry(
    "MAPPER",
    doc="""Dataset mappers, selected by ``DATALOADER.MAPPER``.

A registered class's ``from_config(cfg, is_train: bool) -> dict`` returns its constructor's
keyword arguments. The built mapper is called as ``mapper(dataset_dict, rng)`` (checked when
built): ``dataset_dict`` has ``file_name``, ``height``, ``width``, ``image_id``,
``annotations`` with XYWH ``bbox`` and contiguous ``category_id``; ``rng`` is a
``numpy.random.Generator`` seeded by the sample's stream position, and all of the mapper's
randomness comes from it (never from the global generators), so a resumed run sees the same
augmentations. It returns ``image`` (float32 C×H×W tensor, 0..255 scale), ``instances``
(``boxes`` N×4 XYXY float in the augmented image's pixels, ``classes`` N int64), ``height``,
``width`` and ``image_id`` of the original image — or ``None`` for an image that cannot be
read (the loader skips and counts it).
""",
    check=check_mapper,
)
