"""The config tree: a yacs/fvcore ``CfgNode`` with safe loading and readable errors.

What this adds over fvcore's ``CfgNode``:

* ``_BASE_`` chains resolved relative to the including file, any depth, cycles reported.
* Files are read with ``yaml.safe_load`` only; nothing in a config file is ever executed.
* Overrides accept ``KEY VALUE`` pairs and ``KEY=VALUE`` tokens, mixed; values are parsed as
  Python literals (``ast.literal_eval``), anything else stays a string.
* An unknown key fails with the closest valid key(s); a value of the wrong type fails with the
  expected type. Both raise :class:`~detlab.utils.errors.ConfigError` (one sentence).
* ``dump()`` writes YAML that loads back into an equal config.
"""

from __future__ import annotations

import ast
import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from detlab.utils.errors import ConfigError
from detlab.utils.file_io import read_yaml

__all__ = [
    "CfgNode",
    "get_cfg",
    "load_config",
    "load_yaml_with_base",
    "parse_literal",
    "parse_overrides",
    "suggest_keys",
]

BASE_KEY = "_BASE_"
_KEY_EQ_VALUE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)=(.*)$", re.S)
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}
# Path-valued fields of DATASETS.REGISTER entries, resolved against the declaring file (a list
# of paths too; "split" only when it names a .txt list file).
_REGISTER_PATH_FIELDS = ("json_file", "image_root", "root", "images", "labels", "names", "classes")


class CfgNode(_FvCfgNode):
    """A config (sub)tree. Attribute access reads keys: ``cfg.SOLVER.BASE_LR``."""

    # ------------------------------------------------------------------ loading
    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (and its ``_BASE_`` chain) into this config.

        ``allow_unsafe`` is accepted for fvcore compatibility and ignored: files are always
        read with ``yaml.safe_load``.
        """
        data = load_yaml_with_base(cfg_filename)
        self.merge_from_dict(data, source=str(cfg_filename))

    def merge_from_dict(self, data: Mapping[str, Any], source: str = "") -> None:
        """Merge a nested mapping, checking every key exists and every value's type."""
        if self.is_frozen():
            raise ConfigError("This config is frozen; call cfg.defrost() before merging into it.")
        _merge_checked(self, data, prefix="", root=self, source=source)

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merge command-line overrides: ``["A.B", "1", "C.D=2", ...]`` (both forms mixed)."""
        for key, raw in parse_overrides(cfg_list):
            key = self._canonical_key(key)
            value = parse_literal(raw)
            if value is None and isinstance(_lookup(self, key), str):
                value = raw.strip()  # `MODEL.FPN.TOP_BLOCK none` names a choice, not None
            nested: dict[str, Any] = {}
            node = nested
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = value
            self.merge_from_dict(nested, source="the command line")

    def _canonical_key(self, key: str) -> str:
        """Accept lower-case spellings (``solver.base_lr``) of existing upper-case keys."""
        if _lookup(self, key) is not _MISSING:
            return key
        upper = key.upper()
        return upper if _lookup(self, upper) is not _MISSING else key

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """Plain nested ``dict``/``list`` copy (tuples become lists), for YAML/JSON writers."""
        return _to_plain(self)

    def dump(self, **kwargs: Any) -> str:
        """Resolved YAML; ``get_cfg().merge_from_file`` of it gives back an equal config."""
        kwargs.setdefault("sort_keys", False)
        kwargs.setdefault("default_flow_style", None)
        kwargs.setdefault("allow_unicode", True)
        return yaml.safe_dump(self.to_dict(), **kwargs)

    def all_keys(self) -> list[str]:
        """Every leaf key as a dotted path (``SOLVER.BASE_LR``), in definition order."""
        return _leaf_keys(self, "")


def get_cfg() -> CfgNode:
    """A fresh default config, assembled from each area's defaults module."""
    from detlab.config.defaults import ALL_DEFAULTS

    cfg = CfgNode()
    for add_defaults in ALL_DEFAULTS:
        add_defaults(cfg)
    return cfg


