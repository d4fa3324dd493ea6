"""The layering holds (issue 18): the sans-IO core imports no asyncio module
and has no import cycle. Read from the source with ``ast`` by
scripts/import_graph.py (nothing is imported), so an import inside a
function or under ``if TYPE_CHECKING:`` counts too."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _tree() -> Path:
    # Walk up rather than count parents: this file may move into a folder.
    for d in Path(__file__).resolve().parents:
        if (d / "scripts" / "import_graph.py").is_file() and (d / "crust").is_dir():
            return d
    raise AssertionError("no source tree (scripts/import_graph.py) above this test")


TREE = _tree()


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "import_graph", TREE / "scripts" / "import_graph.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


ig = _load()
ALL_KINDS = ("top", "lazy", "typing")


@pytest.fixture(scope="module")
def graph() -> object:
    return ig.build(TREE)


def _sans_io(graph: object) -> list[str]:
    return sorted(m for m in graph.modules if ig.is_sans_io(m))  # type: ignore[attr-defined]


def test_the_sans_io_set_is_what_it_says(graph: object) -> None:
    mods = _sans_io(graph)
    # The packages named are there (a rename must not empty the check).
    for pkg in ("crust.nat.", "crust.discovery.", "crust.handshake."):
        assert sum(m.startswith(pkg) for m in mods) >= 3, pkg
    assert {"crust.handshake", "crust.wire", "crust.noise", "crust.identity"} <= set(mods)
    assert not any(ig.is_asyncio(m) for m in mods)


def test_sans_io_modules_import_no_asyncio(graph: object) -> None:
    bad = {}
    for m in _sans_io(graph):
        # Any import, even one in a function or for typing only...
        direct = {t for t in graph.targets(m, ALL_KINDS) if ig.is_asyncio(t)}  # type: ignore[attr-defined]
        # ... and anything reached through module-level imports.
        reached = {t for t in graph.closure(m) if ig.is_asyncio(t)}  # type: ignore[attr-defined]
        if direct or reached:
            bad[m] = sorted(direct | reached)
    assert bad == {}


def test_no_import_cycle_among_sans_io_modules(graph: object) -> None:
    # Over every kind of import: a typing-only circle is still a circle.
    assert graph.cycles(ALL_KINDS, among=set(_sans_io(graph))) == []  # type: ignore[attr-defined]


def test_no_module_level_import_cycle_in_crust(graph: object) -> None:
    assert graph.cycles(("top",)) == []  # type: ignore[attr-defined]


def test_no_import_circle_over_any_kind_but_peer_and_its_events(graph: object) -> None:
    """The transports, bootstrap, reach, stats and the DHT name the node
    core (crust.node), which names none of them: no circle through the
    facade (design note 0070). The one left is a Peer and the events that
    carry it naming each other's types (typing only): Peer.recv() returns a
    NewMessage, whose ``peer`` is a Peer."""
    assert graph.cycles(ALL_KINDS) == [  # type: ignore[attr-defined]
        ["crust.events", "crust.peer", "crust.subscriptions"]
    ]


def test_the_node_core_imports_no_transport(graph: object) -> None:
    """Not even for typing, directly or not: the core names the parts by
    protocols (crust.asyncio.portmap holds two dataclasses, no I/O)."""
    reached = graph.closure("crust.node", ALL_KINDS)  # type: ignore[attr-defined]
    assert {t for t in reached if t.startswith("crust.asyncio.")} == {"crust.asyncio.portmap"}
    assert not reached & {"crust.service", "crust.bootstrap", "crust.reach", "crust.dht.directory"}


def test_the_wire_codec_is_the_bottom_layer(graph: object) -> None:
    crust_imports = {t for t in graph.targets("crust.wire", ALL_KINDS) if t.startswith("crust")}  # type: ignore[attr-defined]
    assert crust_imports == set()


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """Not vacuous: a planted asyncio import (in a function, and one reached
    through another module) and a planted cycle are found."""
    crust = tmp_path / "crust"
    (crust / "nat").mkdir(parents=True)
    (crust / "asyncio").mkdir()
    (crust / "__init__.py").write_text("")
    (crust / "asyncio" / "__init__.py").write_text("")
    (crust / "asyncio" / "udp.py").write_text("import asyncio\n")
    (crust / "helper.py").write_text("from crust.asyncio import udp\n")
    (crust / "nat" / "__init__.py").write_text("")
    (crust / "nat" / "lazy.py").write_text("def f():\n    import asyncio\n")
    (crust / "nat" / "through.py").write_text("import crust.helper\n")
    (crust / "nat" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from crust.nat import b\n"
    )
    (crust / "nat" / "b.py").write_text("from . import a\n")
    g = ig.build(tmp_path)
    assert g.edges[("crust.nat.lazy", "asyncio")] == "lazy"
    assert g.edges[("crust.nat.a", "crust.nat.b")] == "typing"
    assert g.edges[("crust.nat.b", "crust.nat.a")] == "top"
    s = ig.summary(g)
    assert s["sans_io_reaching_asyncio"] == {
        "crust.nat.lazy": ["asyncio"],
        "crust.nat.through": ["asyncio", "crust.asyncio.udp"],
    }
    sans_io = {m for m in g.modules if ig.is_sans_io(m)}
    assert g.cycles(ALL_KINDS, among=sans_io) == [["crust.nat.a", "crust.nat.b"]]
    assert g.cycles(("top",)) == []  # the typing-only edge does not make it one


def test_the_command_runs_on_this_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert ig.main([str(TREE)]) == 0
    out = capsys.readouterr().out
    assert "modules: " in out and "cycles among them: 0" in out


# -- nothing outside the facade and the core reads their private attributes --------
#
# crust.service (the facade) and crust.node (the core) may use their own
# private names; every other module goes through the node's public
# interface (issue 18, 6b). Read with ``ast``: a read of ``X._name`` (one
# leading underscore, not a dunder) counts when X is a service/node:
#   - a name or ``self.<attr>`` conventionally holding one (``svc``,
#     ``service``, ``node``, ``core``),
#   - a parameter annotated ``Service`` / ``Node`` (also ``... | None``, or
#     as a string), or ``self.<attr>`` assigned from such a parameter,
#   - a local name assigned ``Service(...)`` or ``Node(...)``.

_OWNERS = {"crust/service.py", "crust/node.py"}
_NODE_TYPES = {"Service", "Node"}
_NODE_NAMES = {"svc", "service", "node", "core"}


def _names_a_node_type(ann: ast.expr | None) -> bool:
    if ann is None:
        return False
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        try:
            ann = ast.parse(ann.value, mode="eval").body
        except SyntaxError:
            return False
    return any(
        (isinstance(n, ast.Name) and n.id in _NODE_TYPES)
        or (isinstance(n, ast.Attribute) and n.attr in _NODE_TYPES)
        for n in ast.walk(ann)
    )


def _calls_a_node_type(value: ast.expr) -> bool:
    return isinstance(value, ast.Call) and (
        (isinstance(value.func, ast.Name) and value.func.id in _NODE_TYPES)
        or (isinstance(value.func, ast.Attribute) and value.func.attr in _NODE_TYPES)
    )


def _self_attr(e: ast.expr) -> str | None:
    if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "self":
        return e.attr
    return None


def _private_reads(source: str, filename: str) -> list[str]:
    tree = ast.parse(source, filename)
    node_params: set[str] = set()  # parameter names annotated Service/Node, anywhere
    node_locals: set[str] = set()
    node_self_attrs: set[str] = set()
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = n.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs]:
                if _names_a_node_type(arg.annotation):
                    node_params.add(arg.arg)
        elif isinstance(n, ast.AnnAssign) and _names_a_node_type(n.annotation):
            if isinstance(n.target, ast.Name):
                node_locals.add(n.target.id)
            elif (attr := _self_attr(n.target)) is not None:
                node_self_attrs.add(attr)
        elif isinstance(n, ast.Assign) and _calls_a_node_type(n.value):
            node_locals.update(t.id for t in n.targets if isinstance(t, ast.Name))
    for n in ast.walk(tree):
        # self.<attr> = <a parameter holding a node>
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Name):
            if n.value.id in node_params | _NODE_NAMES:
                node_self_attrs.update(a for t in n.targets if (a := _self_attr(t)) is not None)

    def is_node(e: ast.expr) -> bool:
        if isinstance(e, ast.Name):
            return e.id in _NODE_NAMES | node_params | node_locals
        attr = _self_attr(e)
        return attr is not None and (attr in node_self_attrs or attr.lstrip("_") in _NODE_NAMES)

    found: list[tuple[int, str]] = []
    for n in ast.walk(tree):
        if (
            isinstance(n, ast.Attribute)
            and n.attr.startswith("_")
            and not (n.attr.startswith("__") and n.attr.endswith("__"))
            and is_node(n.value)
        ):
            found.append((n.lineno, f"{filename}:{n.lineno}: {ast.unparse(n)}"))
    return [text for _, text in sorted(found)]


def private_reads(tree: Path) -> list[str]:
    """Every read of a service's / node's private attribute in ``tree``'s
    crust package outside the facade and the core."""
    found = []
    for path in sorted((tree / "crust").rglob("*.py")):
        rel = path.relative_to(tree).as_posix()
        if rel not in _OWNERS:
            found += _private_reads(path.read_text(), rel)
    return found


def test_nothing_outside_the_facade_reads_the_node_s_private_attributes() -> None:
    assert private_reads(TREE) == []


def test_the_private_read_check_catches_what_it_is_for(tmp_path: Path) -> None:
    """Not vacuous: planted reads through each way a module holds a node
    are found; the owners' own reads, dunders, and other objects' private
    attributes are not."""
    crust = tmp_path / "crust"
    (crust / "asyncio").mkdir(parents=True)
    (crust / "service.py").write_text("def f(svc):\n    return svc._peers\n")
    (crust / "node.py").write_text("def f(node):\n    return node._by_link\n")
    (crust / "asyncio" / "part.py").write_text(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from crust.node import Node\n"
        "class Part:\n"
        "    def __init__(self, owner: Node, other: object) -> None:\n"
        "        self.owner = owner\n"
        "        self.svc = owner\n"
        "        self._jobs = {}\n"
        "        self.other = other\n"
        "    def run(self, where: 'Service | None') -> None:\n"
        "        self.owner._udp\n"  # through an attribute set from a Node parameter
        "        self.svc._emit(1)\n"  # through the conventional name
        "        where._connect()\n"  # a string annotation, a union
        "        self._jobs.clear()\n"  # its own private attribute: fine
        "        self.other._peers\n"  # not a node: fine
        "        self.owner.__class__\n"  # a dunder: fine
        "        self.owner.peers\n"  # public: fine
    )
    (crust / "tool.py").write_text(
        "import crust\n"
        "svc = crust.Service()\n"
        "x = svc._counters\n"
        "def g(service):\n"
        "    return service._tcp\n"
    )
    assert private_reads(tmp_path) == [
        "crust/asyncio/part.py:12: self.owner._udp",
        "crust/asyncio/part.py:13: self.svc._emit",
        "crust/asyncio/part.py:14: where._connect",
        "crust/tool.py:3: svc._counters",
        "crust/tool.py:5: service._tcp",
    ]
