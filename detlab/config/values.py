"""Reading config values: Python-literal text and dotted-key lookups in nested mappings.

Shared by the config tree (:mod:`detlab.config.config`) and the Detectron2 translation
(:mod:`detlab.config.detectron2`), which must not import each other both ways.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

__all__ = ["MISSING", "lookup", "parse_literal"]

MISSING = object()  # what lookup() returns for a key that is not there


def parse_literal(raw: str) -> Any:
    """A Python literal if the text is one (``0.1``, ``(1, 2)``, ``True``), else the text."""
    text = raw.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        lowered = text.lower()
        if lowered in ("none", "null", "~"):
            return None
        return raw


def lookup(node: Any, dotted: str) -> Any:
    """The value at a dotted key (``"SOLVER.BASE_LR"``) of nested mappings, or :data:`MISSING`."""
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node