def load_config(config_file: str | None, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """``get_cfg()`` + file + overrides, values checked (:mod:`detlab.config.checks`),
    optionally frozen: what every tool starts from."""
    from detlab.config.checks import check_config

    cfg = get_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    if opts:
        cfg.merge_from_list(list(opts))
    check_config(cfg)
    if freeze:
        cfg.freeze()
    return cfg


# ---------------------------------------------------------------------- YAML with _BASE_
def load_yaml_with_base(filename: str | os.PathLike, _chain: tuple[str, ...] = ()) -> dict:
    """Load a YAML file with ``yaml.safe_load`` and resolve its ``_BASE_`` chain.

    ``_BASE_`` is a path or a list of paths, relative to the including file. Bases are merged
    in order, then the file's own keys on top. Relative paths in ``DATASETS.REGISTER`` entries
    are made absolute against the directory of the file that declares them.
    """
    path = os.path.abspath(os.path.expanduser(os.fspath(filename)))
    real = os.path.realpath(path)
    if real in _chain:
        names = [os.path.basename(p) for p in (*_chain, real)]
        raise ConfigError(f"_BASE_ chain has a cycle: {' -> '.join(names)}; remove one link.")
    if not os.path.isfile(path):
        where = f" (named in _BASE_ of {_chain[-1]})" if _chain else ""
        raise ConfigError(f"Config file {filename} does not exist{where}; check the path.")
    data = read_yaml(path, "Config file", ConfigError)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {path} must hold a mapping of keys, not a {type(data).__name__}."
        )
    _resolve_register_paths(data, os.path.dirname(path))

    bases = data.pop(BASE_KEY, None)
    if bases is None:
        return data
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _BASE_ must be a path or a list of paths, got {bases!r}.")
    merged: dict = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), os.path.expanduser(base))
        _deep_update(merged, load_yaml_with_base(base_path, (*_chain, real)))
    _deep_update(merged, data)
    return merged


def _resolve_register_paths(data: dict, directory: str) -> None:
    entries = (data.get("DATASETS") or {}).get("REGISTER") if isinstance(data, dict) else None
    if not isinstance(data.get("DATASETS"), dict) or not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        for field in _REGISTER_PATH_FIELDS:
            value = entry.get(field)
            if isinstance(value, str):
                entry[field] = _resolve_path(value, directory)
            elif field == "images" and isinstance(value, list):
                entry[field] = [
                    _resolve_path(v, directory) if isinstance(v, str) else v for v in value
                ]
        split = entry.get("split")
        if isinstance(split, str) and split.lower().endswith(".txt"):
            entry["split"] = _resolve_path(split, directory)


def _resolve_path(value: str, directory: str) -> str:
    if value and not os.path.isabs(os.path.expanduser(value)):
        return os.path.normpath(os.path.join(directory, value))
    return value


def _deep_update(dst: dict, src: Mapping) -> None:
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


# ---------------------------------------------------------------------- overrides
def parse_overrides(opts: Sequence[str]) -> list[tuple[str, str]]:
    """Split override tokens into ``(key, raw value)`` pairs.

    ``KEY=VALUE`` tokens stand alone; any other token is a key whose value is the next token.
    """
    pairs: list[tuple[str, str]] = []
    i = 0
    opts = list(opts)
    while i < len(opts):
        token = str(opts[i])
        match = _KEY_EQ_VALUE.match(token)
        if match:
            pairs.append((match.group(1), match.group(2)))
            i += 1
            continue
        if token.startswith("-"):
            raise ConfigError(
                f"Unexpected option '{token}' among the config overrides; put options before "
                "the KEY VALUE overrides."
            )
        if i + 1 >= len(opts):
            raise ConfigError(
                f"Config override '{token}' has no value; write '{token} VALUE' or '{token}=VALUE'."
            )
        pairs.append((token, str(opts[i + 1])))
        i += 2
    return pairs


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


# ---------------------------------------------------------------------- checked merge
_MISSING = object()


def _lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _leaf_keys(node: Mapping, prefix: str) -> list[str]:
    keys: list[str] = []
    for k, v in node.items():
        full = f"{prefix}{k}"
        if isinstance(v, _FvCfgNode):
            keys.extend(_leaf_keys(v, full + "."))
        else:
            keys.append(full)
    return keys


def _group_keys(node: Mapping, prefix: str) -> list[str]:
    keys: list[str] = []
    for k, v in node.items():
        if isinstance(v, _FvCfgNode):
            keys.append(f"{prefix}{k}")
            keys.extend(_group_keys(v, f"{prefix}{k}."))
    return keys


