"""NAT-PMP (RFC 6886) and PCP (RFC 6887): the codec against hand-built
RFC layouts, parsers fed random bytes, the client's retransmission,
renewal, deletion, version fallback and restart detection on a virtual
clock, then the asyncio driver, the port mapper's UPnP -> PCP -> NAT-PMP
order and the service against a fake gateway on loopback (no root; nothing
leaves 127.0.0.1). miniupnpd itself is exercised in
tests/netlab/test_netlab_natpmp.py."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import random
import socket
import struct
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crust.asyncio.natpmp import GatewayMapper, default_gateway
from crust.asyncio.upnp import PortMapper
from crust.config import ServiceConfig
from crust.errors import ConfigError
from crust.nat.natpmp import (
    MappingDeleted,
    MappingFailed,
    MappingGranted,
    NatPmpResponse,
    PcpResponse,
    PortMapClient,
    PortMapParseError,
    encode_natpmp_external_request,
    encode_natpmp_map_request,
    encode_pcp_map_request,
    parse_natpmp_untrusted,
    parse_pcp_untrusted,
    parse_untrusted,
)

GW = ("10.9.0.1", 5351)
ME = "10.9.0.2"
EXT = "11.9.0.2"
NONCE = bytes(range(12))


# -- server-side encoders, written from the RFCs' figures -------------------


def v4mapped(ip: str) -> bytes:
    return b"\0" * 10 + b"\xff\xff" + ipaddress.IPv4Address(ip).packed


def pcp_map_answer(
    nonce: bytes,
    proto: int,
    iport: int,
    eport: int,
    lifetime: int,
    *,
    result: int = 0,
    epoch: int = 100,
    ext: str = EXT,
    options: bytes = b"",
) -> bytes:
    header = struct.pack("!BBBBII12x", 2, 0x81, 0, result, lifetime, epoch)
    body = nonce + struct.pack("!B3xHH", proto, iport, eport) + v4mapped(ext)
    return header + body + options


def natpmp_map_answer(
    op: int, iport: int, eport: int, lifetime: int, *, result: int = 0, epoch: int = 100
) -> bytes:
    return struct.pack("!BBHIHHI", 0, 128 + op, result, epoch, iport, eport, lifetime)


def natpmp_addr_answer(ip: str = EXT, *, epoch: int = 100, result: int = 0) -> bytes:
    return struct.pack("!BBHI4s", 0, 128, result, epoch, ipaddress.IPv4Address(ip).packed)


# -- codec -----------------------------------------------------------------------


def test_request_layouts() -> None:
    assert encode_natpmp_external_request() == b"\x00\x00"
    req = encode_natpmp_map_request("tcp", 40000, 40001, 7200)
    assert req == struct.pack("!BBHHHI", 0, 2, 0, 40000, 40001, 7200)
    pcp = encode_pcp_map_request(NONCE, "udp", ME, 40000, 40000, 3600)
    assert len(pcp) == 60
    assert pcp[:4] == b"\x02\x01\x00\x00" and struct.unpack("!I", pcp[4:8])[0] == 3600
    assert pcp[8:24] == v4mapped(ME)
    assert pcp[24:36] == NONCE and pcp[36] == 17
    assert struct.unpack("!HH", pcp[40:44]) == (40000, 40000)
    assert pcp[44:60] == v4mapped("0.0.0.0")
    with pytest.raises(ValueError, match="nonce"):
        encode_pcp_map_request(b"x", "udp", ME, 1, 1, 1)
    with pytest.raises(ValueError, match="protocol"):
        encode_natpmp_map_request("sctp", 1, 1, 1)


def test_parse_answers() -> None:
    r = parse_untrusted(natpmp_addr_answer())
    assert r == NatPmpResponse(0, 0, 100, external_ip=EXT)
    r = parse_untrusted(natpmp_map_answer(1, 40000, 40002, 60, epoch=7))
    assert r == NatPmpResponse(1, 0, 7, None, 40000, 40002, 60)
    # A NAT-PMP server's answer to a PCP request: 8 bytes, "unsupported
    # version", opcode 128 (RFC 6886 erratum 3618) or 0 (as the RFC printed it).
    for op in (128, 0, 129):
        r = parse_untrusted(struct.pack("!BBHI", 0, op, 1, 5))
        assert isinstance(r, NatPmpResponse) and r.result == 1 and r.epoch == 5
    opt = struct.pack("!BBH", 3, 0, 20) + bytes(20)  # a FILTER option, ignored
    p = parse_untrusted(pcp_map_answer(NONCE, 6, 40000, 40005, 120, options=opt))
    assert isinstance(p, PcpResponse)
    assert (p.nonce, p.protocol, p.internal_port, p.external_port, p.external_ip) == (
        NONCE, 6, 40000, 40005, EXT,
    )  # fmt: skip
    assert (p.lifetime, p.epoch, p.result) == (120, 100, 0)
    # A PCP server of another version names it in its own framing.
    other = parse_pcp_untrusted(struct.pack("!BBBBII12x", 1, 0x81, 0, 1, 0, 3))
    assert other.version == 1 and other.result == 1


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (struct.pack("!BBHI", 0, 1, 2, 0), "a request"),
        (b"\x00\x80\x00", "shorter than NAT-PMP"),
        (struct.pack("!BBHI", 0, 1, 0, 0), "a request"),
        (struct.pack("!BBHI", 0, 128, 0, 0), "needs 12"),
        (struct.pack("!BBHI", 0, 129, 0, 0) + b"\0" * 4, "needs 16"),
        (struct.pack("!BBHI", 0, 140, 0, 0) + b"\0" * 8, "unknown NAT-PMP"),
        (b"\x02\x81" + b"\0" * 20, "shorter than PCP"),
        (b"\x02\x81" + b"\0" * 23, "multiple of 4"),
        (b"\x02\x01" + b"\0" * 22, "R bit clear"),
        (b"\x02\x81" + b"\0" * 26, "needs 60"),
        (struct.pack("!BBBBII12x", 1, 0x81, 0, 0, 0, 0), "version 1 answer"),
        (pcp_map_answer(NONCE, 17, 1, 1, 1, options=struct.pack("!BBH", 1, 0, 8)), "claims 8"),
        (b"\x02\x81" + b"\0" * 1200, "1100-byte"),
    ],
)
def test_parse_rejects(data: bytes, why: str) -> None:
    with pytest.raises(PortMapParseError, match=why):
        parse_untrusted(data)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=1200))
def test_parsers_raise_only_their_error(data: bytes) -> None:
    for parse in (parse_untrusted, parse_natpmp_untrusted, parse_pcp_untrusted):
        try:
            parse(data)
        except PortMapParseError:
            pass


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from([0, 2]),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(min_size=5, max_size=120),
)
def test_client_survives_random_answers(version: int, op: int, result: int, rest: bytes) -> None:
    """Random bodies behind a plausible header, fed to a client with a
    request outstanding: never an exception, never a grant nobody asked
    for (the nonce is the client's own, so a random one cannot match)."""
    c = PortMapClient(GW, ME, pcp_mrc=3)
    c.map("udp", 40000, 3600, 0.0)
    c.datagrams_to_send(0.0)
    c.receive_datagram(bytes([version, op, 0, result]) + rest, GW, 0.01)
    while (ev := c.next_event()) is not None:
        assert not isinstance(ev, MappingGranted)


# -- client on a virtual clock ---------------------------------------------------


def drain(c: PortMapClient) -> list[Any]:
    out = []
    while (ev := c.next_event()) is not None:
        out.append(ev)
    return out


def run_clock(c: PortMapClient, until: float) -> list[tuple[float, bytes]]:
    """Advances the clock timer by timer up to ``until``; returns what was sent."""
    sent = [(0.0, d) for d, _ in c.datagrams_to_send(0.0)]
    while (t := c.get_timer()) is not None and t <= until:
        c.handle_timer(t)
        sent += [(t, d) for d, _ in c.datagrams_to_send(t)]
    return sent


def test_natpmp_retransmits_250ms_doubling_nine_times() -> None:
    c = PortMapClient(GW, ME, methods=("natpmp",))
    c.map("udp", 40000, 3600, 0.0)
    sent = run_clock(c, 200.0)
    addr_req = [t for t, d in sent if d == b"\x00\x00"]
    assert addr_req == [0.25 * (2**i - 1) for i in range(9)]
    assert len([d for _, d in sent if d[1] == 1]) == 9
    (ev,) = drain(c)
    assert isinstance(ev, MappingFailed) and ev.reason == "timeout" and ev.method == "natpmp"
    # Given up 64 s after the ninth request (RFC 6886 §3.1): 127.75 s.
    assert c.get_timer() is None and not c.busy


def test_pcp_retransmission_has_jitter_doubles_and_is_capped() -> None:
    c = PortMapClient(GW, ME, methods=("pcp",), pcp_irt=3.0, pcp_mrt=10.0, pcp_mrc=5,
                      rng=random.Random(7))  # fmt: skip
    c.map("tcp", 40000, 3600, 0.0)
    times = [t for t, _ in run_clock(c, 500.0)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(times) == 5
    for gap, base in zip(gaps, [3.0, 6.0, 10.0, 10.0], strict=True):
        assert base * 0.9 <= gap <= base * 1.1, gaps
    (ev,) = drain(c)
    assert isinstance(ev, MappingFailed) and ev.reason == "timeout"


def test_pcp_map_renew_at_half_with_same_nonce_then_delete() -> None:
    c = PortMapClient(GW, ME, pcp_mrc=3)
    c.map("udp", 40000, 600, 0.0, nonce=NONCE)
    (req, to), = c.datagrams_to_send(0.0)
    assert to == GW and req[24:36] == NONCE
    # Wrong source, wrong nonce: ignored.
    answer = pcp_map_answer(NONCE, 17, 40000, 40001, 300)
    assert not c.receive_datagram(answer, ("10.9.0.9", 5351), 0.1)
    assert not c.receive_datagram(pcp_map_answer(bytes(12), 17, 40000, 40001, 300), GW, 0.1)
    assert c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 40001, 300), GW, 0.1)
    assert drain(c) == [MappingGranted("pcp", "udp", 40000, (EXT, 40001), 300, False)]
    assert c.mappings == {("udp", 40000): (EXT, 40001)}
    # Renewal at half the *granted* lifetime, same nonce, the granted port.
    assert c.get_timer() == pytest.approx(150.1)
    c.handle_timer(150.1)
    (renew, _), = c.datagrams_to_send(150.1)
    assert renew[24:36] == NONCE and struct.unpack("!HH", renew[40:44]) == (40000, 40001)
    assert c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 40001, 300, epoch=250), GW, 150.2)
    (ev,) = drain(c)
    assert isinstance(ev, MappingGranted) and ev.renewal
    assert c.unmap("udp", 40000, 160.0)
    (delete, _), = c.datagrams_to_send(160.0)
    assert struct.unpack("!I", delete[4:8])[0] == 0 and delete[24:36] == NONCE
    assert c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 0, 0, epoch=260), GW, 160.1)
    assert drain(c) == [MappingDeleted("pcp", "udp", 40000, True)]
    assert c.mappings == {} and c.get_timer() is None


