"""``crust nat``: what this machine's network means for peer-to-peer.

Gathers local interface addresses, runs the STUN probes
(:func:`crust.asyncio.stun.probe_nat`), asks for a UPnP gateway and a
trial mapping (:mod:`crust.asyncio.upnp`) and a PCP/NAT-PMP trial mapping
from the default gateway (:mod:`crust.asyncio.natpmp`), then says in plain
words what that means for connectivity. Every step is time-boxed; nothing
is sent except to the STUN servers named, the SSDP search on the local
network (``--no-upnp`` skips it) and the gateway's port 5351
(``--no-natpmp`` skips it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from crust.nat.classify import NatBehaviour
from crust.wire import Address as Addr

__all__ = ["DoctorReport", "diagnose", "local_addresses", "parse_server", "render", "run_cli"]


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
    natpmp: dict[str, Any] | None = None
    #: crust contacts asked where they see us (``--via``; design note 0062).
    contacts: list[Addr] = field(default_factory=list)

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
                "source": b.source,
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
            "contacts": [list(c) for c in self.contacts],
            "nat": nat,
            "stun_error": self.stun_error,
            "upnp": self.upnp,
            "natpmp": self.natpmp,
            "port_mapping": _mapping_method(self.upnp, self.natpmp),
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


async def _natpmp_check(gateway: str | None, port: int, timeout: float) -> dict[str, Any]:
    from crust.asyncio.natpmp import GatewayMapper

    t0 = time.monotonic()
    # A trial mapping of a UDP port we hold, deleted at once: PCP and
    # NAT-PMP have no "is anyone there" request that proves forwarding.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        local_port = s.getsockname()[1]
        m = GatewayMapper(
            [("udp", ("0.0.0.0", local_port))], lease=60, gateway=gateway, server_port=port
        )
        m.start()
        try:
            st = await m.wait_ready(timeout)
        except asyncio.TimeoutError:
            st = m.status
        took = time.monotonic() - t0
        await m.close()
    info: dict[str, Any] = {
        "gateway": None if m.gateway is None else [m.gateway, port],
        "can_map": bool(st.mappings),
        "seconds": round(took, 3),
    }
    if st.mappings:
        mp = st.mappings[0]
        info["method"] = mp.method
        info["external_ip"] = st.external_ip
        info["trial_mapping"] = {
            "internal": list(mp.internal),
            "external": list(mp.external),
            "lifetime": mp.lease,
            "removed": m.unconfirmed_deletions == 0,
        }
    else:
        info["error"] = st.error or f"no answer within {timeout} s"
    return info


_METHOD_NAMES = {"upnp": "UPnP", "pcp": "PCP", "natpmp": "NAT-PMP"}


def _mapping_method(upnp: dict[str, Any] | None, natpmp: dict[str, Any] | None) -> str | None:
    """The protocol a node would map its ports with (UPnP first, as the
    service tries them), or None if none can."""
    if upnp and upnp.get("can_map"):
        return "upnp"
    if natpmp and natpmp.get("can_map"):
        return str(natpmp["method"])
    return None


def _verdict(
    nat: NatBehaviour | None, upnp: dict[str, Any] | None, natpmp: dict[str, Any] | None = None
) -> str:
    parts = []
    if nat is not None:
        parts.append(nat.advice)
    else:
        parts.append(
            "reachability unknown without a STUN server (--stun HOST[:PORT] or stun_servers) "
            "or a crust contact (--via HOST:PORT)"
        )
    if upnp and upnp.get("can_map"):
        parts.append("UPnP works: crust can open its ports on the gateway (ServiceConfig.upnp)")
    elif upnp and upnp.get("available"):
        parts.append("a UPnP gateway answers but refuses mappings")
    if natpmp and natpmp.get("can_map"):
        name = _METHOD_NAMES[natpmp["method"]]
        parts.append(
            f"{name} works: crust can open its ports on the gateway (ServiceConfig.natpmp)"
        )
    return "; ".join(parts)


async def diagnose(
    stun_servers: list[tuple[str, int]],
    *,
    upnp: bool = True,
    upnp_timeout: float = 1.0,
    host: str = "0.0.0.0",
    natpmp: bool = True,
    gateway: tuple[str | None, int] = (None, 5351),
    natpmp_timeout: float = 8.0,
    contacts: list[tuple[str, int]] | None = None,
) -> DoctorReport:
    """Runs every check (STUN, UPnP and PCP/NAT-PMP concurrently) and
    builds the report. ``gateway`` is where PCP/NAT-PMP ask (None: the
    default route's gateway). ``natpmp_timeout`` is above the ~7 s an
    answer-less gateway costs (PCP ~3 s, then NAT-PMP 3.75 s), so the
    report gives the mapper's own reason rather than a bare timeout.
    ``contacts``: crust nodes asked where they see us (their two ports
    each), when STUN gives no mapping behaviour (design note 0062)."""
    from crust.asyncio.mapping import probe_contacts
    from crust.asyncio.stun import probe_nat
    from crust.nat.classify import Behaviour

    t0 = time.monotonic()
    stun_error = None
    resolved: list[Addr] = []
    nat: NatBehaviour | None = None
    upnp_task = asyncio.create_task(_upnp_check(upnp_timeout)) if upnp else None
    natpmp_task = (
        asyncio.create_task(_natpmp_check(gateway[0], gateway[1], natpmp_timeout))
        if natpmp
        else None
    )
    if stun_servers:
        try:
            resolved = await _resolve(stun_servers)
            nat = await probe_nat(resolved, host=host)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            stun_error = f"{type(e).__name__}: {e}"
    via: list[Addr] = []
    if contacts and (nat is None or nat.mapping is Behaviour.UNKNOWN):
        try:
            via = await _resolve(contacts)
            nat = await probe_contacts(via, host=host) or nat
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            stun_error = f"contacts: {type(e).__name__}: {e}"
    upnp_info = await upnp_task if upnp_task is not None else None
    natpmp_info = await natpmp_task if natpmp_task is not None else None
    return DoctorReport(
        local_addresses(),
        resolved,
        nat,
        stun_error,
        upnp_info,
        _verdict(nat, upnp_info, natpmp_info),
        time.monotonic() - t0,
        natpmp_info,
        via,
    )


def render(r: DoctorReport) -> str:
    """The human-readable report."""
    lines = ["local addresses:"]
    lines += [f"  {i:<10} {a}" for i, a in r.local_addresses]
    if r.nat is not None:
        b = r.nat
        if b.source == "contacts":
            lines.append(f"crust contacts: {', '.join(f'{h}:{p}' for h, p in r.contacts)}")
        else:
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
                what = "STUN" if b.source == "stun" else "probe"
                lines.append(f"  {what} rtt".ljust(18) + f"{min(rtts) * 1000:.2f} ms (best)")
    elif r.stun_error:
        lines.append(f"STUN: {r.stun_error}")
    else:
        lines.append("STUN: skipped (no --stun server given)")
    if r.contacts and (r.nat is None or r.nat.source != "contacts"):
        lines.append(f"crust contacts: {', '.join(f'{h}:{p}' for h, p in r.contacts)}: no answer")
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
    n = r.natpmp
    if n is None:
        lines.append("PCP/NAT-PMP: skipped")
    elif not n.get("can_map"):
        lines.append(f"PCP/NAT-PMP: no mapping ({n.get('error')})")
    else:
        t = n["trial_mapping"]
        gw = n["gateway"]
        lines.append(f"{_METHOD_NAMES[n['method']]}: gateway {gw[0]}:{gw[1]} ({n['seconds']} s)")
        lines.append(f"  external address {n.get('external_ip')}")
        lines.append(
            f"  trial mapping    {t['external'][0]}:{t['external'][1]} -> "
            f"{t['internal'][0]}:{t['internal'][1]} ok ({t['lifetime']} s), "
            + ("removed" if t["removed"] else "left to expire")
        )
    method = _mapping_method(r.upnp, r.natpmp)
    if r.upnp is not None or r.natpmp is not None:
        lines.append(
            f"port mapping: by {_METHOD_NAMES[method]}" if method else "port mapping: none works"
        )
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
    gateway: tuple[str | None, int] = (None, 5351)
    if args.gateway:
        from crust.config import ServiceConfig
        from crust.errors import ConfigError

        try:
            gateway = ServiceConfig(natpmp_gateway=args.gateway).natpmp_gateway_address()
        except ConfigError as e:
            print(f"crust nat: --gateway: {e}", file=sys.stderr)
            return 2
    try:
        contacts = [parse_server(c, default_port=0) for c in args.via or []]
        if any(port == 0 for _, port in contacts):
            raise ValueError("--via needs HOST:PORT (the contact's port)")
    except ValueError as e:
        print(f"crust nat: {e}", file=sys.stderr)
        return 2
    report = asyncio.run(
        diagnose(
            servers,
            contacts=contacts,
            upnp=not args.no_upnp,
            host=args.host,
            natpmp=not args.no_natpmp,
            gateway=gateway,
        )
    )
    from crust.dht.cli import dht_status, render_status

    dht = dht_status()
    if args.json:
        print(json.dumps({**report.to_json(), "dht": dht}, indent=1))
    else:
        print(render(report))
        print(render_status(dht))
    return 0
