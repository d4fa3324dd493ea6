"""Where a :class:`~crust.config.ServiceConfig` comes from: a TOML file,
``CRUST_*`` environment variables and keyword arguments.

Precedence, highest first: arguments > environment > file > defaults.
Every field can be set in each place under its own name (``port`` in the
file, ``CRUST_PORT`` in the environment), except ``identity`` (a key in
memory: use ``identity_path``). The file is ``path`` when given, else
``$CRUST_CONFIG``, else ``<user config dir>/crust/config.toml`` when it
exists. Unknown keys in the file, wrongly typed values and out-of-range
values raise :class:`~crust.errors.ConfigError` naming the key and where it
came from. Environment variables that name no field are ignored: the
``CRUST_`` prefix is shared with tooling (``CRUST_FUZZ_SECONDS``) and with
``CRUST_CONFIG`` itself.

Formats: lists are TOML arrays in the file and comma-separated in the
environment; booleans are ``true``/``false``/``1``/``0``/``yes``/``no``/
``on``/``off`` in the environment; ``engine`` is a TOML table or a JSON
object.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crust.config import ServiceConfig
from crust.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = ["ENV_PREFIX", "LoadedConfig", "default_config_path", "load_config", "parse_setting"]

ENV_PREFIX = "CRUST_"
_NOT_SETTABLE = {"identity": "a key in memory cannot come from a file: use identity_path"}
#: Fields whose default (None) does not tell their type.
_KINDS_BY_NAME = {
    "identity_path": "path",
    "cache_path": "path",
    "ciphers": "strs?",
    "receive_budget": "int?",
}


def _default_cache(cfg: ServiceConfig) -> Path:
    from crust.discovery.cache import default_cache_path  # deferred: import-light

    return default_cache_path(cfg.network)


def _default_identity(cfg: ServiceConfig) -> Path:
    from crust.identity import default_identity_path  # deferred: import-light

    return default_identity_path()


#: What a ``None`` setting means, shown by :meth:`LoadedConfig.describe`.
_EFFECTIVE_DEFAULTS = {"cache_path": _default_cache, "identity_path": _default_identity}


def default_config_path() -> Path:
    """``<user config dir>/crust/config.toml``."""
    import platformdirs  # deferred: only this path needs it

    return platformdirs.user_config_path("crust", appauthor=False) / "config.toml"


def _kinds() -> dict[str, str]:
    """Each settable field's kind, from its default value's type."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(ServiceConfig):
        if f.name in _NOT_SETTABLE:
            continue
        if f.name in _KINDS_BY_NAME:
            out[f.name] = _KINDS_BY_NAME[f.name]
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for typ, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
            if type(default) is typ:
                out[f.name] = kind
                break
        else:
            if isinstance(default, tuple):
                out[f.name] = "strs"
            elif isinstance(default, dict):
                out[f.name] = "table"
    return out


def _bad(key: str, where: str, why: str) -> ConfigError:
    err = ConfigError(f"{key} ({where}): {why}")
    err.field = key
    return err


def _unknown(key: str, where: str, kinds: Mapping[str, str]) -> ConfigError:
    """An unknown key: the close names if any, else where the list is (37
    names in a message hide the one that was meant)."""
    close = difflib.get_close_matches(key, kinds, n=2, cutoff=0.75)
    # A second name only when it is about as close as the first: one typo
    # away from connect_timeout is not a hint at lost_timeout.
    close = [
        c for c in close
        if difflib.SequenceMatcher(None, key, c).ratio()
        >= difflib.SequenceMatcher(None, key, close[0]).ratio() - 0.1
    ]  # fmt: skip
    if close:
        return _bad(key, where, f"unknown setting; did you mean {' or '.join(close)}?")
    return _bad(key, where, "unknown setting (`crust config` lists them all)")


def parse_setting(name: str, text: str, where: str = "--set") -> Any:
    """``text`` parsed as setting ``name`` would be from its ``CRUST_*``
    variable, the error (a :class:`ConfigError`) naming ``where``."""
    kinds = _kinds()
    if name in _NOT_SETTABLE:
        raise _bad(name, where, _NOT_SETTABLE[name])
    if name not in kinds:
        raise _unknown(name, where, kinds)
    return _from_env(name, kinds[name], text, where)


def _from_toml(name: str, kind: str, value: Any, where: str) -> Any:
    """A TOML value checked against the field's kind."""
    ok = {
        "bool": isinstance(value, bool),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "int?": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "path": isinstance(value, str),
        "strs": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "strs?": isinstance(value, list) and all(isinstance(v, str) for v in value),
        "table": isinstance(value, dict),
    }[kind]
    if not ok:
        want = {
            "strs": "an array of strings",
            "strs?": "an array of strings",
            "table": "a table",
            "path": "a path string",
        }.get(kind, f"a {kind}")
        raise _bad(name, where, f"must be {want}, got {value!r}")
    if kind == "float":
        return float(value)
    if kind == "path":
        return Path(value).expanduser()
    if kind in ("strs", "strs?"):
        return tuple(value)
    return value


