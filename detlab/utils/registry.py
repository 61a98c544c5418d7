"""Registries: name → class/function tables that config files select from.

Each family declares its own :class:`Registry` next to the code that populates it (for example
``BACKBONE_REGISTRY`` in :mod:`detlab.modeling.backbone.build`), with a docstring stating what
a registered object must accept and return. Registration is a decorator::

    @BACKBONE_REGISTRY.register()
    class MyBackbone(Backbone): ...

A lookup of an unknown name raises :class:`~detlab.utils.errors.UnknownNameError` listing the
registered names and suggesting the closest one, so a typo in a YAML file reads as a sentence.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from fvcore.common.registry import Registry as _FvRegistry

from detlab.utils.errors import UnknownNameError

__all__ = ["Registry", "closest_matches"]


def closest_matches(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look like ``name`` (case-insensitive), best first."""
    candidates = list(candidates)
    lowered = {c.lower(): c for c in candidates}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[h] for h in hits]


class Registry(_FvRegistry):
    """fvcore's registry with a lookup error that lists names and suggests the closest one."""

    def __init__(self, name: str, doc: str = "") -> None:
        super().__init__(name)
        self.__doc__ = doc or f"Registry of {name} objects."

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