def test_unmap_while_the_first_request_is_out_deletes_it() -> None:
    """Closing before the answer: the gateway may have mapped already, so
    the client asks for the deletion anyway (and a late grant is ignored)."""
    c = PortMapClient(GW, ME, pcp_mrc=3)
    c.map("udp", 40000, 3600, 0.0, nonce=NONCE)
    assert c.unmap("tcp", 40000, 0.0) is False
    c.map("tcp", 40001, 3600, 0.0)
    assert c.unmap("tcp", 40001, 0.0) is False  # never sent: just forgotten
    c.datagrams_to_send(0.0)
    assert c.unmap("udp", 40000, 0.1) is True
    (d, _), = c.datagrams_to_send(0.1)
    assert struct.unpack("!I", d[4:8])[0] == 0 and d[24:36] == NONCE
    c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 40000, 0), GW, 0.2)
    assert drain(c) == [MappingDeleted("pcp", "udp", 40000, True)]
    assert not c.busy and c.mappings == {}


@pytest.mark.parametrize("op", [128, 0])
def test_falls_back_to_natpmp_on_unsupported_version(op: int) -> None:
    c = PortMapClient(GW, ME)
    c.map("tcp", 40000, 3600, 0.0)
    (pcp, _), = c.datagrams_to_send(0.0)
    assert pcp[0] == 2
    # What a NAT-PMP-only server answers to version 2 (RFC 6886 §3.5).
    assert c.receive_datagram(struct.pack("!BBHI", 0, op, 1, 50), GW, 0.01)
    assert c.method == "natpmp"
    sent = sorted(d for d, _ in c.datagrams_to_send(0.01))
    assert sent == [b"\x00\x00", encode_natpmp_map_request("tcp", 40000, 40000, 3600)]
    # The grant waits for the external address, which NAT-PMP sends apart.
    c.receive_datagram(natpmp_map_answer(2, 40000, 40000, 3600, epoch=50), GW, 0.02)
    assert drain(c) == []
    c.receive_datagram(natpmp_addr_answer(epoch=50), GW, 0.02)
    assert drain(c) == [MappingGranted("natpmp", "tcp", 40000, (EXT, 40000), 3600, False)]
    # Deletion: lifetime 0 and external port 0 (RFC 6886 §3.4).
    c.unmap("tcp", 40000, 1.0)
    (d, _), = c.datagrams_to_send(1.0)
    assert d == encode_natpmp_map_request("tcp", 40000, 0, 0)


