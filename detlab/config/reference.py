"""The config reference: every key, its default and the comment written beside it.

Descriptions are read from the comments in the ``detlab/config/defaults/`` modules (the line
comment after an assignment and the comment lines directly above it), so documenting a key where
it is declared is enough. ``tools/gen_config_reference.py`` writes the result to
``docs/config_reference.md``; a test fails when that file is stale.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import tokenize

from detlab.config.config import CfgNode, get_cfg

__all__ = ["config_reference_markdown", "key_descriptions"]

_HEADER = """# Config reference

Every key of `detlab.config.get_cfg()`, its default, and what it means. Generated from the
defaults modules in `detlab/config/defaults/` by `python tools/gen_config_reference.py`; do not
edit by hand.
"""


def _comments_by_line(source: str) -> dict[int, str]:
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    return comments


def _dotted(node: ast.AST) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name) and node.id == "cfg":
        return ".".join(reversed(parts))
    return None


def key_descriptions() -> dict[str, str]:
    """``{dotted key: description}`` from the comments of every defaults module."""
    from detlab.config.defaults import ALL_DEFAULTS

    out: dict[str, str] = {}
    for fn in ALL_DEFAULTS:
        source = inspect.getsource(importlib.import_module(fn.__module__))
        comments = _comments_by_line(source)
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Assign) or len(node.targets) != 1:
                continue
            key = _dotted(node.targets[0])
            if not key:
                continue
            text: list[str] = []
            above = node.lineno - 1
            while above in comments and lines[above - 1].lstrip().startswith("#"):
                text.insert(0, comments[above])
                above -= 1
            if node.end_lineno in comments:
                text.append(comments[node.end_lineno])
            out[key] = " ".join(t for t in text if t)
    return out


def _format_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        value = list(value)
    text = repr(value) if isinstance(value, str) else str(value)
    return f"`{text}`".replace("|", "\\|")


def _is_group(cfg: CfgNode, dotted: str) -> bool:
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return False
        node = node[part]
    return isinstance(node, CfgNode)


def config_reference_markdown(cfg: CfgNode | None = None) -> str:
    """The whole reference as markdown: one table per top-level group."""
    cfg = cfg if cfg is not None else get_cfg()
    described = key_descriptions()
    out = [_HEADER]
    top_scalars = [k for k, v in cfg.items() if not isinstance(v, CfgNode)]
    groups = [(k, v) for k, v in cfg.items() if isinstance(v, CfgNode)]
    sections = [("Run", {k: cfg[k] for k in top_scalars}, "")] + [
        (name, node, name + ".") for name, node in groups
    ]
    for title, node, prefix in sections:
        out.append(f"\n## {title}\n")
        intro = described.get(title, "") if prefix else ""
        if intro:
            out.append(f"{intro}\n")
        groups_here = [
            g
            for g, d in described.items()
            if d and prefix and g.startswith(prefix) and _is_group(cfg, g)
        ]
        for group in groups_here:
            out.append(f"- `{group}`: {described[group]}")
        if groups_here:
            out.append("")
        out.append("| Key | Default | Description |\n|---|---|---|")
        keys = (
            [prefix + k for k in node]
            if not prefix
            else [prefix + k for k in CfgNode.all_keys(node)]  # type: ignore[arg-type]
        )
        for key in keys:
            value = cfg
            for part in key.split("."):
                value = value[part]
            desc = described.get(key, "")
            out.append(f"| `{key}` | {_format_value(value)} | {desc.replace('|', '/')} |")
    return "\n".join(out) + "\n"