_KIND_WORDS = {
    "bool": "a boolean",
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "path": "a path",
    "strs": "a comma-separated list",
    "strs?": "a comma-separated list",
    "table": "a JSON object",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _from_env(name: str, kind: str, text: str, where: str) -> Any:
    """An environment string parsed as the field's kind."""
    t = text.strip()
    try:
        if kind == "bool":
            if t.lower() in _TRUE:
                return True
            if t.lower() in _FALSE:
                return False
            raise ValueError("expected true/false, 1/0, yes/no or on/off")
        if kind == "int":
            return int(t)
        if kind == "int?":
            return None if t.lower() in ("", "default") else int(t)
        if kind == "float":
            v = float(t)
            if not math.isfinite(v):
                raise ValueError("not a finite number")
            return v
        if kind == "str":
            return text
        if kind == "path":
            return Path(t).expanduser() if t else None
        if kind in ("strs", "strs?"):
            if kind == "strs?" and t.lower() in ("", "default"):
                return None
            return tuple(p.strip() for p in t.split(",") if p.strip())
        obj = json.loads(t)
        if not isinstance(obj, dict):
            raise ValueError("expected a JSON object")
        return obj
    except ValueError as exc:
        raise _bad(name, where, f"cannot parse {text!r} as {_KIND_WORDS[kind]}: {exc}") from None


@dataclass(frozen=True)
class LoadedConfig:
    """The effective configuration and where each field's value came from:
    ``"default"``, ``"file <path>"``, ``"env CRUST_<NAME>"`` or
    ``"argument"``."""

    config: ServiceConfig
    sources: dict[str, str]
    file: Path | None

    def describe(self) -> str:
        """The configuration as a TOML file, each line commented with the
        value's source: ``name = value  # source``. Read back with
        ``load_config(file)`` it gives the same configuration; settings left
        unset (``None``: TOML has no null) and the in-memory ``identity``
        are comment lines."""
        lines = [f"# config file: {self.file if self.file else 'none'}"]
        for f in dataclasses.fields(ServiceConfig):
            value = getattr(self.config, f.name)
            source = self.sources.get(f.name, "default")
            if f.name in _NOT_SETTABLE:
                state = "set in memory" if value is not None else "unset"
                lines.append(f"# {f.name}: {state} (not settable here: use identity_path)")
            elif value is None:
                if f.name in _EFFECTIVE_DEFAULTS:
                    source += f" (in effect: {_EFFECTIVE_DEFAULTS[f.name](self.config)})"
                lines.append(f"# {f.name} = (unset)  # {source}")
            else:
                lines.append(f"{f.name} = {_toml_value(value)}  # {source}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """``{"file", "config": {name: value}, "sources": {name: source}}``,
        values as their TOML keys would hold them (``null`` when unset)."""
        values = {
            f.name: _json_value(getattr(self.config, f.name))
            for f in dataclasses.fields(ServiceConfig)
            if f.name not in _NOT_SETTABLE
        }
        return {
            "file": str(self.file) if self.file else None,
            "config": values,
            "sources": dict(self.sources),
        }


def _json_value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def _toml_value(value: Any) -> str:
    """A value in TOML syntax (JSON's string escapes are valid TOML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, Path)):
        return json.dumps(str(value))
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    return repr(value)


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    default_file: bool = True,
    **arguments: Any,
) -> LoadedConfig:
    """Build the effective :class:`ServiceConfig` (see the module docstring).
    ``env`` defaults to ``os.environ``; ``default_file=False`` skips the
    user config file unless ``path`` or ``CRUST_CONFIG`` names one."""
    environ = os.environ if env is None else env
    kinds = _kinds()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    file = Path(path) if path is not None else None
    if file is None and environ.get(ENV_PREFIX + "CONFIG"):
        file = Path(environ[ENV_PREFIX + "CONFIG"])
    if file is None and default_file:
        candidate = default_config_path()
        file = candidate if candidate.is_file() else None
    if file is not None:
        where = f"file {file}"
        try:
            with open(file, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise _bad("config", where, f"cannot read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise _bad("config", where, f"not valid TOML: {exc}") from None
        for key, value in doc.items():
            if key in _NOT_SETTABLE:
                raise _bad(key, where, _NOT_SETTABLE[key])
            if key not in kinds:
                raise _unknown(key, where, kinds)
            values[key] = _from_toml(key, kinds[key], value, where)
            sources[key] = where

    for name, kind in kinds.items():
        var = ENV_PREFIX + name.upper()
        if var in environ:
            where = f"env {var}"
            values[name] = _from_env(var, kind, environ[var], where)
            sources[name] = where

    for key, value in arguments.items():
        if key not in kinds and key not in _NOT_SETTABLE:
            raise _unknown(key, "argument", kinds)
        values[key] = value
        sources[key] = "argument"

    try:
        config = ServiceConfig(**values)
    except ConfigError as exc:
        field = exc.field or "?"
        raise _bad(field, sources.get(field, "default"), str(exc)) from None
    except TypeError as exc:  # a wrongly typed argument that validation tripped on
        raise _bad("config", "argument", str(exc)) from None
    return LoadedConfig(config, {f: sources.get(f, "default") for f in kinds}, file)