def test_natpmp_renewal_notices_a_new_external_address() -> None:
    c = PortMapClient(GW, ME, methods=("natpmp",))
    c.map("udp", 40000, 120, 0.0)
    c.datagrams_to_send(0.0)
    c.receive_datagram(natpmp_addr_answer(epoch=10), GW, 0.0)
    c.receive_datagram(natpmp_map_answer(1, 40000, 40000, 120, epoch=10), GW, 0.0)
    assert [e.external for e in drain(c)] == [(EXT, 40000)]
    c.handle_timer(60.0)
    sent = sorted(d for d, _ in c.datagrams_to_send(60.0))
    assert sent == [b"\x00\x00", encode_natpmp_map_request("udp", 40000, 40000, 120)]
    c.receive_datagram(natpmp_addr_answer("11.9.0.7", epoch=70), GW, 60.0)
    c.receive_datagram(natpmp_map_answer(1, 40000, 40000, 120, epoch=70), GW, 60.0)
    evs = drain(c)
    assert evs and all(isinstance(e, MappingGranted) and e.renewal for e in evs)
    assert evs[-1].external == ("11.9.0.7", 40000)
    assert c.mappings == {("udp", 40000): ("11.9.0.7", 40000)} and c.restarts == 0


def test_silent_pcp_then_natpmp_then_failure() -> None:
    c = PortMapClient(GW, ME, pcp_irt=1.0, pcp_mrc=2, natpmp_tries=2)
    c.map("udp", 40000, 3600, 0.0)
    sent = run_clock(c, 60.0)
    versions = [d[0] for _, d in sent]
    assert versions[:2] == [2, 2] and set(versions[2:]) == {0}
    (ev,) = drain(c)
    assert isinstance(ev, MappingFailed) and ev.method == "natpmp"


