"""crust's import graph, read from the source (nothing is imported or run).

    python scripts/import_graph.py [TREE]      # TREE: a checkout, default this one
    python scripts/import_graph.py TREE --json # the whole graph, for tools

Prints how many modules crust has, how many import edges of each kind, the
import cycles (strongly connected components of more than one module) and
which sans-IO modules reach an asyncio module. Any checkout can be given,
so the graph before and after a change can be compared (issue 18).

Edge kinds: ``top`` is an import the module runs when it is imported
(module level, including inside ``try``/``if``); ``lazy`` one inside a
function (runs when called: the usual way around a cycle); ``typing`` one
under ``if TYPE_CHECKING:`` (never runs). Cycles are counted over ``top``
edges, the ones that make import order matter; ``--kinds top,lazy,typing``
counts the others too (the "import circle" of issue 18 is one over all
three: modules that name each other, whether or not the order matters).
``from crust.x import y`` is an edge to ``crust.x.y`` when that is a
module, else to ``crust.x``; a parent package's ``__init__`` is not
counted as imported (every tool that draws import graphs does the same,
and crust/__init__ imports the facade, which would join everything).

tests/unit/test_layering.py uses this module to hold the layering.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

#: Modules that must not import asyncio, directly or through what they
#: import at module level: the sans-IO core. Packages end in ".".
SANS_IO = (
    "crust.nat.",
    "crust.discovery.",
    "crust.handshake.",
    "crust.handshake",
    "crust.wire",
    "crust.noise",
    "crust.identity",
    "crust.errors",
    "crust.admission",
    "crust.paths",
    "crust.events",
    "crust.control",
    "crust.capacity",
    "crust.reflection",
)

#: What counts as "an asyncio module".
ASYNCIO = ("asyncio", "crust.asyncio")

KINDS = ("top", "lazy", "typing")


@dataclass
class Graph:
    modules: set[str] = field(default_factory=set)
    #: (importer, imported) -> kind; imported may be outside crust.
    edges: dict[tuple[str, str], str] = field(default_factory=dict)

    def targets(self, module: str, kinds: Iterable[str] = ("top",)) -> set[str]:
        wanted = set(kinds)
        return {b for (a, b), k in self.edges.items() if a == module and k in wanted}

    def closure(self, module: str, kinds: Iterable[str] = ("top",)) -> set[str]:
        """Everything ``module`` imports, directly or not, over ``kinds``."""
        kinds = tuple(kinds)
        seen: set[str] = set()
        todo = [module]
        while todo:
            for t in self.targets(todo.pop(), kinds):
                if t not in seen:
                    seen.add(t)
                    if t in self.modules:
                        todo.append(t)
        return seen

    def cycles(
        self, kinds: Iterable[str] = ("top",), among: set[str] | None = None
    ) -> list[list[str]]:
        """Strongly connected components of more than one module (Tarjan)."""
        nodes = sorted(self.modules if among is None else among)
        adj = {n: sorted(t for t in self.targets(n, kinds) if t in set(nodes)) for n in nodes}
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on: set[str] = set()
        out: list[list[str]] = []

        def visit(v: str) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in adj[v]:
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

        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10 * len(nodes) + 100))
        try:
            for n in nodes:
                if n not in index:
                    visit(n)
        finally:
            sys.setrecursionlimit(limit)
        return sorted(out, key=lambda c: (-len(c), c))


def is_sans_io(module: str) -> bool:
    return any(module.startswith(p) if p.endswith(".") else module == p for p in SANS_IO)


def is_asyncio(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ASYNCIO)


def module_name(package_root: Path, path: Path) -> str:
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import statement with its kind."""

    def walk(node: ast.AST, kind: str) -> Iterator[tuple[ast.Import | ast.ImportFrom, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, kind
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, "typing" if kind == "typing" else "lazy")
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), "typing")
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), kind)
            else:
                yield from walk(child, kind)

    # A top-level import statement is a child of the module itself.
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            yield stmt, "top"
        else:
            yield from walk(ast.Module(body=[stmt], type_ignores=[]), "top")