def suggest_keys(key: str, root: Mapping, n: int = 3) -> list[str]:
    """Valid dotted keys closest to ``key``: by the whole path, then by the last component."""
    candidates = _leaf_keys(root, "") + _group_keys(root, "")
    hits = difflib.get_close_matches(key.upper(), candidates, n=n, cutoff=0.75)
    if hits:
        return hits
    leaf = key.rsplit(".", 1)[-1].upper()
    by_leaf = {c: c.rsplit(".", 1)[-1] for c in candidates}
    close = set(difflib.get_close_matches(leaf, set(by_leaf.values()), n=n, cutoff=0.8))
    return [c for c in candidates if by_leaf[c] in close][:n]


def _merge_checked(dst: CfgNode, src: Mapping, prefix: str, root: CfgNode, source: str) -> None:
    where = f" (from {source})" if source else ""
    for k, v in src.items():
        full = f"{prefix}{k}"
        if k not in dst:
            if dst.is_new_allowed():
                dst[k] = CfgNode(v) if isinstance(v, dict) else v
                continue
            hints = suggest_keys(full, root)
            hint = f"; did you mean {' or '.join(hints)}?" if hints else "; no similar key exists."
            raise ConfigError(f"Unknown config key {full}{where}{hint}")
        old = dst[k]
        if isinstance(old, _FvCfgNode):
            if not isinstance(v, Mapping):
                subkeys = ", ".join(list(old)[:4])
                raise ConfigError(
                    f"{full}{where} is a group of keys ({subkeys}, ...), not a value; set its "
                    f"sub-keys instead, e.g. {full}.{next(iter(old), 'KEY')}."
                )
            _merge_checked(old, v, full + ".", root, source)
        else:
            dst[k] = _coerce(full, old, v, where)


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "a list"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), "a mapping")


def _coerce(key: str, old: Any, new: Any, where: str) -> Any:
    """Return ``new`` converted to ``old``'s type, or raise ConfigError naming both."""
    if old is None or type(new) is type(old) and not isinstance(old, (list, tuple)):
        return new
    if isinstance(old, bool):
        if isinstance(new, str) and new.strip().lower() in _TRUE | _FALSE:
            return new.strip().lower() in _TRUE
    elif isinstance(old, int):
        if isinstance(new, float) and new.is_integer():
            return int(new)
    elif isinstance(old, float):
        if isinstance(new, int) and not isinstance(new, bool):
            return float(new)
    elif isinstance(old, (list, tuple)):
        if isinstance(new, (list, tuple)):
            return _coerce_sequence(key, old, new, where)
        if isinstance(new, (str, int, float)) and not isinstance(new, bool):
            # `DATASETS.TRAIN my_set` means ("my_set",); `SOLVER.STEPS abc` is no list of int
            return _coerce_sequence(key, old, [new], where, given=new)
    elif isinstance(old, str) and isinstance(new, (int, float)) and not isinstance(new, bool):
        return str(new)  # e.g. a run name given as 123
    raise ConfigError(f"{key}{where} expects {_type_name(old)}, got {new!r}.")


def _element_template(seq: list | tuple) -> Any:
    """The element all of ``seq``'s elements are like (None if empty or mixed)."""
    if not len(seq):
        return None
    first = seq[0]
    if isinstance(first, (list, tuple)):
        return first
    kinds = {type(e) for e in seq}
    if kinds == {int, float}:  # (0, 1.5) is a list of floats
        return float(first)
    return first if len(kinds) == 1 else None


def _coerce_sequence(
    key: str, old: list | tuple, new: list | tuple, where: str, given: Any = None
) -> list | tuple:
    """``new`` in ``old``'s sequence type, each element converted to the type of ``old``'s
    elements (nested sequences follow ``old``'s first element)."""
    template = _element_template(old)
    if isinstance(template, (list, tuple)):
        new = [
            _coerce_sequence(key, template, e, where) if isinstance(e, (list, tuple)) else e
            for e in new
        ]
    elif template is not None:
        try:
            new = [_coerce(key, template, e, where) for e in new]
        except ConfigError:
            shown = given if given is not None else new
            raise ConfigError(
                f"{key}{where} expects a list of {_type_name(template)} values, got {shown!r}."
            ) from None
    return type(old)(new)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
