"""Data structures passed between mappers, models and evaluators."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["Instances", "ShapeSpec"]


class ShapeSpec:
    """Channels and stride of a feature map (stride in input pixels per feature cell)."""

    __slots__ = ("channels", "stride")

    def __init__(self, channels: int, stride: int) -> None:
        self.channels = int(channels)
        self.stride = int(stride)

    def __repr__(self) -> str:
        return f"ShapeSpec(channels={self.channels}, stride={self.stride})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ShapeSpec)
            and self.channels == other.channels
            and self.stride == other.stride
        )

    def __hash__(self) -> int:
        return hash((self.channels, self.stride))


class Instances:
    """Per-image set of N instances: named fields that all have length N.

    Usual fields: ``boxes`` (Tensor[N, 4], XYXY float), ``classes`` (Tensor[N], int64),
    ``scores`` (Tensor[N], float). ``image_size`` is ``(height, width)`` of the image the boxes
    refer to.

    >>> inst = Instances((480, 640), boxes=torch.zeros(2, 4), classes=torch.tensor([0, 1]))
    >>> len(inst), inst[inst.classes == 1].boxes.shape
    (2, torch.Size([1, 4]))
    """

    def __init__(self, image_size: tuple[int, int], **fields: Any) -> None:
        object.__setattr__(self, "_image_size", (int(image_size[0]), int(image_size[1])))
        object.__setattr__(self, "_fields", {})
        for name, value in fields.items():
            self.set(name, value)

    @property
    def image_size(self) -> tuple[int, int]:
        return self._image_size

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.set(name, value)

    def __getattr__(self, name: str) -> Any:
        fields = object.__getattribute__(self, "_fields")
        if name in fields:
            return fields[name]
        raise AttributeError(f"Instances has no field '{name}'; fields: {sorted(fields)}")

    def set(self, name: str, value: Any) -> None:
        n = len(value)
        if self._fields and n != len(self):
            raise ValueError(f"field '{name}' has length {n}, other fields have {len(self)}")
        self._fields[name] = value

    def has(self, name: str) -> bool:
        return name in self._fields

    def get(self, name: str) -> Any:
        return self._fields[name]

    def get_fields(self) -> dict[str, Any]:
        return dict(self._fields)

    def to(self, *args: Any, **kwargs: Any) -> Instances:
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v.to(*args, **kwargs) if hasattr(v, "to") else v)
        return out

    def __getitem__(self, item: Any) -> Instances:
        if isinstance(item, int):
            if item >= len(self) or item < -len(self):
                raise IndexError("Instances index out of range")
            item = slice(item, item + 1 if item != -1 else None)
        out = Instances(self._image_size)
        for k, v in self._fields.items():
            out.set(k, v[item])
        return out

    def __len__(self) -> int:
        for v in self._fields.values():
            return len(v)
        return 0

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError("Instances cannot be iterated; index it instead")

    @staticmethod
    def cat(items: list[Instances]) -> Instances:
        """Concatenate instances of the same image."""
        if not items:
            raise ValueError("Instances.cat needs at least one Instances")
        out = Instances(items[0].image_size)
        for k, v in items[0]._fields.items():
            values = [i.get(k) for i in items]
            out.set(k, torch.cat(values) if isinstance(v, torch.Tensor) else sum(values, []))
        return out

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}: {tuple(v.shape) if hasattr(v, 'shape') else len(v)}"
            for k, v in self._fields.items()
        )
        return f"Instances(num={len(self)}, image_size={self._image_size}, {fields})"
