"""The import graph of detlab: ``utils`` and ``structures`` are the ground floor (they import
nothing above them), and no module cycle exists except config ↔ its defaults.

Every runtime import counts, also those inside functions; imports under ``TYPE_CHECKING`` do
not (they never run). ``from a.b import c`` where ``a.b.c`` is a module is an arrow to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "detlab"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _runtime_nodes(tree: ast.AST):
    """All nodes except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("detlab"):
                    continue
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    graph[mod].add(sub if sub in mods else node.module)
            elif isinstance(node, ast.Import):
                graph[mod] |= {a.name for a in node.names if a.name.startswith("detlab")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, out = set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.add(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def _ground(mod: str) -> bool:
    return mod == "detlab.structures" or mod == "detlab.utils" or mod.startswith("detlab.utils.")


def test_utils_and_structures_import_nothing_above_them():
    graph = import_graph()
    bad = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _ground(m)
        for t in targets
        if not _ground(t) and t != "detlab"  # the root package only defines __version__
    )
    assert bad == []
    assert graph["detlab"] == set()  # ... and imports nothing


def test_no_import_cycle_except_config_and_its_defaults():
    cycles = _cycles(import_graph())
    allowed = [c for c in cycles if all(m == "detlab.config.config" or ".defaults" in m for m in c)]
    assert [sorted(c) for c in cycles if c not in allowed] == []
    assert len(allowed) == 1 and "detlab.config.config" in allowed[0]


def test_the_checker_sees_cycles_and_upward_arrows():
    """The graph code itself: a made-up cycle and a made-up arrow are found."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [{"a", "b", "c"}]
    graph = import_graph()
    assert "detlab.utils.registry" in graph["detlab.modeling.backbone.build"]
    assert "detlab.data.transforms" in graph["detlab.visualization.draw"]  # a lazy import
