"""The config tree: a yacs/fvcore ``CfgNode`` with safe loading and readable errors.

What this adds over fvcore's ``CfgNode``:

* ``_BASE_`` chains resolved relative to the including file, any depth, cycles reported.
* Files are read with ``yaml.SafeLoader``; nothing in a config file is ever executed. The one
  code tag Detectron2 configs use, ``!!python/object/apply:eval``, is computed by a restricted
  arithmetic evaluator (:mod:`detlab.config.arith`), never by Python.
* Overrides accept ``KEY VALUE`` pairs and ``KEY=VALUE`` tokens, mixed; values are parsed as
  Python literals (``ast.literal_eval``), anything else stays a string. Text in a file is
  parsed the same way where the key's default is not text, so Detectron2's tuple syntax
  (``STEPS: (60000, 80000)``) reads as in Detectron2.
* Detectron2 key and component names are read as detlab's (:mod:`detlab.config.detectron2`).
* An unknown key fails with the closest valid key(s); a value of the wrong type fails with the
  expected type. Every problem of one file (or one command line) is reported together, in one
  :class:`~detlab.utils.errors.ConfigError`, and nothing is merged then.
* ``dump()`` writes YAML that loads back into an equal config.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from fvcore.common.config import CfgNode as _FvCfgNode

from detlab.config.arith import ConfigYamlLoader
from detlab.config.detectron2 import translate_detectron2
from detlab.config.values import MISSING, lookup, parse_literal
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

logger = logging.getLogger(__name__)

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

        A Detectron2 file (``VERSION: 2``) is read on top of Detectron2's defaults where they
        differ from detlab's (see :mod:`detlab.config.detectron2`). ``allow_unsafe`` is
        accepted for fvcore compatibility and ignored: nothing in a file is executed.
        """
        data = load_yaml_with_base(cfg_filename)
        self.merge_from_dict(data, source=str(cfg_filename), detectron2_defaults=True)

    def merge_from_dict(
        self, data: Mapping[str, Any], source: str = "", detectron2_defaults: bool = False
    ) -> None:
        """Merge a nested mapping, checking every key exists and every value's type.

        Detectron2 names and keys are translated first. All problems are collected and raised
        together as one :class:`ConfigError`; the config is then left unchanged.
        """
        if self.is_frozen():
            raise ConfigError("This config is frozen; call cfg.defrost() before merging into it.")
        result = translate_detectron2(
            data,
            self,
            detlab_defaults=_default_config() if detectron2_defaults else None,
        )
        where = f" (from {source})" if source else ""
        problems = [f"{p}{where}" for p in result.problems]
        _merge_checked(self, result.data, "", self, source, problems, apply=False)
        if problems:
            raise ConfigError(_join_problems(problems, source))
        _merge_checked(self, result.data, "", self, source, [], apply=True)
        notes = _translation_notes(result, source)
        self.__dict__.setdefault("_load_notes", []).extend(notes)
        for _, text in notes:
            logger.debug(text)

    def load_notes(self) -> list[tuple[int, str]]:
        """``(logging level, message)`` lines about how the merged files were read: Detectron2
        names and defaults used, keys ignored. :func:`~detlab.engine.default_setup` logs them."""
        return list(self.__dict__.get("_load_notes", []))

    def merge_from_list(self, cfg_list: Sequence[str]) -> None:
        """Merge command-line overrides: ``["A.B", "1", "C.D=2", ...]`` (both forms mixed)."""
        nested: dict[str, Any] = {}
        for key, raw in parse_overrides(cfg_list):
            key = self._canonical_key(key)
            value = parse_literal(raw)
            if isinstance(lookup(self, key), str) and not isinstance(value, str):
                # Text keys take the text: `MODEL.FPN.TOP_BLOCK none` names a choice, not
                # None, and `OUTPUT_DIR (1, 2)` a folder, as in a file.
                value = raw.strip()
            node = nested
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    node[part] = {}
                node = node[part]
            node[parts[-1]] = value
        self.merge_from_dict(nested, source="the command line")

    def _canonical_key(self, key: str) -> str:
        """Accept lower-case spellings (``solver.base_lr``) of existing upper-case keys."""
        if lookup(self, key) is not MISSING:
            return key
        upper = key.upper()
        return upper if lookup(self, upper) is not MISSING else key

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


_DEFAULT_CONFIG: list[CfgNode] = []


def _default_config() -> CfgNode:
    """``get_cfg()``, built once (what "a key still at its default" is compared with)."""
    if not _DEFAULT_CONFIG:
        _DEFAULT_CONFIG.append(get_cfg())
    return _DEFAULT_CONFIG[0]


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
    data = read_yaml(path, "Config file", ConfigError, loader=ConfigYamlLoader)
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


# ---------------------------------------------------------------------- checked merge
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


