"""Control messages: the service's own traffic between connected peers
(gossip, rendezvous, relay) shares the connection with application data
but never reaches the application, and bad ones are counted, not fatal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crust import Identity, NewMessage, NewPeer, PeerMisbehaving, Service, ServiceConfig
from crust.control import MAX_CONTROL_PAYLOAD, ControlKind, decode, encode
from crust.errors import ConnectionClosed
from crust.peer import Peer

#: A kind no crust subsystem registers a handler for (the real kinds,
#: GOSSIP included, are taken by the service itself).
TEST_KIND = 250


def _cfg(**kw: Any) -> ServiceConfig:
    return ServiceConfig(hosts=("127.0.0.1",), identity=Identity.generate(), **kw)


async def _first(svc: Service, kind: type[Any], timeout: float = 10.0) -> Any:
    async def find() -> Any:
        async for ev in svc.events():
            if isinstance(ev, kind):
                return ev
        raise AssertionError("service closed")

    return await asyncio.wait_for(find(), timeout)


def test_codec_round_trip_and_limits() -> None:
    assert decode(encode(ControlKind.RELAY, b"abc")) == (ControlKind.RELAY, b"abc")
    with pytest.raises(ValueError, match="kind"):
        encode(0, b"")
    with pytest.raises(ValueError, match="limit"):
        encode(ControlKind.GOSSIP, bytes(MAX_CONTROL_PAYLOAD + 1))
    with pytest.raises(ValueError, match="empty"):
        decode(b"")


@pytest.mark.parametrize("only", [{"udp": False}, {"tcp": False}], ids=["tcp", "udp"])
def test_control_reaches_handler_not_application(only: dict[str, bool]) -> None:
    async def main() -> None:
        got: list[tuple[Peer, bytes]] = []
        arrived = asyncio.Event()

        def handler(peer: Peer, payload: bytes) -> None:
            got.append((peer, payload))
            arrived.set()

        async with Service(_cfg(**only)) as a, Service(_cfg(**only)) as b:
            b.on_control(TEST_KIND, handler)
            with pytest.raises(ValueError, match="already"):
                b.on_control(TEST_KIND, handler)
            peer_b = await a.connect(b.endpoints[0])
            new = await _first(b, NewPeer)
            # Data and control interleave on one connection, each in order.
            await peer_b.send(b"data-1")
            a.send_control(peer_b, TEST_KIND, b"ctl-1")
            await peer_b.send(b"data-2")
            a.send_control(peer_b, TEST_KIND, b"")
            data = [(await _first(b, NewMessage)).data for _ in range(2)]
            assert data == [b"data-1", b"data-2"]
            await asyncio.wait_for(arrived.wait(), 5)
            while len(got) < 2:
                await asyncio.sleep(0.01)
            assert [p for _, p in got] == [b"ctl-1", b""]
            assert got[0][0] is new.peer
            await a.disconnect(peer_b)
            with pytest.raises(ConnectionClosed):
                a.send_control(peer_b, TEST_KIND, b"late")

    asyncio.run(asyncio.wait_for(main(), 30))


def test_failing_handler_counts_as_misbehaviour_and_service_survives() -> None:
    async def main() -> None:
        def bad(peer: Peer, payload: bytes) -> None:
            raise ValueError("malformed gossip")

        async with Service(_cfg(misbehaving_threshold=3)) as a, Service(
            _cfg(misbehaving_threshold=3)
        ) as b:
            b.on_control(TEST_KIND, bad)
            peer_b = await a.connect(b.endpoints[0])
            for _ in range(3):
                a.send_control(peer_b, TEST_KIND, b"x")
            # An unknown kind is ignored (a newer peer), not misbehaviour.
            a.send_control(peer_b, 200, b"future")
            ev = await _first(b, PeerMisbehaving)
            assert ev.peer_id == a.id and ev.failures == 3
            await peer_b.send(b"still fine")
            assert (await _first(b, NewMessage)).data == b"still fine"

    asyncio.run(asyncio.wait_for(main(), 30))