def test_refusal_reports_the_result_code() -> None:
    c = PortMapClient(GW, ME, pcp_mrc=3)
    c.map("udp", 40000, 3600, 0.0, nonce=NONCE)
    c.datagrams_to_send(0.0)
    c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 0, 0, result=2), GW, 0.1)
    (ev,) = drain(c)
    assert isinstance(ev, MappingFailed) and ev.result == 2 and "NOT_AUTHORIZED" in ev.reason


def test_gateway_restart_maps_again_at_once() -> None:
    c = PortMapClient(GW, ME, pcp_mrc=3)
    c.map("udp", 40000, 3600, 0.0, nonce=NONCE)
    c.datagrams_to_send(0.0)
    c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 40000, 3600, epoch=1000), GW, 0.0)
    drain(c)
    # An unrelated answer 100 s later whose epoch says the box rebooted
    # (epoch 5): the mapping is asked for again now, not at 1800 s.
    c.map("tcp", 40000, 3600, 100.0, nonce=bytes(12))
    c.datagrams_to_send(100.0)
    c.receive_datagram(pcp_map_answer(bytes(12), 6, 40000, 40000, 3600, epoch=5), GW, 100.0)
    assert c.restarts == 1
    c.handle_timer(100.0)
    again = [d for d, _ in c.datagrams_to_send(100.0)]
    assert [d[24:36] for d in again] == [NONCE]
    # A consistent epoch is no restart.
    c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 40000, 3600, epoch=6), GW, 101.0)
    assert c.restarts == 1