def _merge_checked(
    dst: CfgNode,
    src: Mapping,
    prefix: str,
    root: CfgNode,
    source: str,
    problems: list[str],
    apply: bool,
) -> None:
    """Check (``apply=False``: only append problems) or merge ``src`` into ``dst``."""
    where = f" (from {source})" if source else ""
    for k, v in src.items():
        full = f"{prefix}{k}"
        if k not in dst:
            if dst.is_new_allowed():
                if apply:
                    dst[k] = CfgNode(v) if isinstance(v, dict) else v
                continue
            hints = suggest_keys(full, root)
            hint = f"; did you mean {' or '.join(hints)}?" if hints else "; no similar key exists."
            problems.append(f"Unknown config key {full}{where}{hint}")
            continue
        old = dst[k]
        if isinstance(old, _FvCfgNode):
            if not isinstance(v, Mapping):
                subkeys = ", ".join(list(old)[:4])
                problems.append(
                    f"{full}{where} is a group of keys ({subkeys}, ...), not a value; set its "
                    f"sub-keys instead, e.g. {full}.{next(iter(old), 'KEY')}."
                )
                continue
            _merge_checked(old, v, full + ".", root, source, problems, apply)
            continue
        try:
            value = _coerce(full, old, v, where)
        except ConfigError as err:
            problems.append(str(err))
            continue
        if apply:
            dst[k] = value


def _join_problems(problems: list[str], source: str) -> str:
    """One problem as its own sentence; several as one line numbering each."""
    if len(problems) == 1:
        return problems[0]
    where = f" in {source}" if source else ""
    said = f" (from {source})" if source else ""  # named once, in front
    texts = [p.replace(said, "") for p in problems]
    items = " ".join(
        f"({i}) {t if t.endswith(('.', '?')) else t + '.'}" for i, t in enumerate(texts, 1)
    )
    return f"{len(problems)} config problems{where}: {items}"


def _translation_notes(result: Any, source: str) -> list[tuple[int, str]]:
    name = os.path.basename(source) if source and os.path.sep in source else source
    notes = []
    if result.mapped:
        notes.append((logging.INFO, f"Detectron2 names read in {name}: {'; '.join(result.mapped)}"))
    if result.defaults:
        notes.append(
            (
                logging.INFO,
                f"Detectron2 defaults used for keys {name} does not set: "
                + ", ".join(result.defaults),
            )
        )
    if result.ignored:
        notes.append(
            (
                logging.WARNING,
                f"Ignored in {name} (Detectron2 keys of features detlab does not have, all "
                f"switched off): {_compact_keys(result.ignored)}",
            )
        )
    return notes


def _compact_keys(keys: list[str]) -> str:
    """``A.B.{X,Y}, C.D`` style listing of dotted keys."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        head, _, leaf = k.rpartition(".")
        groups.setdefault(head, []).append(leaf)
    parts = []
    for head, leaves in groups.items():
        prefix = f"{head}." if head else ""
        parts.append(
            f"{prefix}{leaves[0]}" if len(leaves) == 1 else f"{prefix}{{{','.join(leaves)}}}"
        )
    return ", ".join(parts)


def _type_name(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "a list"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(type(value), "a mapping")


def _coerce(key: str, old: Any, new: Any, where: str) -> Any:
    """Return ``new`` converted to ``old``'s type, or raise ConfigError naming both.

    Text given for a key whose default is not text is first read as a Python literal, as on
    the command line: ``"(640, 800)"`` for a list, ``"1e-3"`` for a float.
    """
    if isinstance(new, str) and old is not None and not isinstance(old, str):
        new = parse_literal(new)
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
        if isinstance(new, str) and new.strip()[:1] in ("(", "["):
            raise ConfigError(
                f"{key}{where} expects a list, got {new!r}, which is not a valid literal; "
                "write e.g. (1, 2) or [1, 2] with quoted text items."
            )
        if isinstance(new, (str, int, float)) and not isinstance(new, bool):
            # `DATASETS.TRAIN my_set` means ("my_set",)
            return _coerce_sequence(key, old, [new], where)
    elif isinstance(old, str) and isinstance(new, (int, float)) and not isinstance(new, bool):
        return str(new)  # e.g. a run name given as 123
    raise ConfigError(f"{key}{where} expects {_type_name(old)}, got {new!r}.")


def _element_template(seq: list | tuple) -> Any:
    """The item all of ``seq``'s items are like: its first, or a float where ints and floats
    mix (``(0, 1.5)`` is a list of floats); None if empty or otherwise mixed."""
    if not len(seq):
        return None
    first = seq[0]
    if isinstance(first, (list, tuple)):
        return first
    kinds = {type(e) for e in seq}
    if kinds == {int, float}:
        return float(first)
    return first if len(kinds) == 1 else None


def _coerce_sequence(key: str, old: list | tuple, new: list | tuple, where: str) -> list | tuple:
    """``new`` in ``old``'s sequence type; items follow the type of ``old``'s items
    (numbers stay numbers, text stays text, nested sequences recurse)."""
    template = _element_template(old)
    items = list(new)
    if isinstance(template, (list, tuple)):
        items = [
            _coerce_sequence(key, template, e, where) if isinstance(e, (list, tuple)) else e
            for e in items
        ]
    elif template is not None and not isinstance(template, bool):
        for i, item in enumerate(items):
            ok = isinstance(item, type(template)) and not isinstance(item, bool)
            if isinstance(template, (int, float)) and isinstance(item, (int, float)):
                ok = not isinstance(item, bool) and (
                    isinstance(template, float) or float(item).is_integer()
                )
                items[i] = type(template)(item) if ok else item
            if not ok:
                raise ConfigError(
                    f"{key}{where} expects a list of {_type_name(template)} values, got "
                    f"{item!r} in {list(new)!r}."
                )
    return type(old)(items)


def _to_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value
