"""Class-name lists as datasets ship them: ``classes.txt`` / ``*.names`` or a YOLO ``data.yaml``.

A text file holds one name per line in id order (UTF-8, optional BOM, CRLF or LF; blank lines at
the end are ignored, a blank line between names is an error because it would shift every later
id). A YAML file holds ``names`` as a list (``[ship, boat]``) or a mapping (``{0: ship, 1:
boat}``, ids 0..K-1 without gaps), or only ``nc`` (names become ``class_0`` ...).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from detlab.utils.errors import UserError

__all__ = ["class_names", "names_from_value", "read_class_names", "read_text_lines"]


def read_text_lines(path: str) -> list[str]:
    """Lines of a text file without line endings (BOM, CRLF, CR and LF handled)."""
    try:
        with open(path, encoding="utf-8-sig", newline=None) as f:
            return f.read().splitlines()
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 text (byte {err.start}); re-save it as UTF-8."
        ) from None
    except OSError as err:
        raise UserError(f"{path} cannot be read ({err.strerror}).") from None


def names_from_value(value: Any, nc: Any, where: str) -> list[str]:
    """Class names from a data.yaml ``names`` value (list or {id: name}) and/or ``nc``."""
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise UserError(f"{where}: 'names' keys must be class ids 0, 1, ...") from None
        if ids != list(range(len(ids))):
            raise UserError(
                f"{where}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}."
            )
        names = [str(value[k] if k in value else value[str(k)]) for k in ids]
    elif isinstance(value, (list, tuple)):
        names = [str(n) for n in value]
    elif value is None and isinstance(nc, int) and nc > 0:
        names = [f"class_{i}" for i in range(nc)]
    else:
        raise UserError(f"{where} has no 'names' list of classes (nor 'nc').")
    if nc is not None and isinstance(nc, int) and nc != len(names):
        raise UserError(f"{where}: 'nc' is {nc} but 'names' lists {len(names)} classes.")
    if not names:
        raise UserError(f"{where}: the list of class names is empty.")
    return names


def read_class_names(path: str) -> list[str]:
    """Class names in id order from a names file (``.txt``, ``.names``) or a ``.yaml`` file."""
    if not os.path.isfile(path):
        raise UserError(f"Class-name file {path} does not exist; check the path.")
    if path.lower().endswith((".yaml", ".yml")):
        from detlab.utils.file_io import read_yaml

        data = read_yaml(path, "Dataset YAML", UserError) or {}
        if not isinstance(data, dict):
            raise UserError(f"{path} must hold a mapping with 'names'.")
        return names_from_value(data.get("names"), data.get("nc"), path)
    lines = [line.strip() for line in read_text_lines(path)]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise UserError(f"Class-name file {path} is empty; write one class name per line.")
    if "" in lines:
        raise UserError(
            f"{path}:{lines.index('') + 1} is empty; class names are one per line in id order, "
            "so a blank line would shift every later id."
        )
    return lines


def class_names(value: str | Sequence[str] | None, where: str) -> list[str] | None:
    """``value`` as a list of names: None, a list of names, or a path to a names file."""
    if value is None or value == "" or (not isinstance(value, str) and not len(value)):
        return None
    if isinstance(value, str):
        return read_class_names(value)
    names = [str(n).strip() for n in value]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UserError(f"{where}: class '{dup}' is listed twice in {names}.")
    return names