def test_unanswered_renewals_end_with_the_lifetime() -> None:
    c = PortMapClient(GW, ME, pcp_irt=1.0)
    c.map("udp", 40000, 100, 0.0, nonce=NONCE)
    c.datagrams_to_send(0.0)
    c.receive_datagram(pcp_map_answer(NONCE, 17, 40000, 40000, 100), GW, 0.0)
    drain(c)
    sent = run_clock(c, 200.0)
    assert sent and all(50.0 <= t < 100.0 for t, _ in sent[1:])
    (ev,) = drain(c)
    assert isinstance(ev, MappingFailed) and ev.reason == "lifetime ended"
    assert c.mappings == {}


# -- default gateway -------------------------------------------------------------


def test_default_gateway_from_proc_net_route(tmp_path: Any) -> None:
    route = tmp_path / "route"
    route.write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n"
        "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    assert default_gateway(str(route)) == "10.0.0.1"
    route.write_text("Iface\tDestination\tGateway\n")
    assert default_gateway(str(route)) is None
    assert default_gateway(str(tmp_path / "absent")) is None


# -- a fake gateway on loopback ---------------------------------------------------


class FakeGateway(asyncio.DatagramProtocol):
    """PCP and NAT-PMP on loopback, after RFC 6886/6887: ``mode`` "pcp"
    (both), "natpmp" (answers version 2 with "unsupported version") or
    "silent". Lifetimes are capped at ``max_lifetime``."""

    def __init__(self, mode: str = "pcp", max_lifetime: int = 3600) -> None:
        self.mode = mode
        self.max_lifetime = max_lifetime
        self.t0 = time.monotonic()
        self.mappings: dict[tuple[str, int], tuple[int, int]] = {}
        self.log: list[tuple[float, int, str, int, int]] = []  # time, version, proto, port, life
        self.versions: set[int] = set()  # of every request, answered or not
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def epoch(self) -> int:
        return int(time.monotonic() - self.t0) + 1000

    def _grant(self, proto: str, iport: int, want: int, life: int) -> tuple[int, int]:
        if life == 0:
            self.mappings.pop((proto, iport), None)
            return 0, 0
        life = min(life, self.max_lifetime)
        self.mappings[(proto, iport)] = (want or iport, life)
        return want or iport, life

    def datagram_received(self, data: bytes, addr: Any) -> None:
        assert self.transport is not None
        now = time.monotonic() - self.t0
        self.versions.add(data[0])
        if self.mode == "silent":
            return
        if data[0] == 2 and self.mode == "natpmp":
            # RFC 6886 §3.5 as corrected by erratum 3618: opcode 128.
            self.transport.sendto(struct.pack("!BBHI", 0, 128, 1, self.epoch()), addr)
            return
        if data[0] == 2:
            life = struct.unpack("!I", data[4:8])[0]
            nonce, proto, iport, want = data[24:36], data[36], *struct.unpack("!HH", data[40:44])
            name = "udp" if proto == 17 else "tcp"
            self.log.append((now, 2, name, iport, life))
            assert data[8:24] == v4mapped(addr[0]), "PCP client address is not the source"
            eport, granted = self._grant(name, iport, want, life)
            answer = pcp_map_answer(nonce, proto, iport, eport, granted, epoch=self.epoch(),
                                    ext="11.9.0.2")  # fmt: skip
            self.transport.sendto(answer, addr)
            return
        if data[1] == 0:
            self.transport.sendto(natpmp_addr_answer(epoch=self.epoch()), addr)
            return
        iport, want, life = struct.unpack("!HHI", data[4:12])
        name = "udp" if data[1] == 1 else "tcp"
        self.log.append((now, 0, name, iport, life))
        eport, granted = self._grant(name, iport, want, life)
        self.transport.sendto(
            natpmp_map_answer(data[1], iport, eport, granted, epoch=self.epoch()), addr
        )


OPEN: list[FakeGateway] = []


async def fake_gateway(mode: str = "pcp", max_lifetime: int = 3600) -> FakeGateway:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: FakeGateway(mode, max_lifetime), local_addr=("127.0.0.1", 0)
    )
    OPEN.append(proto)
    return proto


def close_gateways() -> None:
    while OPEN:
        t = OPEN.pop().transport
        if t is not None:
            t.close()


def run(coro: Any, timeout: float = 30.0) -> Any:
    async def main() -> Any:
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            close_gateways()
            await asyncio.sleep(0)

    return asyncio.run(main())


PORTS = [("udp", ("0.0.0.0", 40000)), ("tcp", ("127.0.0.1", 40000))]


