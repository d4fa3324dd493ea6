"""The layering holds (issue 18): the sans-IO core imports no asyncio module
and has no import cycle. Read from the source with ``ast`` by
scripts/import_graph.py (nothing is imported), so an import inside a
function or under ``if TYPE_CHECKING:`` counts too."""

from __future__ import annotations

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
