"""Two nodes dialling each other at once end with one connection each way
that both sides keep: the Peer objects connect() returned stay connected."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from crust import Identity, LostPeer, NewMessage, NewPeer, Service, ServiceConfig


def _cfg(**kw: Any) -> ServiceConfig:
    return ServiceConfig(
        hosts=("127.0.0.1",), identity=Identity.generate(), cache_size=0, beacon=False, **kw
    )


@pytest.mark.parametrize("only", [{"udp": False}, {"tcp": False}, {}], ids=["tcp", "udp", "both"])
def test_simultaneous_connects_keep_the_returned_peers(only: dict[str, bool]) -> None:
    async def main() -> None:
        for _ in range(10):
            async with Service(_cfg(**only)) as a, Service(_cfg(**only)) as b:
                pa, pb = await asyncio.gather(a.connect(b.endpoints[0]), b.connect(a.endpoints[0]))
                await asyncio.sleep(0.3)  # let duplicates settle
                assert pa.is_connected and pb.is_connected, (pa.closed_reason, pb.closed_reason)
                assert a.peers == [pa] and b.peers == [pb]
                await pa.send(b"ping")
                async for ev in b.events():
                    assert not isinstance(ev, LostPeer), ev
                    if getattr(ev, "data", None) == b"ping":
                        break

    asyncio.run(asyncio.wait_for(main(), 120))



@pytest.mark.parametrize("only", [{"udp": False}, {"tcp": False}], ids=["tcp", "udp"])
def test_messages_sent_while_duplicates_resolve_all_arrive(only: dict[str, bool]) -> None:
    """Each side sends as soon as it hears of the other (its NewPeer, often
    from the other's dial), before the two connections are resolved into
    one: messages that travel on the connection that loses are delivered
    too (they were dropped when the loser was retired before they came)."""

    async def side(svc: Service, name: bytes, want: int) -> list[bytes]:
        got: list[bytes] = []
        sending: list[asyncio.Task[None]] = []

        async def send(peer: Any) -> None:
            for i in range(want):
                await peer.send(name + b"%d" % i)
                if i % 5 == 4:
                    await asyncio.sleep(0.005)  # spread over the switch

        async for ev in svc.events():
            assert not isinstance(ev, LostPeer), ev
            if isinstance(ev, NewPeer) and not sending:
                sending.append(asyncio.create_task(send(ev.peer)))
            elif isinstance(ev, NewMessage):
                got.append(ev.data)
                if len(got) == want:
                    break
        await asyncio.gather(*sending)
        return got

    async def main() -> None:
        for _ in range(10):
            async with Service(_cfg(**only)) as a, Service(_cfg(**only)) as b:
                got_a = asyncio.create_task(side(a, b"a", 20))
                got_b = asyncio.create_task(side(b, b"b", 20))
                # By id, as discovery dials: the IK handshake, whose
                # responder holds the connection first.
                await asyncio.gather(
                    a.connect(b.endpoints[0], peer_id=b.id),
                    b.connect(a.endpoints[0], peer_id=a.id),
                )
                done = await asyncio.wait_for(asyncio.gather(got_a, got_b), 10.0)
                assert sorted(done[0]) == sorted(b"b%d" % i for i in range(20))
                assert sorted(done[1]) == sorted(b"a%d" % i for i in range(20))

    asyncio.run(asyncio.wait_for(main(), 120))