@pytest.mark.parametrize(("mode", "method"), [("pcp", "pcp"), ("natpmp", "natpmp")])
def test_driver_maps_renews_and_deletes(mode: str, method: str) -> None:
    async def main() -> None:
        gw = await fake_gateway(mode, max_lifetime=2)
        m = GatewayMapper(PORTS, lease=3600, gateway="127.0.0.1", server_port=gw.port)
        m.start()
        st = await m.wait_ready(5)
        assert st.state == "mapped" and st.method == method, st
        assert st.external_ip == EXT and st.control_url == f"{method}://127.0.0.1:{gw.port}"
        got = {(x.protocol, x.internal, x.external, x.lease, x.method) for x in st.mappings}
        assert got == {
            ("udp", ("127.0.0.1", 40000), (EXT, 40000), 2, method),
            ("tcp", ("127.0.0.1", 40000), (EXT, 40000), 2, method),
        }
        assert set(gw.mappings) == {("udp", 40000), ("tcp", 40000)}
        await asyncio.sleep(2.6)
        # Granted 2 s: renewed every 1 s, so the gateway never saw it lapse.
        udp = [t for t, _, proto, _, life in gw.log if proto == "udp" and life]
        assert len(udp) >= 3 and all(b - a < 1.3 for a, b in itertools.pairwise(udp))
        assert m.status.state == "mapped"
        await m.close()
        assert gw.mappings == {} and m.status.state == "closed"
        assert m.unconfirmed_deletions == 0

    run(main())


def test_driver_maps_again_after_losing_a_mapping() -> None:
    """The gateway goes quiet past a 2 s lifetime: the mapping is lost
    (renewals unanswered), then asked for again once it answers."""

    async def main() -> None:
        gw = await fake_gateway("pcp", max_lifetime=2)
        m = GatewayMapper(PORTS[:1], gateway="127.0.0.1", server_port=gw.port, pcp_irt=0.2,
                          retry_after=0.5)  # fmt: skip
        m.start()
        assert (await m.wait_ready(5)).state == "mapped"
        gw.mode = "silent"
        await asyncio.sleep(2.5)
        assert m.status.mappings == () and "lifetime ended" in (m.status.error or "")
        gw.mode = "pcp"
        for _ in range(40):
            await asyncio.sleep(0.1)
            if m.status.mappings:
                break
        assert [x.external for x in m.status.mappings] == [(EXT, 40000)]
        await m.close()
        assert gw.mappings == {}

    run(main())


def test_driver_knows_at_once_when_nothing_listens() -> None:
    """A gateway without PCP/NAT-PMP answers ICMP port unreachable: known
    in one round trip, not after the retransmission schedule."""

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            closed_port = s.getsockname()[1]
        m = GatewayMapper(PORTS[:1], gateway="127.0.0.1", server_port=closed_port)
        t0 = time.monotonic()
        m.start()
        st = await m.wait_ready(10)
        assert time.monotonic() - t0 < 1.0
        assert st.state == "unavailable" and "port unreachable" in (st.error or ""), st
        await m.close()

    run(main())


def test_driver_gives_up_on_a_silent_gateway() -> None:
    async def main() -> None:
        gw = await fake_gateway("silent")
        m = GatewayMapper(PORTS[:1], gateway="127.0.0.1", server_port=gw.port, pcp_irt=0.1,
                          pcp_mrc=2, natpmp_tries=2)  # fmt: skip
        m.start()
        st = await m.wait_ready(10)
        assert st.state == "unavailable" and "timeout" in (st.error or "")
        assert gw.versions == {2, 0}  # tried PCP, then NAT-PMP
        await m.close()

    run(main())


# -- the port mapper: UPnP first, then PCP, then NAT-PMP --------------------------


@pytest.fixture
def no_upnp_gateway(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """miniupnpc replaced by one that finds no device (and sends nothing)."""

    class NoDevice:
        discoverdelay = 0
        multicastif = ""
        lanaddr = "127.0.0.1"

        def discover(self) -> int:
            return 0

    mod = types.ModuleType("miniupnpc")
    mod.UPnP = NoDevice  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "miniupnpc", mod)
    yield


