"""NAT behaviour from STUN observations (RFC 4787 / RFC 5780 vocabulary).

Pure: :func:`classify` takes the probes someone ran (see
:func:`crust.asyncio.stun.probe_nat`) and says what they show, never more.
A test that was not run leaves its answer ``UNKNOWN``.

Mapping (same local socket, different destinations):
  Test I   primary server          -> mapped M1
  Test II  other IP, primary port  -> M2; M2 == M1: endpoint-independent
  Test III other IP, other port    -> M3; M3 == M2: address-dependent,
                                      else address-and-port-dependent
Filtering (a fresh socket that has only talked to the primary):
  answer from the other IP and port arrives -> endpoint-independent
  else answer from the primary IP, other port arrives -> address-dependent
  else -> address-and-port-dependent

What it means for hole punching: an endpoint-independent mapping keeps the
port a rendezvous peer learned, so simultaneous sends meet ("easy" side);
a dependent mapping gives the far side an unknown port per destination
("hard" side: birthday punching if the other side is easy, else relay).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from crust.wire import Address as Addr

__all__ = ["Behaviour", "NatBehaviour", "Probe", "classify"]


class Behaviour(enum.Enum):
    """RFC 4787 mapping or filtering behaviour."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_AND_PORT_DEPENDENT = "address-and-port-dependent"
    #: Differs per destination, but the tests run could not tell which way.
    DEPENDENT = "dependent"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Probe:
    """One binding test: its name (``I``, ``II``, ``III``, ``II-server``,
    ``filter-base``, ``filter-ip-port``, ``filter-port``), the server it
    went to, and what came back (``mapped`` is ``None`` without an answer).
    ``elapsed``: seconds the test took; ``rtt``: of the answer, when it
    came to the first request."""

    test: str
    server: Addr
    mapped: Addr | None
    source: Addr | None
    other: Addr | None
    elapsed: float
    rtt: float | None = None


@dataclass(frozen=True, slots=True)
class NatBehaviour:
    """What the probes showed. ``local``: the probing socket's address;
    ``mapped``: where the primary server saw it (``None``: no STUN answer
    at all, UDP is blocked or the servers are down); ``behind_nat``:
    ``mapped != local``; ``port_preserving``: every mapping kept the local
    port (``None`` if unknown); ``source``: who answered the probes,
    ``"stun"`` (STUN servers) or ``"contacts"`` (the crust contacts this
    node joined, :mod:`crust.nat.mapping`)."""

    local: Addr
    mapped: Addr | None
    behind_nat: bool | None
    mapping: Behaviour
    filtering: Behaviour
    port_preserving: bool | None
    probes: tuple[Probe, ...]
    source: str = "stun"

    @property
    def udp_blocked(self) -> bool:
        return self.mapped is None

    @property
    def reflexive(self) -> tuple[Addr, ...]:
        """Distinct public addresses seen by the mapping tests."""
        seen: list[Addr] = []
        for p in self.probes:
            if p.mapped is not None and not p.test.startswith("filter") and p.mapped not in seen:
                seen.append(p.mapped)
        return tuple(seen)

    @property
    def kind(self) -> str:
        """A one-word summary: ``open`` (no translation, and no filtering
        seen: reachable as is), ``cone`` (endpoint-independent mapping, or
        no translation behind a filtering firewall: punchable),
        ``symmetric`` (dependent mapping), ``blocked`` (no UDP answer) or
        ``unknown``."""
        if self.mapped is None:
            return "blocked"
        if self.behind_nat is False and self.filtering in (
            Behaviour.ENDPOINT_INDEPENDENT,
            Behaviour.UNKNOWN,
        ):
            return "open"
        if self.mapping is Behaviour.ENDPOINT_INDEPENDENT:
            return "cone"
        if self.mapping in (
            Behaviour.ADDRESS_DEPENDENT,
            Behaviour.ADDRESS_AND_PORT_DEPENDENT,
            Behaviour.DEPENDENT,
        ):
            return "symmetric"
        return "unknown"

    @property
    def advice(self) -> str:
        """What the behaviour means for connectivity, in one sentence."""
        return {
            "open": "publicly reachable: peers can connect to you directly",
            "cone": (
                "behind a NAT that keeps one public port per socket: UDP hole punching works "
                "with cone and open peers; a symmetric peer needs birthday punching"
            ),
            "symmetric": (
                "behind a NAT that picks a new port per destination: punching works only "
                "with cone or open peers (birthday punching); symmetric peers need a relay"
            ),
            "blocked": "no UDP answer from any STUN server: expect TCP or a relay only",
            "unknown": (
                "the STUN servers did not allow a full classification"
                if self.source == "stun"
                else "the contacts' answers did not allow a full classification (one "
                "contact address cannot tell a cone from an address-dependent NAT)"
            ),
        }[self.kind]


def _by_test(probes: Sequence[Probe]) -> dict[str, Probe]:
    return {p.test: p for p in probes}


def classify(local: Addr, probes: Sequence[Probe]) -> NatBehaviour:
    """Classifies from whichever probes were run (see the module text)."""
    t = _by_test(probes)
    first = t.get("I")
    m1 = first.mapped if first else None
    if m1 is None:
        return NatBehaviour(
            local, None, None, Behaviour.UNKNOWN, Behaviour.UNKNOWN, None, tuple(probes)
        )
    behind = m1 != local
    m2 = t["II"].mapped if "II" in t else None
    m3 = t["III"].mapped if "III" in t else None
    ms = t["II-server"].mapped if "II-server" in t else None
    if m2 is not None:
        if m2 == m1:
            mapping = Behaviour.ENDPOINT_INDEPENDENT
        elif m3 is None:
            mapping = Behaviour.DEPENDENT
        elif m3 == m2:
            mapping = Behaviour.ADDRESS_DEPENDENT
        else:
            mapping = Behaviour.ADDRESS_AND_PORT_DEPENDENT
    elif ms is not None:
        mapping = Behaviour.ENDPOINT_INDEPENDENT if ms == m1 else Behaviour.DEPENDENT
    elif not behind:
        # No translation at all: the mapping is the socket itself.
        mapping = Behaviour.ENDPOINT_INDEPENDENT
    else:
        mapping = Behaviour.UNKNOWN

    filtering = Behaviour.UNKNOWN
    if "filter-base" in t and t["filter-base"].mapped is not None:
        both = t.get("filter-ip-port")
        port = t.get("filter-port")
        if both is not None and both.mapped is not None:
            filtering = Behaviour.ENDPOINT_INDEPENDENT
        elif port is not None and port.mapped is not None:
            filtering = Behaviour.ADDRESS_DEPENDENT
        elif both is not None and port is not None:
            filtering = Behaviour.ADDRESS_AND_PORT_DEPENDENT

    mapped_ports = [
        p.mapped[1]
        for p in probes
        if p.mapped is not None and p.test in ("I", "II", "III", "II-server")
    ]
    port_preserving = all(port == local[1] for port in mapped_ports)
    return NatBehaviour(
        local, m1, behind, mapping, filtering, port_preserving, tuple(probes)
    )
