"""``crust nat``: what this machine's network means for peer-to-peer.

Gathers local interface addresses, runs the STUN probes
(:func:`crust.asyncio.stun.probe_nat`) and asks for a UPnP gateway and a
trial mapping (:mod:`crust.asyncio.upnp`), then says in plain words what
that means for connectivity. Every step is time-boxed; nothing is sent
except to the STUN servers named and the SSDP search on the local network
(``--no-upnp`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

from crust.nat.classify import NatBehaviour

__all__ = ["DoctorReport", "diagnose", "local_addresses", "parse_server", "render", "run_cli"]

Addr = tuple[str, int]


def local_addresses() -> list[tuple[str, str]]:
    """(interface, address) for every configured IPv4 and IPv6 address."""
    from crust.asyncio.netif import interfaces  # deferred: only the doctor needs it

    out: list[tuple[str, str]] = []
    for iface in interfaces():
        if iface.ipv4 is not None:
            out.append((iface.name, iface.ipv4))
        out.extend((iface.name, a) for a in iface.ipv6)
    return out


def parse_server(text: str, default_port: int = 3478) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port``; ValueError naming the text."""
    t = text.strip()
    if t.startswith("["):
        host, sep, rest = t[1:].partition("]")
        if not sep:
            raise ValueError(f"STUN server {text!r}: unbalanced [ ]")
        port_s = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"STUN server {text!r}: junk after ]")
    elif t.count(":") == 1:
        host, _, port_s = t.partition(":")
    else:
        host, port_s = t, ""
    if not host:
        raise ValueError(f"STUN server {text!r}: empty host")
    if port_s and not (port_s.isdigit() and 0 < int(port_s) < 65536):
        raise ValueError(f"STUN server {text!r}: port must be 1..65535")
    return host, int(port_s) if port_s else default_port


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``crust nat`` found (``to_json`` is its ``--json``)."""

    local_addresses: list[tuple[str, str]]
    stun_servers: list[Addr]
    nat: NatBehaviour | None
    stun_error: str | None
    upnp: dict[str, Any] | None
    verdict: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        nat = None
        if self.nat is not None:
            b = self.nat
            nat = {
                "local": list(b.local),
                "mapped": list(b.mapped) if b.mapped else None,
                "reflexive": [list(a) for a in b.reflexive],
                "behind_nat": b.behind_nat,
                "mapping": b.mapping.value,
                "filtering": b.filtering.value,
                "port_preserving": b.port_preserving,
                "kind": b.kind,
                "advice": b.advice,
                "probes": [
                    {
                        "test": p.test,
                        "server": list(p.server),
                        "mapped": list(p.mapped) if p.mapped else None,
                        "rtt_ms": None if p.rtt is None else round(p.rtt * 1000, 3),
                    }
                    for p in b.probes
                ],
            }
        return {
            "local_addresses": [{"interface": i, "address": a} for i, a in self.local_addresses],
            "stun_servers": [list(s) for s in self.stun_servers],
            "nat": nat,
            "stun_error": self.stun_error,
            "upnp": self.upnp,
            "verdict": self.verdict,
            "seconds": round(self.seconds, 3),
        }


async def _resolve(servers: list[tuple[str, int]]) -> list[Addr]:
    loop = asyncio.get_running_loop()
    out: list[Addr] = []
    for host, port in servers:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout=3.0
        )
        v4 = [i for i in infos if i[0] == socket.AF_INET] or infos
        out.append((str(v4[0][4][0]), port))
    return out


async def _upnp_check(timeout: float) -> dict[str, Any]:
    from crust.asyncio.upnp import UpnpError, UpnpGateway

    t0 = time.monotonic()
    try:
        gw = await UpnpGateway.discover(timeout=timeout, call_timeout=3.0)
    except UpnpError as e:
        return {"available": False, "error": str(e), "seconds": round(time.monotonic() - t0, 3)}
    found = time.monotonic() - t0
    info: dict[str, Any] = {
        "available": True,
        "control_url": gw.control_url,
        "lan_address": gw.lan_address,
        "discovery_seconds": round(found, 3),
    }
    try:
        info["external_ip"] = await gw.external_ip()
        # A trial mapping of a port we hold, removed at once: proves the
        # gateway really forwards, not just that it answers.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((gw.lan_address, 0))
            port = s.getsockname()[1]
            t1 = time.monotonic()
            ext = await gw.add("udp", (gw.lan_address, port), port, 60, "crust nat doctor")
            info["trial_mapping"] = {
                "internal": [gw.lan_address, port],
                "external": [info["external_ip"], ext],
                "seconds": round(time.monotonic() - t1, 3),
            }
            await gw.remove("udp", ext)
        info["can_map"] = True
    except UpnpError as e:
        info["can_map"] = False
        info["error"] = str(e)
    return info


def _verdict(nat: NatBehaviour | None, upnp: dict[str, Any] | None) -> str:
    parts = []
    if nat is not None:
        parts.append(nat.advice)
    else:
        parts.append(
            "reachability unknown without a STUN server (--stun HOST[:PORT] or stun_servers)"
        )
    if upnp and upnp.get("can_map"):
        parts.append("UPnP works: crust can open its ports on the gateway (ServiceConfig.upnp)")
    elif upnp and upnp.get("available"):
        parts.append("a UPnP gateway answers but refuses mappings")
    return "; ".join(parts)


async def diagnose(
    stun_servers: list[tuple[str, int]],
    *,
    upnp: bool = True,
    upnp_timeout: float = 1.0,
    host: str = "0.0.0.0",
) -> DoctorReport:
    """Runs every check (STUN and UPnP concurrently) and builds the report."""
    from crust.asyncio.stun import probe_nat

    t0 = time.monotonic()
    stun_error = None
    resolved: list[Addr] = []
    nat: NatBehaviour | None = None
    upnp_task = asyncio.create_task(_upnp_check(upnp_timeout)) if upnp else None
    if stun_servers:
        try:
            resolved = await _resolve(stun_servers)
            nat = await probe_nat(resolved, host=host)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            stun_error = f"{type(e).__name__}: {e}"
    upnp_info = await upnp_task if upnp_task is not None else None
    return DoctorReport(
        local_addresses(),
        resolved,
        nat,
        stun_error,
        upnp_info,
        _verdict(nat, upnp_info),
        time.monotonic() - t0,
    )


def render(r: DoctorReport) -> str:
    """The human-readable report."""
    lines = ["local addresses:"]
    lines += [f"  {i:<10} {a}" for i, a in r.local_addresses]
    if r.nat is not None:
        b = r.nat
        lines.append(f"STUN servers: {', '.join(f'{h}:{p}' for h, p in r.stun_servers)}")
        if b.mapped is None:
            lines.append("  no answer: UDP to the STUN servers is blocked or they are down")
        else:
            refl = ", ".join(f"{h}:{p}" for h, p in b.reflexive)
            lines.append(f"  local socket    {b.local[0]}:{b.local[1]}")
            lines.append(f"  reflexive       {refl}")
            lines.append(f"  behind a NAT    {'yes' if b.behind_nat else 'no'}")
            lines.append(f"  mapping         {b.mapping.value}")
            lines.append(f"  port preserving {'yes' if b.port_preserving else 'no'}")
            lines.append(f"  filtering       {b.filtering.value}")
            rtts = [p.rtt for p in b.probes if p.rtt is not None]
            if rtts:
                lines.append(f"  STUN rtt        {min(rtts) * 1000:.2f} ms (best)")
    elif r.stun_error:
        lines.append(f"STUN: {r.stun_error}")
    else:
        lines.append("STUN: skipped (no --stun server given)")
    if r.upnp is None:
        lines.append("UPnP: skipped")
    elif not r.upnp.get("available"):
        lines.append(f"UPnP: no gateway ({r.upnp.get('error')})")
    else:
        u = r.upnp
        lines.append(f"UPnP: gateway {u['control_url']} (found in {u['discovery_seconds']} s)")
        lines.append(f"  external address {u.get('external_ip', '?')}")
        if u.get("can_map"):
            t = u["trial_mapping"]
            lines.append(
                f"  trial mapping    {t['external'][0]}:{t['external'][1]} -> "
                f"{t['internal'][0]}:{t['internal'][1]} ok ({t['seconds']} s), removed"
            )
        else:
            lines.append(f"  mapping refused: {u.get('error')}")
    lines.append(f"verdict: {r.verdict}")
    return "\n".join(lines)


def run_cli(args: argparse.Namespace) -> int:
    """``crust nat`` (arguments from :mod:`crust.cli`)."""
    texts = args.stun
    if not texts:
        # The servers a node would use: ServiceConfig.stun_servers from the
        # config file or CRUST_STUN_SERVERS.
        from crust.config_sources import load_config
        from crust.errors import ConfigError

        try:
            texts = list(load_config().config.stun_servers)
        except ConfigError as e:
            print(f"crust nat: configuration: {e}", file=sys.stderr)
            return 2
    try:
        servers = [parse_server(s) for s in texts]
    except ValueError as e:
        print(f"crust nat: {e}", file=sys.stderr)
        return 2
    for host, port in servers:
        # An unresolvable name is the user's typo, not an unknown NAT.
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            print(f"crust nat: STUN server {host!r}: cannot resolve: {e.strerror or e}",
                  file=sys.stderr)  # fmt: skip
            return 2
    report = asyncio.run(diagnose(servers, upnp=not args.no_upnp, host=args.host))
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        print(render(report))
    return 0