def test_port_mapper_falls_back_from_upnp_to_pcp(no_upnp_gateway: None) -> None:
    async def main() -> None:
        gw = await fake_gateway("pcp")
        m = PortMapper(PORTS[:1], methods=("natpmp", "upnp", "pcp"), gateway="127.0.0.1",
                       gateway_port=gw.port)  # fmt: skip
        assert m.methods == ("upnp", "pcp", "natpmp")
        m.start()
        st = await m.wait_ready(10)
        assert st.state == "mapped" and st.method == "pcp"
        assert [x.method for x in m.mappings] == ["pcp"]
        await m.close()
        assert gw.mappings == {} and m.status.state == "closed"

    run(main())


def test_port_mapper_reports_every_protocol_that_failed(no_upnp_gateway: None) -> None:
    async def main() -> None:
        gw = await fake_gateway("silent")
        m = PortMapper(PORTS[:1], methods=("upnp", "pcp"), gateway="127.0.0.1",
                       gateway_port=gw.port)  # fmt: skip
        assert m._fallback is None
        m.start()
        st = await m.wait_ready(30)
        assert st.state == "unavailable" and st.method is None
        error = st.error or ""
        assert error.startswith("UPnP: ") and "no UPnP device" in error
        assert "pcp udp 40000: timeout" in error
        assert gw.versions == {2}  # NAT-PMP was not asked for
        await m.close()

    run(main(), timeout=60)


def test_port_mapper_rejects_unknown_methods() -> None:
    with pytest.raises(ValueError, match="methods"):
        PortMapper(PORTS, methods=("upnp", "igdv3"))


# -- the service -------------------------------------------------------------------


def test_service_maps_by_pcp_and_says_so() -> None:
    from crust import PortMapped, Service

    async def main() -> None:
        gw = await fake_gateway("pcp")
        cfg = ServiceConfig(hosts=("0.0.0.0",), port=0, natpmp=True, beacon=False,
                            gossip=False, backup_port=False,
                            natpmp_gateway=f"127.0.0.1:{gw.port}")  # fmt: skip
        svc = Service(cfg)
        events = svc.events(messages=False)
        await svc.start()
        try:
            assert svc.upnp is not None
            st = await svc.upnp.wait_ready(10)
            (_, port), = {tuple(e) for e in svc.endpoints}
            assert st.method == "pcp" and svc.mapped_addresses == [(EXT, port)]
            seen: list[PortMapped] = []
            async for ev in events:
                if isinstance(ev, PortMapped):
                    seen.append(ev)
                    if len(seen) == 2:
                        break
            assert {(e.protocol, e.external, e.method) for e in seen} == {
                ("udp", (EXT, port), "pcp"), ("tcp", (EXT, port), "pcp"),
            }  # fmt: skip
            assert set(gw.mappings) == {("udp", port), ("tcp", port)}
        finally:
            await svc.close()
        assert gw.mappings == {}

    run(main())


def test_config_natpmp_gateway() -> None:
    assert ServiceConfig(natpmp_gateway="10.0.0.1").natpmp_gateway_address() == ("10.0.0.1", 5351)
    assert ServiceConfig(natpmp_gateway="10.0.0.1:99").natpmp_gateway_address() == ("10.0.0.1", 99)
    assert ServiceConfig().natpmp_gateway_address() == (None, 5351)
    for bad in ("gateway.lan", "10.0.0.1:0", "10.0.0.1:x"):
        with pytest.raises(ConfigError, match="natpmp_gateway"):
            ServiceConfig(natpmp_gateway=bad)


# -- crust nat -----------------------------------------------------------------------


def test_crust_nat_names_the_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    from crust.cli import main as cli_main

    loop = asyncio.new_event_loop()
    gw = loop.run_until_complete(fake_gateway("natpmp"))
    stop = asyncio.Event()

    import threading

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(stop.wait())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        args = ["nat", "--no-upnp", "--gateway", f"127.0.0.1:{gw.port}"]
        assert cli_main([*args, "--json"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["port_mapping"] == "natpmp" and r["natpmp"]["method"] == "natpmp"
        assert r["natpmp"]["trial_mapping"]["removed"] is True
        assert "NAT-PMP works" in r["verdict"]
        assert cli_main(args) == 0
        text = capsys.readouterr().out
        assert f"NAT-PMP: gateway 127.0.0.1:{gw.port}" in text
        assert "port mapping: by NAT-PMP" in text
        assert cli_main(["nat", "--no-upnp", "--gateway", "nowhere"]) == 2
    finally:
        loop.call_soon_threadsafe(close_gateways)
        loop.call_soon_threadsafe(stop.set)
        t.join(5)
        loop.close()
    assert gw.mappings == {}
