"""Registries: name → class/function tables that config files select from.

Each family declares its own :class:`Registry` next to the code that populates it (for example
``BACKBONE_REGISTRY`` in :mod:`detlab.modeling.backbone.build`), with a docstring stating what
a registered object must accept and return. Registration is a decorator::

    @BACKBONE_REGISTRY.register()
    class MyBackbone(nn.Module): ...

Building is one pattern everywhere, :meth:`Registry.build` (or :func:`instantiate` for a class
that is not registered): a class's ``from_config(cfg, *args)`` returns the keyword arguments of
its ``__init__`` (Detectron2's meaning), a registered function is called as ``fn(cfg, *args)``.
A registry may carry a ``check`` that validates each built component against the family's
contract and raises :class:`~detlab.utils.errors.ContractError` in one sentence.

A lookup of an unknown name raises :class:`~detlab.utils.errors.UnknownNameError` listing the
registered names and suggesting the closest one, so a typo in a YAML file reads as a sentence.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from fvcore.common.registry import Registry as _FvRegistry

from detlab.utils.errors import ContractError, UnknownNameError

__all__ = ["Registry", "closest_matches", "instantiate"]


def closest_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


def instantiate(obj: Any, cfg: Any, *args: Any, **overrides: Any) -> Any:
    """Build ``obj`` from a config: the one way detlab turns a config into a component.

    A class with ``from_config`` is built as ``obj(**{**obj.from_config(cfg, *args),
    **overrides})``; any other callable (a registered builder function) as
    ``obj(cfg, *args, **overrides)``. ``from_config`` must return a dict of keyword arguments.
    """
    from_config = getattr(obj, "from_config", None)
    if isinstance(obj, type) and from_config is not None:
        kwargs = from_config(cfg, *args)
        if not isinstance(kwargs, dict):
            raise ContractError(
                f"{obj.__name__}.from_config returned {type(kwargs).__name__}, not a dict of "
                f"keyword arguments for {obj.__name__}(...); return the arguments instead."
            )
        return obj(**{**kwargs, **overrides})
    return obj(cfg, *args, **overrides)


class Registry(_FvRegistry):
    """fvcore's registry with a lookup error that lists names and suggests the closest one.

    Args:
        name: family name used in messages, e.g. ``"BACKBONE"``.
        doc: the family's contract (becomes ``__doc__``).
        check: optional ``check(component, name, *args)`` run by :meth:`build` on each built
            component (``args`` are the build arguments after ``cfg``); raises
            :class:`ContractError` when the component breaks the contract.
    """

    def __init__(self, name: str, doc: str = "", check: Callable[..., None] | None = None) -> None:
        super().__init__(name)
        self.__doc__ = doc or f"Registry of {name} objects."
        self.check = check

    def get(self, name: str) -> Any:
        ret = self._obj_map.get(name)
        if ret is None:
            registered = sorted(self._obj_map)
            hint = closest_matches(name, registered, n=1)
            suggestion = f"; did you mean '{hint[0]}'?" if hint else "."
            raise UnknownNameError(
                f"No {self._name} named '{name}'; registered: "
                f"{', '.join(registered) if registered else '(none)'}{suggestion}"
            )
        return ret

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._obj_map)

    def build(self, name: str, cfg: Any, *args: Any, **overrides: Any) -> Any:
        """Build the component registered as ``name`` (see :func:`instantiate`) and check it
        against the family's contract."""
        component = instantiate(self.get(name), cfg, *args, **overrides)
        if self.check is not None:
            self.check(component, f"{self._name} '{name}'", *args)
        return component
