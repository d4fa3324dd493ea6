"""`crust nat` pieces that need no network: argument parsing, local
addresses, the report's text and JSON forms, and the CLI's usage errors."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from pathlib import Path

import pytest

from crust.asyncio.doctor import DoctorReport, _verdict, local_addresses, parse_server, render
from crust.cli import main
from crust.nat.classify import Probe, classify
from crust.nat.stun import decode, encode_binding_response


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("stun.example.org", ("stun.example.org", 3478)),
        ("1.2.3.4:19302", ("1.2.3.4", 19302)),
        ("[2001:db8::1]:5349", ("2001:db8::1", 5349)),
        ("[2001:db8::1]", ("2001:db8::1", 3478)),
        ("2001:db8::1", ("2001:db8::1", 3478)),
    ],
)
def test_parse_server(text: str, want: tuple[str, int]) -> None:
    assert parse_server(text) == want


@pytest.mark.parametrize("text", ["", ":3478", "h:0", "h:99999", "h:x", "[::1", "[::1]x"])
def test_parse_server_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="STUN server"):
        parse_server(text)


def test_local_addresses_include_loopback() -> None:
    addrs = local_addresses()
    assert ("lo", "127.0.0.1") in addrs


def test_report_text_and_json() -> None:
    local = ("10.0.0.2", 5000)
    m = ("11.0.1.2", 5000)
    pri, alt = ("11.255.0.1", 3478), ("11.255.0.2", 3479)
    probes = [
        Probe("I", pri, m, pri, alt, 0.001, 0.0005),
        Probe("II", (alt[0], 3478), m, alt, alt, 0.001, 0.0004),
        Probe("III", alt, m, alt, alt, 0.001, 0.0004),
    ]
    nat = classify(local, probes)
    upnp = {
        "available": True,
        "control_url": "http://10.0.0.1:5000/ctl",
        "lan_address": "10.0.0.2",
        "discovery_seconds": 1.0,
        "external_ip": "11.0.1.2",
        "can_map": True,
        "trial_mapping": {
            "internal": ["10.0.0.2", 7],
            "external": ["11.0.1.2", 7],
            "seconds": 0.01,
        },
    }
    r = DoctorReport([("lo", "127.0.0.1")], [pri], nat, None, upnp, _verdict(nat, upnp), 1.5)
    text = render(r)
    assert "reflexive       11.0.1.2:5000" in text
    assert "mapping         endpoint-independent" in text
    assert "filtering       unknown" in text
    assert "STUN rtt        0.40 ms" in text
    assert "trial mapping    11.0.1.2:7 -> 10.0.0.2:7 ok" in text
    assert "UPnP works" in text
    j = json.loads(json.dumps(r.to_json()))
    assert j["nat"]["kind"] == "cone" and j["nat"]["reflexive"] == [list(m)]
    assert j["nat"]["probes"][0]["rtt_ms"] == 0.5
    blocked = DoctorReport([], [], None, "OSError: unreachable", None, _verdict(None, None), 0.1)
    assert "STUN: OSError: unreachable" in render(blocked) and "UPnP: skipped" in render(blocked)


def test_cli_rejects_a_bad_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nat", "--stun", "host:0", "--no-upnp", "--no-natpmp"]) == 2
    assert "port must be 1..65535" in capsys.readouterr().err


def test_cli_without_servers_or_upnp_reports_local_addresses(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("CRUST_CONFIG", str(tmp_path / "empty.toml"))
    monkeypatch.delenv("CRUST_STUN_SERVERS", raising=False)
    assert main(["nat", "--no-upnp", "--no-natpmp", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["nat"] is None and r["upnp"] is None
    assert {"interface": "lo", "address": "127.0.0.1"} in r["local_addresses"]
    assert "without a STUN server" in r["verdict"]


def test_cli_uses_the_configured_stun_servers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without --stun the doctor asks the servers a node would use; here a
    loopback responder (no NAT: the reflexive address is the socket)."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.05)
    server = srv.getsockname()
    stop = threading.Event()

    def answer() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                data, addr = srv.recvfrom(2048)
                srv.sendto(encode_binding_response(decode(data).txid, addr), addr)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    (tmp_path / "empty.toml").write_text("")
    monkeypatch.setenv("CRUST_CONFIG", str(tmp_path / "empty.toml"))
    monkeypatch.setenv("CRUST_STUN_SERVERS", f"{server[0]}:{server[1]}")
    try:
        assert main(["nat", "--no-upnp", "--no-natpmp", "--json", "--host", "127.0.0.1"]) == 0
    finally:
        stop.set()
        t.join(5)
        srv.close()
    r = json.loads(capsys.readouterr().out)
    assert r["stun_servers"] == [list(server)]
    assert r["nat"]["behind_nat"] is False and r["nat"]["mapped"] == r["nat"]["local"]
