"""``ClassAwareMapper``: extra augmentation for images that hold chosen (usually rare) classes.

Built on :class:`ShipSARMapper` (set ``INPUT.SAR.SCALING none`` for ordinary 8-bit data).
``INPUT.CLASS_AWARE.POLICIES`` is a list of ``{classes: [...], augmentations: [...], p: 1.0}``;
an image holding any of a policy's classes (names or contiguous ids) gets that policy's
albumentations transforms, with probability ``p``, after the common ones. It needs a dataset
with at least two classes and refuses a one-class dataset when it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from detlab.data.catalog import MetadataCatalog
from detlab.data.mappers.build import MAPPER_REGISTRY
from detlab.data.mappers.ship_sar import ShipSARMapper
from detlab.data.transforms import apply_albumentations, build_albumentations
from detlab.utils.errors import UserError

__all__ = ["ClassAwareMapper"]


@MAPPER_REGISTRY.register()
class ClassAwareMapper(ShipSARMapper):
    """Per-class augmentation policies on top of the SAR mapper (see the module docstring)."""

    def __init__(
        self,
        is_train: bool = True,
        *,
        thing_classes: Sequence[str],
        policies: Sequence[dict] = (),
        **kwargs: Any,
    ) -> None:
        """
        Args:
            thing_classes: class names of the dataset (index = contiguous id).
            policies: ``[{classes: [name or id, ...], augmentations: [...], p: float}]``.
        """
        thing_classes = list(thing_classes)
        if len(thing_classes) < 2:
            raise UserError(
                f"ClassAwareMapper needs a dataset with at least two classes, but this one has "
                f"{len(thing_classes)} ({', '.join(thing_classes) or 'none'}); set "
                "DATALOADER.MAPPER to ShipSARMapper or DatasetMapper."
            )
        super().__init__(is_train, **kwargs)
        self.thing_classes = thing_classes
        self.policies: list[tuple[set[int], Any, float]] = []
        for i, pol in enumerate(policies):
            where = f"INPUT.CLASS_AWARE.POLICIES[{i}]"
            if not isinstance(pol, dict) or not pol.get("classes"):
                raise UserError(f"{where} must be a mapping with 'classes' and 'augmentations'.")
            ids = {self._class_id(c, where) for c in pol["classes"]}
            compose = build_albumentations(pol.get("augmentations") or [], f"{where}.augmentations")
            self.policies.append((ids, compose, float(pol.get("p", 1.0))))

    def _class_id(self, c: Any, where: str) -> int:
        if isinstance(c, int) and 0 <= c < len(self.thing_classes):
            return c
        if isinstance(c, str) and c in self.thing_classes:
            return self.thing_classes.index(c)
        raise UserError(f"{where}: unknown class {c!r}; classes are {self.thing_classes}.")

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        args = super().from_config(cfg, is_train)
        names = list(cfg.DATASETS.TRAIN) or list(cfg.DATASETS.TEST)
        classes = None
        for name in names:
            classes = MetadataCatalog.get(name).get("thing_classes")
            if classes is not None:
                break
        if classes is None:
            from detlab.data.catalog import DatasetCatalog

            DatasetCatalog.get(names[0])  # loading fills in the class metadata
            classes = MetadataCatalog.get(names[0]).get("thing_classes") or []
        args.update(thing_classes=classes, policies=list(cfg.INPUT.CLASS_AWARE.POLICIES))
        return args

    def extra_augment(self, img, boxes, labels, rng: np.random.Generator):
        present = {int(c) for c in labels}
        for ids, compose, p in self.policies:
            if compose is not None and present & ids and rng.random() < p:
                img, boxes, labels = apply_albumentations(compose, img, boxes, labels, rng)
                present = {int(c) for c in labels}
        return img, boxes, labels
