"""STUN on the service's own listening socket: the C endpoint hands STUN
messages up only when asked (``route_stun``), and a Service with
``stun_servers`` learns the live UDP port's reflexive address from them
while crust traffic on the same socket carries on."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from crust import Identity, NatDetected, NewMessage, Service, ServiceConfig, _core
from crust.nat.classify import Behaviour
from crust.nat.stun import decode, encode_binding_request, encode_binding_response


def _udp(blocking: bool = True) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(blocking)
    return s


@pytest.mark.parametrize("route", [False, True])
def test_endpoint_routes_stun_only_when_asked(route: bool) -> None:
    sock = _udp(blocking=False)
    ep = _core.Endpoint(sock, route_stun=route)
    with sock, _udp() as peer:
        stun = encode_binding_request(os.urandom(12))
        not_stun = bytearray(stun)
        not_stun[4] ^= 0xFF  # no magic cookie: plain junk
        for d in (stun, bytes(not_stun)):
            peer.sendto(d, sock.getsockname())
        deadline = time.monotonic() + 2
        got: list[bytes] = []
        while time.monotonic() < deadline and ep.stats()["rx_datagrams"] < 2:
            ep.drive(0)
            got += [d for d, _ in ep.unrouted()]
            time.sleep(0.005)
        got += [d for d, _ in ep.unrouted()]
        assert got == ([stun] if route else [])
        assert ep.stats()["rx_dropped_malformed"] == (1 if route else 2)
        ep.close()


@pytest.fixture
def stun_responder() -> Iterator[tuple[tuple[str, int], list[tuple[str, int]]]]:
    """A minimal STUN server on loopback (a thread): answers every binding
    request with the address it came from; records those addresses."""
    srv = _udp()
    srv.settimeout(0.05)
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = srv.recvfrom(2048)
            except TimeoutError:
                continue
            seen.append(addr)
            srv.sendto(encode_binding_response(decode(data).txid, addr), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield srv.getsockname(), seen
    finally:
        stop.set()
        t.join(2)
        srv.close()


def _cfg(**kw: object) -> ServiceConfig:
    return ServiceConfig(
        identity=Identity.generate(),
        beacon=False,
        gossip=False,
        cache_path=Path(tempfile.mkdtemp()) / "cache",
        **kw,  # type: ignore[arg-type]
    )


async def _until(svc: Service, kind: type) -> AsyncIterator[object]:
    """Events up to and including the first ``kind`` (only that one)."""
    async for ev in svc.events():
        if isinstance(ev, kind):
            yield ev
            return


def test_service_learns_its_listening_port_from_stun(
    stun_responder: tuple[tuple[str, int], list[tuple[str, int]]],
) -> None:
    (host, port), seen = stun_responder

    async def main() -> None:
        async with Service(_cfg(stun_servers=(f"{host}:{port}",))) as a, Service(_cfg()) as b:
            deadline = time.monotonic() + 5
            while a.nat is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert a.nat is not None
            live = a.endpoints[0]
            # No NAT on loopback: the reflexive address is the live socket.
            assert a.stun_addresses == [live] and a.nat.behind_nat is False
            assert a.nat.mapping is Behaviour.ENDPOINT_INDEPENDENT
            assert seen[0] == live
            detected = [ev async for ev in _until(a, NatDetected)]
            assert detected == [NatDetected((live,), "open", "endpoint-independent")]
            assert b.nat is None and b.stun_addresses == []
            # The same socket still carries crust traffic.
            peer = await b.connect(live)
            await peer.send(b"after stun")
            async for ev in a.events():
                if isinstance(ev, NewMessage):
                    assert ev.data == b"after stun"
                    break

    asyncio.run(asyncio.wait_for(main(), 20))


def test_unanswered_stun_server_costs_nothing_at_start_or_close() -> None:
    dead = _udp()

    async def main() -> None:
        host, port = dead.getsockname()
        t0 = time.monotonic()
        async with Service(_cfg(stun_servers=(f"{host}:{port}",))) as a:
            assert time.monotonic() - t0 < 1.0
            await asyncio.sleep(0.1)
            assert a.nat is None
            t1 = time.monotonic()
        assert time.monotonic() - t1 < 3.0

    with dead:
        asyncio.run(asyncio.wait_for(main(), 20))
