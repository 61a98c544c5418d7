"""``DatasetCatalog`` (name → function returning dataset dicts) and ``MetadataCatalog``.

Registration is lazy: ``DatasetCatalog.register(name, fn)`` stores ``fn``; it is called on each
``DatasetCatalog.get(name)``. ``MetadataCatalog.get(name)`` returns a :class:`Metadata` object
(created on first access) holding ``thing_classes``, ``thing_dataset_id_to_contiguous_id``,
``json_file``, ``image_root``, ``evaluator_type`` and anything else a dataset declares.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from detlab.utils.errors import UnknownNameError, UserError
from detlab.utils.registry import closest_matches

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]


class _DatasetCatalog:
    """Global table ``name -> fn() -> list[dict]`` (dataset dicts, see the data contract)."""

    def __init__(self) -> None:
        self._fns: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, fn: Callable[[], list[dict]]) -> None:
        """Register ``fn`` under ``name``; registering a taken name is an error."""
        if not callable(fn):
            raise TypeError(f"DatasetCatalog.register('{name}', fn) needs a callable fn")
        if name in self._fns:
            raise UserError(
                f"Dataset '{name}' is already registered; pick another name or call "
                f"DatasetCatalog.remove('{name}') first."
            )
        self._fns[name] = fn

    def get(self, name: str) -> list[dict]:
        """Call the registered function and return its list of dataset dicts."""
        if name not in self._fns:
            hint = closest_matches(name, self._fns, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else "."
            raise UnknownNameError(
                f"No dataset named '{name}'; registered: {', '.join(sorted(self._fns))}"
                f"{suggestion} Register it with DATASETS.REGISTER or register_coco_instances."
            )
        dicts = self._fns[name]()
        if not isinstance(dicts, list):
            raise UserError(f"Dataset '{name}' must be a list of dicts, got {type(dicts)}.")
        return dicts

    def list(self) -> list[str]:
        """Registered dataset names, in registration order."""
        return list(self._fns)

    def remove(self, name: str) -> None:
        """Forget a dataset (and nothing else; its metadata stays)."""
        self._fns.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._fns

    def clear(self) -> None:
        self._fns.clear()


class Metadata:
    """Attributes of one dataset; ``get(key, default)`` reads, ``set(**kw)`` writes.

    Setting an attribute to a different value than it already has raises, so two registrations
    cannot silently disagree. Attributes may also be *lazy* (``set_lazy``): computed on first
    access, e.g. the built-in synthetic sets write their COCO json when ``json_file`` is read
    (and re-resolve it on every read, so it follows ``$DETLAB_DATA``).
    """

    def __init__(self, name: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_lazy", {})

    def __getattr__(self, key: str) -> Any:
        lazy = object.__getattribute__(self, "_lazy")
        if key in lazy:
            fn, cache = lazy[key]
            value = fn()
            if cache:
                lazy.pop(key)
                object.__setattr__(self, key, value)
            return value
        name = object.__getattribute__(self, "name")
        raise AttributeError(
            f"Metadata of '{name}' has no attribute '{key}'; available: {sorted(self.as_dict())}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        lazy = object.__getattribute__(self, "_lazy")
        if key in lazy:
            lazy.pop(key)
        try:
            old = object.__getattribute__(self, key)
        except AttributeError:
            object.__setattr__(self, key, value)
            return
        if old != value:
            raise UserError(
                f"Metadata '{key}' of dataset '{self.name}' is already {old!r}, cannot set it to "
                f"{value!r}; use a new dataset name or MetadataCatalog.remove('{self.name}')."
            )

    def set(self, **kwargs: Any) -> Metadata:
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def set_lazy(self, key: str, fn: Callable[[], Any], cache: bool = True) -> Metadata:
        """Declare ``key`` as computed by ``fn()`` when read: once (``cache``) or every time."""
        if key not in self.__dict__:
            self._lazy[key] = (fn, cache)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            return default

    def as_dict(self) -> dict[str, Any]:
        """Materialised attributes (lazy ones only once read)."""
        return {k: copy.copy(v) for k, v in self.__dict__.items() if not k.startswith("_")}

    def __contains__(self, key: str) -> bool:
        return key in self.__dict__ or key in self._lazy

    def __repr__(self) -> str:
        return f"Metadata({self.as_dict()})"


class _MetadataCatalog:
    """Global table ``name -> Metadata``; ``get`` creates an empty one on first access."""

    def __init__(self) -> None:
        self._meta: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._meta:
            self._meta[name] = Metadata(name)
        return self._meta[name]

    def list(self) -> list[str]:
        return list(self._meta)

    def remove(self, name: str) -> None:
        self._meta.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._meta


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
