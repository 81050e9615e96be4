"""The first-party import graph of moe_cts, read from the source with `ast` (nothing is imported).

    graph = import_graph()          module -> set of moe_cts modules it imports (module top and functions)
    cycles(graph)                   strongly connected components with more than one module
    levels(graph)                   module -> 0 for a module importing no moe_cts module, else 1 + max of its imports

`from pkg import name` counts as an import of `pkg.name` when that is a module, else of `pkg`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARTS = {"moe_cts.reference": ROOT / "reference", "moe_cts.kernels": ROOT / "kernels",
         "moe_cts.conformance": ROOT / "conformance"}  # fmt: skip


def modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PARTS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((pkg, *rel))] = path
    return out


def _targets(node: ast.AST, here: str, known: set[str]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
        base = node.module
        if node.level:
            base = ".".join([*here.split(".")[: -node.level], node.module])
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    else:
        return found
    for n in names:
        while n and n not in known:
            n = n.rpartition(".")[0]
        if n and n != here:
            found.add(n)
    return found


def import_graph(*, top_level_only: bool = False) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        nodes = tree.body if top_level_only else ast.walk(tree)
        graph[name] = set().union(*(_targets(n, name, known) for n in nodes))
        # a package's __init__ is imported with any of its submodules: not an edge of its own
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of size > 1 (or a self loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def levels(graph: dict[str, set[str]]) -> dict[str, int]:
    memo: dict[str, int] = {}

    def level(v: str) -> int:
        if v not in memo:
            memo[v] = -1  # guards against cycles (cycles() reports them)
            memo[v] = 1 + max((level(w) for w in graph.get(v, ()) if memo.get(w) != -1), default=-1)
        return memo[v]

    for v in graph:
        level(v)
    return memo


if __name__ == "__main__":
    g = import_graph()
    print("cycles:", cycles(g))
    lv = levels(g)
    for m in sorted(lv, key=lambda m: (lv[m], m)):
        print(lv[m], m, sorted(g[m]))
