"""MkDocs hook: reference pages generated from the code, so they cannot go stale.

A page asks for generated text with a marker on a line of its own::

    <!-- crust:config -->          every ServiceConfig field: type, default, doc
    <!-- crust:events -->          every event class: fields and docstring
    <!-- crust:cli -->             `crust --help` and every subcommand's help
    <!-- crust:stats -->           the keys of Service.stats()
    <!-- crust:file PATH LANG -->  a repository file, verbatim, in a code block
    <!-- crust:design -->          the design notes in docs/design/, by title
    <!-- crust:api OBJ:NAMES -->   signatures and docstrings of members NAMES
                                   (comma-separated) of OBJ (e.g. crust.Service)

An unknown marker, a missing file or an undocumented config field is an
error, so ``mkdocs build --strict`` fails rather than publishing a gap.
The functions are also used by tests/packaging/test_docs.py.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- crust:(\w+)(?: ([^ ]+))?(?: (\w+))? -->$", re.MULTILINE)


class DocsError(Exception):
    """A generated reference cannot be produced (the docs would have a gap)."""


def config_field_docs() -> dict[str, str]:
    """ServiceConfig's field -> its attribute docstring (the string literal
    right below the field, as Sphinx and mkdocstrings read them)."""
    from crust.config import ServiceConfig

    tree = ast.parse(inspect.getsource(ServiceConfig))
    cls = tree.body[0]
    assert isinstance(cls, ast.ClassDef)
    docs: dict[str, str] = {}
    body = cls.body
    for stmt, after in zip(body, [*body[1:], None], strict=True):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    return docs


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    text = repr(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1 << 20:
        if value % (1 << 20) == 0:
            text += f" ({value >> 20} MiB)"
    return f"`{text}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def config_table() -> str:
    from crust.config import ServiceConfig

    docs = config_field_docs()
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    missing = []
    for f in dataclasses.fields(ServiceConfig):
        doc = docs.get(f.name)
        if not doc:
            missing.append(f.name)
            continue
        rows.append(f"| `{f.name}` | `{_cell(str(f.type))}` | {_default(f)} | {_cell(doc)} |")
    if missing:
        raise DocsError(
            f"ServiceConfig fields without a docstring: {', '.join(missing)} "
            "(write a string literal on the line below each field in crust/config.py)"
        )
    return "\n".join(rows)


def event_classes() -> list[type]:
    from crust import events

    return [getattr(events, name) for name in events.__all__ if name != "Event"]


def events_reference() -> str:
    out = []
    for cls in event_classes():
        doc = inspect.getdoc(cls)
        if not doc:
            raise DocsError(f"crust.events.{cls.__name__} has no docstring")
        fields = ", ".join(f"`{f.name}: {f.type}`" for f in dataclasses.fields(cls))
        out.append(f"### `{cls.__name__}`\n\nFields: {fields}\n\n{doc}\n")
    return "\n".join(out)


def cli_reference() -> str:
    from crust.cli import _parser

    # argparse wraps help to the terminal width: fix it so the page is the
    # same wherever it is built.
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"
    try:
        parser = _parser()
        out = ["### `crust`", "", "```text", parser.format_help().rstrip(), "```", ""]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    help_text = sub.format_help().rstrip()
                    out += [f"### `crust {name}`", "", "```text", help_text, "```", ""]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "\n".join(out)


def stats_reference() -> str:
    from crust.stats import STATS_DOC

    rows = ["| key | meaning |", "|---|---|"]
    rows += [f"| `{key}` | {_cell(doc)} |" for key, doc in STATS_DOC.items()]
    return "\n".join(rows)


def file_block(path: str, lang: str | None) -> str:
    target = (ROOT / path).resolve()
    if ROOT not in target.parents or not target.is_file():
        raise DocsError(f"crust:file {path}: no such file in the repository")
    return f"```{lang or ''}\n{target.read_text().rstrip()}\n```"


def _resolve(dotted: str) -> Any:
    """A module (imported if need be, e.g. ``crust.metrics``) or an
    attribute of one (``crust.errors.ConnectError``)."""
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module_name, _, attr = dotted.rpartition(".")
        return getattr(_resolve(module_name), attr)


def api_reference(spec: str) -> str:
    """``crust.Service:connect,disconnect``: each member's signature and
    docstring; a listed member without a docstring is an error."""
    dotted, _, names = spec.partition(":")
    owner = _resolve(dotted)
    short = dotted.rsplit(".", 1)[1]
    out = []
    doc = inspect.getdoc(owner)
    if not names:
        if not doc:
            raise DocsError(f"{dotted} has no docstring")
        if inspect.ismodule(owner):
            # A module: its docstring, then each exported class in one line.
            for name in getattr(owner, "__all__", []):
                cls = getattr(owner, name)
                if inspect.isclass(cls):
                    bases = ", ".join(b.__name__ for b in cls.__bases__)
                    first = (inspect.getdoc(cls) or "").split("\n\n")[0]
                    doc += f"\n\n- `{name}({bases})`: {' '.join(first.split())}"
        return doc
    for name in names.split(","):
        static = inspect.getattr_static(owner, name, None)
        if static is None:
            raise DocsError(f"{dotted} has no member {name!r}")
        member = getattr(owner, name)
        if isinstance(static, property):
            title = f"{short}.{name}"
            member_doc = inspect.getdoc(static)
        else:
            try:
                sig = str(inspect.signature(member))
            except (TypeError, ValueError):
                sig = "(...)"
            # Annotations are strings (postponed evaluation): drop the quotes,
            # and the self of methods read from the class.
            sig = re.sub(r"^\(self(, )?", "(", sig.replace("'", ""))
            prefix = "async " if inspect.iscoroutinefunction(member) else ""
            title = f"{prefix}{short}.{name}{sig}"
            member_doc = inspect.getdoc(member)
        if not member_doc:
            raise DocsError(f"{dotted}.{name} has no docstring")
        out.append(f"#### `{title}`\n\n{member_doc}\n")
    return "\n".join(out)


def design_notes() -> str:
    rows = []
    for note in sorted((ROOT / "docs" / "design").glob("[0-9]*.md")):
        first = note.read_text().splitlines()[0] if note.stat().st_size else note.stem
        rows.append(f"- `docs/design/{note.name}`: {first.lstrip('# ').strip()}")
    return "\n".join(rows)


def expand(markdown: str) -> str:
    """Replace every marker in a page's markdown."""

    def one(m: re.Match[str]) -> str:
        kind, arg, lang = m.group(1), m.group(2), m.group(3)
        if kind == "config":
            return config_table()
        if kind == "events":
            return events_reference()
        if kind == "cli":
            return cli_reference()
        if kind == "stats":
            return stats_reference()
        if kind == "design":
            return design_notes()
        if kind == "file" and arg:
            return file_block(arg, lang)
        if kind == "api" and arg:
            return api_reference(arg)
        raise DocsError(f"unknown marker {m.group(0)!r}")

    return MARKER.sub(one, markdown)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return expand(markdown)
