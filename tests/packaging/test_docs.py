"""The documentation builds clean (`mkdocs build --strict`), its generated
references cover everything they should, and the typing stubs of the
compiled module are complete."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest
from capability import missing

import crust
from crust import _core, events
from crust.config import ServiceConfig

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "docs" / "_hooks" / "reference.py"
PICTURES = ROOT / "docs" / "_hooks" / "pictures.py"


def _load(path: Path) -> ModuleType:
    """A docs hook module (they are files, not a package)."""
    spec = importlib.util.spec_from_file_location(f"crust_docs_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hook() -> ModuleType:
    return _load(HOOK)


def test_docs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        missing("mkdocs/mkdocs-material not installed (pip install -e '.[test]')")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    config, site = str(ROOT / "mkdocs.yml"), str(tmp_path / "site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", site],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the source tree: `import crust` must find the installed package
        env=env,
    )
    # Not `-q`: mkdocs counts strict-mode warnings only at the levels it logs.
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    config_page = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    for f in dataclasses.fields(ServiceConfig):
        assert f"<code>{f.name}</code>" in config_page, f.name
    events_page = (tmp_path / "site" / "reference" / "events" / "index.html").read_text()
    for cls in _hook().event_classes():
        assert cls.__name__ in events_page
    # The generated pictures are in the site and shown by their pages.
    for page, pictures in (
        ("connections", ("connect-by-id", "race")),
        ("performance", ("bench", "goodput")),
    ):
        html = (tmp_path / "site" / page / "index.html").read_text()
        for name in pictures:
            svg = tmp_path / "site" / "img" / f"{name}.svg"
            assert svg.read_text().startswith("<svg "), name
            assert f'src="../img/{name}.svg"' in html, (page, name)


def _pictures() -> ModuleType:
    return _load(PICTURES)


def test_connect_by_id_picture_names_the_messages_the_code_sends() -> None:
    from crust.asyncio.traversal import Traversal
    from crust.control import ControlKind
    from crust.nat.relay import RelayOp
    from crust.nat.rendezvous import Op

    svg = _pictures().connect_by_id_svg()
    for op in (Op.REQUEST, Op.INTRODUCE, Op.REPLY):
        assert f"{ControlKind.RENDEZVOUS.name} {op.name}" in svg
    assert f"{ControlKind.RELAY.name} {RelayOp.DATA.name}" in svg
    assert f"after {Traversal.relay_after:g} s" in svg
    race = _pictures().race_svg()
    assert f"tcp_head_start = {ServiceConfig().tcp_head_start:g} s" in race


def test_bench_picture_reads_ratios_from_the_reference_run() -> None:
    pictures = _pictures()
    import json

    doc = json.loads(pictures.BENCH_JSON.read_text())
    ratios = pictures.bench_ratios(doc)
    # A real run of the cases with baselines, not the --smoke sizes.
    assert {b["extra_info"]["sizes"] for b in doc["benchmarks"]} == {"full"}
    assert len(ratios) >= 4 and all(r > 0 for _, r in ratios)
    assert any(name.startswith("crust UDP bulk vs raw UDP") for name, _ in ratios)


def test_every_config_field_has_a_docstring() -> None:
    docs = _hook().config_field_docs()
    names = [f.name for f in dataclasses.fields(ServiceConfig)]
    undocumented = [n for n in names if not docs.get(n)]
    assert not undocumented, f"write a docstring below these fields: {undocumented}"
    # Generating the table is what the docs build does; it names any gap.
    table = _hook().config_table()
    assert table.count("\n") == len(names) + 1


def test_every_event_is_documented() -> None:
    classes = _hook().event_classes()
    assert set(typing.get_args(events.Event)) == set(classes)
    for cls in classes:
        assert (cls.__doc__ or "").strip(), f"{cls.__name__} needs a docstring"
    text = _hook().events_reference()
    assert all(f"### `{cls.__name__}`" in text for cls in classes)


def test_cli_reference_covers_every_subcommand() -> None:
    import argparse

    from crust.cli import _parser

    text = _hook().cli_reference()
    (subparsers,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {"demo", "node"} <= set(subparsers.choices)
    for sub in subparsers.choices:
        assert f"### `crust {sub}`" in text
    assert "--log-level" in text.split("### `crust node`")[1]


def test_unknown_marker_fails_the_build() -> None:
    hook = _hook()
    with pytest.raises(hook.DocsError, match="unknown marker"):
        hook.expand("<!-- crust:nonsense -->")
    with pytest.raises(hook.DocsError, match="no such file"):
        hook.expand("<!-- crust:file ../../etc/passwd text -->")


def _stub_names(tree: ast.Module | ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def test_core_stub_is_complete() -> None:
    """crust/_core.pyi declares every public name the compiled module defines
    (names it re-exports from crust.errors are typed there), and every
    public member of its classes."""
    stub_path = Path(crust.__file__).with_name("_core.pyi")
    tree = ast.parse(stub_path.read_text())
    stubbed = _stub_names(tree)
    own = {
        name
        for name in dir(_core)
        if not name.startswith("_")
        and getattr(getattr(_core, name), "__module__", "crust._core") == "crust._core"
    }
    assert not own - stubbed, f"missing from _core.pyi: {sorted(own - stubbed)}"
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and hasattr(_core, node.name):
            real = {m for m in dir(getattr(_core, node.name)) if not m.startswith("_")}
            missing = real - _stub_names(node)
            assert not missing, f"{node.name} members missing from _core.pyi: {sorted(missing)}"


def test_package_is_typed() -> None:
    assert Path(crust.__file__).with_name("py.typed").exists()


def test_configuration_page_toml_example_loads(tmp_path: Path) -> None:
    """The TOML example on the configuration page is a valid config file."""
    from crust.config_sources import load_config

    page = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    example = page.split("```toml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "config.toml"
    path.write_text(example)
    loaded = load_config(path, env={}, default_file=False)
    assert loaded.config.network == "myapp" and loaded.config.port == 40000
    assert loaded.sources["port"] == f"file {path}"


def test_testing_page_loopback_example_runs() -> None:
    """The loopback test shown on the testing page passes as written."""
    import asyncio

    page = (ROOT / "docs" / "testing.md").read_text()
    section = page.split("## 2. Real services on loopback", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(code, "docs/testing.md", "exec"), namespace)
    test = namespace["test_my_protocol"]
    assert callable(test)
    asyncio.run(asyncio.wait_for(test(), 30))


def test_every_public_name_is_documented() -> None:
    """Each name crust exports appears in the built reference pages."""
    hook = _hook()
    pages = [p for p in (ROOT / "docs").rglob("*.md") if "design" not in p.parts]
    text = "\n".join(hook.expand(p.read_text()) for p in pages)
    missing = [name for name in crust.__all__ if name != "__version__" and name not in text]
    assert not missing, f"exported but not in the docs: {missing}"
