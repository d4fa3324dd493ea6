"""Configuration from a TOML file, CRUST_* variables and arguments:
precedence, provenance, rejection of unknown keys and bad values, and the
``crust config`` command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from crust.cli import main
from crust.config import ServiceConfig
from crust.config_sources import _kinds, load_config
from crust.errors import ConfigError

TOML = """
network = "from-file"
port = 4000
beacon = false
contacts = ["10.0.0.1:5483", "[2001:db8::1]:7000"]
keepalive = 5
blacklist = ["192.0.2.0/24"]
cache_path = "~/crust-cache.json"
relay = "never"

[engine]
cc = "cubic"
"""


def _file(tmp_path: Path, text: str = TOML) -> Path:
    p = tmp_path / "crust.toml"
    p.write_text(text)
    return p


def test_precedence_arguments_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    env = {"CRUST_PORT": "5000", "CRUST_BEACON_INTERVAL": "2.5", "CRUST_NETWORK": "from-env"}
    got = load_config(_file(tmp_path), env=env, network="from-arg")
    c = got.config
    assert c.network == "from-arg" and got.sources["network"] == "argument"
    assert c.port == 5000 and got.sources["port"] == "env CRUST_PORT"
    assert c.beacon_interval == 2.5
    assert c.beacon is False and got.sources["beacon"].startswith("file ")
    assert c.contacts == ("10.0.0.1:5483", "[2001:db8::1]:7000")
    assert c.keepalive == 5.0 and isinstance(c.keepalive, float)
    assert c.cache_path == Path("~/crust-cache.json").expanduser()
    assert c.engine == {"cc": "cubic"}
    assert c.relay == "never"
    assert got.sources["idle_timeout"] == "default"
    assert c.idle_timeout == ServiceConfig().idle_timeout


def test_every_settable_field_has_a_kind() -> None:
    """New ServiceConfig fields are settable from file and environment."""
    names = {f.name for f in dataclasses.fields(ServiceConfig)} - {"identity"}
    assert set(_kinds()) == names


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("prot = 4000\n", "prot"),
        ("port = 80\n", "port"),
        ("port = 4000.5\n", "port"),
        ('beacon = "yes"\n', "beacon"),
        ("beacon_port = 70000\n", "beacon_port"),
        ("cache_size = -1\n", "cache_size"),
        ('contacts = ["nowhere"]\n', "contacts"),
        ("contacts = [1, 2]\n", "contacts"),
        ('relay = "sometimes"\n', "relay"),
        ('blacklist = ["not-an-id"]\n', "blacklist"),
        ("bootstrap_parallelism = 0\n", "bootstrap_parallelism"),
        ("max_connections = 0\n", "max_connections"),
        ("max_connections_per_source = 0\n", "max_connections_per_source"),
        ("tcp_handshake_timeout = 0.0\n", "tcp_handshake_timeout"),
        ("tcp_unauthenticated_per_source = 0\n", "tcp_unauthenticated_per_source"),
        ("tcp_unauthenticated_max = 0\n", "tcp_unauthenticated_max"),
        ("identity = 1\n", "identity"),
        ("engine = 3\n", "engine"),
        ("this is not toml", "config"),
    ],
)
def test_bad_file_values_name_the_key_and_the_file(tmp_path: Path, text: str, key: str) -> None:
    path = _file(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.field == key
    assert str(info.value).startswith(f"{key} (file {path})")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CRUST_BEACON", "perhaps"),
        ("CRUST_PORT", "eighty"),
        ("CRUST_PORT", "80"),
        ("CRUST_KEEPALIVE", "nan"),
        ("CRUST_ENGINE", "[1]"),
        ("CRUST_CONTACTS", "10.0.0.1"),
    ],
)
def test_bad_env_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"env {var}"):
        load_config(env={var: value}, default_file=False)


def test_env_formats() -> None:
    env = {
        "CRUST_BEACON": "off",
        "CRUST_GOSSIP": "YES",
        "CRUST_CONTACTS": " 10.0.0.1:1 , 10.0.0.2:2 ",
        "CRUST_CACHE_PATH": "/tmp/x.json",
        "CRUST_ENGINE": '{"cc": "cubic"}',
        "CRUST_CIPHERS": "default",
        "CRUST_FUZZ_SECONDS": "5",  # tooling, not a setting: ignored
    }
    c = load_config(env=env, default_file=False).config
    assert (c.beacon, c.gossip) == (False, True)
    assert c.contacts == ("10.0.0.1:1", "10.0.0.2:2")
    assert c.cache_path == Path("/tmp/x.json")
    assert c.engine == {"cc": "cubic"} and c.ciphers is None


def test_config_file_from_env_and_unknown_argument(tmp_path: Path) -> None:
    path = _file(tmp_path)
    got = load_config(env={"CRUST_CONFIG": str(path)})
    assert got.file == path and got.config.network == "from-file"
    with pytest.raises(ConfigError, match="nettwork"):
        load_config(env={}, default_file=False, nettwork="x")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})


def test_default_user_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "crust").mkdir()
    (tmp_path / "crust" / "config.toml").write_text('network = "user-default"\n')
    assert load_config(env={}).config.network == "user-default"
    assert load_config(env={}, default_file=False).config.network == "crust"


def test_crust_config_prints_values_and_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("CRUST_IDLE_TIMEOUT", "90")
    path = _file(tmp_path)
    assert main(["config", "--file", str(path), "--set", "gossip_interval=3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"# config file: {path}" in out
    assert f'network = "from-file"  # file {path}' in out
    assert "idle_timeout = 90.0  # env CRUST_IDLE_TIMEOUT" in out
    assert "gossip_interval = 3.0  # argument" in out
    assert "keepalive = 5.0  # file " + str(path) in out
    assert "udp = true  # default" in out
    identity_line = next(ln for ln in out if ln.startswith("# identity_path = (unset)"))
    assert "# default (in effect: " in identity_line and "identity.key" in identity_line
    monkeypatch.setenv("CRUST_PORT", "1")
    assert main(["config", "--file", str(path)]) == 2
    assert "port (env CRUST_PORT)" in capsys.readouterr().err
    monkeypatch.delenv("CRUST_PORT")
    assert main(["config", "--set", "nope=1"]) == 2
    assert "unknown setting" in capsys.readouterr().err


def test_crust_config_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `crust config` prints is a valid config file giving the same
    configuration, and its JSON form holds the same values."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    path = _file(tmp_path)
    settings = ["--set", "engine={\"cc\": \"cubic\"}", "--set", "contacts=10.0.0.1:5484"]
    assert main(["config", "--file", str(path), *settings]) == 0
    printed = capsys.readouterr().out
    again = tmp_path / "again.toml"
    again.write_text(printed)
    first = load_config(path, engine={"cc": "cubic"}, contacts=("10.0.0.1:5484",)).config
    assert load_config(again, env={}).config == first
    assert main(["config", "--file", str(again), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["engine"] == {"cc": "cubic"}
    assert doc["config"]["contacts"] == ["10.0.0.1:5484"]
    assert doc["config"]["identity_path"] is None
    assert doc["sources"]["network"] == f"file {again}"


def test_crust_node_reads_the_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, "port = 80\n")
    assert main(["node", "--config", str(path)]) == 2
    assert f"port (file {path})" in capsys.readouterr().err
    # An option given on the command line wins over the file.
    with pytest.raises(SystemExit) as usage:
        main(["node", "--config", str(path), "--port", "70000"])
    assert usage.value.code == 2
    assert "must be 0 (random) or 1025..65535, got 70000" in capsys.readouterr().err