def build(tree_root: Path) -> Graph:
    """The graph of ``tree_root``/crust (a checkout)."""
    package_root = tree_root / "crust"
    if not (package_root / "__init__.py").is_file():
        raise SystemExit(f"{tree_root}: no crust/__init__.py here")
    files = sorted(package_root.rglob("*.py"))
    g = Graph()
    for f in files:
        g.modules.add(module_name(package_root, f))
    # Compiled modules (crust/_core.pyx) are modules too: leaves here.
    for f in sorted(package_root.rglob("*.pyx")):
        g.modules.add(module_name(package_root, f))
    rank = {k: i for i, k in enumerate(KINDS)}
    for f in files:
        me = module_name(package_root, f)
        is_pkg = f.name == "__init__.py"
        for node, kind in _imports(ast.parse(f.read_text(), str(f))):
            for target in _resolve(node, me, is_pkg, g.modules):
                if target == me:
                    continue
                old = g.edges.get((me, target))
                # One edge per pair, of its strongest kind (top > lazy > typing).
                if old is None or rank[kind] < rank[old]:
                    g.edges[(me, target)] = kind
    return g


def _resolve(
    node: ast.Import | ast.ImportFrom, me: str, is_pkg: bool, modules: set[str]
) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = me.split(".") if is_pkg else me.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append(sub if sub in modules else base)
    return out


def summary(g: Graph, kinds: tuple[str, ...] = ("top",)) -> dict[str, object]:
    internal = {e: k for e, k in g.edges.items() if e[1] in g.modules}
    sans_io = sorted(m for m in g.modules if is_sans_io(m))
    leaks = {}
    for m in sans_io:
        direct = {t for t in g.targets(m, KINDS) if is_asyncio(t)}
        reached = {t for t in g.closure(m) if is_asyncio(t)}
        if direct or reached:
            leaks[m] = sorted(direct | reached)
    return {
        "modules": len(g.modules),
        "edges": {k: sum(1 for v in internal.values() if v == k) for k in KINDS},
        "cycle_kinds": list(kinds),
        "cycles": g.cycles(kinds),
        "sans_io_modules": len(sans_io),
        "sans_io_cycles": g.cycles(kinds, among=set(sans_io)),
        "sans_io_reaching_asyncio": leaks,
    }


def render(s: dict[str, object]) -> str:
    edges = s["edges"]
    assert isinstance(edges, dict)
    cycles = s["cycles"]
    assert isinstance(cycles, list)
    lines = [
        f"modules: {s['modules']}",
        "import edges inside crust: " + ", ".join(f"{k} {v}" for k, v in edges.items()),
        f"cycles over {'+'.join(s['cycle_kinds'])} imports: {len(cycles)}"  # type: ignore[arg-type]
        + (f" ({sum(len(c) for c in cycles)} modules)" if cycles else ""),
    ]
    lines += [f"  {len(c)}: {' '.join(c)}" for c in cycles]
    sc = s["sans_io_cycles"]
    assert isinstance(sc, list)
    lines.append(f"sans-IO modules: {s['sans_io_modules']}; cycles among them: {len(sc)}")
    lines += [f"  {len(c)}: {' '.join(c)}" for c in sc]
    leaks = s["sans_io_reaching_asyncio"]
    assert isinstance(leaks, dict)
    lines.append(f"sans-IO modules importing asyncio (directly or at module level): {len(leaks)}")
    lines += [f"  {m} -> {', '.join(t)}" for m, t in sorted(leaks.items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("tree", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument(
        "--kinds",
        default="top",
        help="edge kinds cycles are counted over: top, lazy, typing (comma-separated)",
    )
    ap.add_argument("--json", action="store_true", help="print the graph and summary as JSON")
    args = ap.parse_args(argv)
    g = build(args.tree)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or any(k not in KINDS for k in kinds):
        ap.error(f"--kinds: choose from {', '.join(KINDS)}")
    s = summary(g, kinds)
    if args.json:
        s["graph"] = {
            m: {t: k for (a, t), k in g.edges.items() if a == m} for m in sorted(g.modules)
        }
        print(json.dumps(s, indent=1))
    else:
        print(render(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
