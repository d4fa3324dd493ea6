"""Two nodes dialling each other at once end with one connection each way
that both sides keep: the Peer objects connect() returned stay connected."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

import pytest
from test_service_stress import _Rebinder

import crust
from crust import Identity, LostPeer, NewMessage, NewPeer, Service, ServiceConfig
from crust.handshake import Initiator
from crust.peer import now_us


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


def test_one_node_dialling_a_peer_twice_at_once_keeps_one_connection() -> None:
    """A node that dials the same peer twice at once (by address, XX, and by
    id, IK: what a gossip dial does while the application's own is in
    flight) makes two connections with the same initiator. Each end
    completes them in its own order; both must end up using the same one,
    and no side may lose the peer when the other retires the spare (seen in
    the 100-node mesh: both ends lost each other, a message never came)."""

    async def main() -> None:
        for trial in range(12):
            async with Service(_cfg(tcp=False)) as a, Service(_cfg(tcp=False)) as b:
                lost: list[LostPeer] = []
                got: dict[str, list[bytes]] = {"a": [], "b": []}

                async def watch(
                    svc: Service, into: list[bytes], lost: list[LostPeer] = lost
                ) -> None:
                    async for ev in svc.events():
                        if isinstance(ev, LostPeer):
                            lost.append(ev)
                        elif isinstance(ev, NewMessage):
                            into.append(ev.data)

                watchers = [
                    asyncio.create_task(watch(a, got["a"])),
                    asyncio.create_task(watch(b, got["b"])),
                ]
                by_addr = a.connect(b.endpoints[0])
                by_id = a.connect(b.endpoints[0], peer_id=b.id)
                first, second = (by_addr, by_id) if trial % 2 else (by_id, by_addr)
                p1, p2 = await asyncio.gather(first, second)
                assert p1 is p2, (p1, p2)
                # Past every retirement timer (crust.node._RETIRE_WAIT,
                # crust.retirement.RETIRE_WAIT) and the XX finish linger.
                await asyncio.sleep(0.5 if trial else 11.0)
                assert p1.is_connected, (trial, p1.closed_reason)
                assert len(a.peers) == 1 and len(b.peers) == 1, (trial, a.peers, b.peers)
                pb = b.peers[0]
                assert pb.is_connected, (trial, pb)
                await p1.send(b"to b")
                await pb.send(b"to a")
                for _ in range(500):
                    if got["a"] and got["b"]:
                        break
                    await asyncio.sleep(0.01)
                assert got == {"a": [b"to a"], "b": [b"to b"]}, (trial, got, p1, pb)
                assert not lost, (trial, lost)
                for w in watchers:
                    w.cancel()

    asyncio.run(asyncio.wait_for(main(), 120))


class _Recorder(_Rebinder):
    """test_service_stress's NAT in miniature, keeping the first datagram
    its client sent (a handshake initiation) for replaying."""

    def __init__(self, server: tuple[str, int]) -> None:
        super().__init__(server)
        self.first: bytes | None = None

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.first is None:
            self.first = data
        super().datagram_received(data, addr)


def test_a_replayed_initiation_cannot_take_over_a_live_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An attacker on the path replays a peer's IK initiation once the
    responder forgot it (15 s): the responder completes a second handshake
    with the same initiator. It stands by beside the live connection (at
    most one per peer) and, since the peer neither retires nor closes the
    live one, is let go after the standby wait; the live connection
    carries on untouched."""
    import crust.node

    monkeypatch.setattr(crust.node, "_STANDBY_WAIT", 1.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with Service(_cfg(tcp=False)) as a, Service(_cfg(tcp=False)) as b:
            _, rec = await loop.create_datagram_endpoint(
                lambda: _Recorder(b.endpoints[0]), local_addr=("127.0.0.1", 0)
            )
            await rec.rebind()  # its outside socket
            assert rec.inside is not None and rec.outside is not None
            proxy = rec.inside.get_extra_info("sockname")
            pa = await a.connect(proxy[:2], peer_id=b.id)
            a.maintain(pa)
            pb = b.peers[0]
            b.maintain(pb)
            assert rec.first is not None
            await asyncio.sleep(15.5)  # past the responder's memory of it
            rec.outside.sendto(rec.first, b.endpoints[0])  # the replay
            for _ in range(100):
                if b.stats()["live"]["standby"]:
                    break
                await asyncio.sleep(0.01)
            assert b.stats()["live"]["standby"] == 1, b.stats()["live"]
            assert b.peers == [pb] and pb.is_connected
            await asyncio.sleep(1.5)  # past the (shortened) standby wait
            assert b.stats()["live"]["standby"] == 0
            assert b.peers == [pb] and pb.is_connected and pa.is_connected
            await pa.send(b"still here")
            assert (await asyncio.wait_for(pb.recv(), 5)).data == b"still here"
            rec.outside.close()
            rec.inside.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def _abandoned_ik_dial(
    dialler: Identity, network: str, to: tuple[str, int], remote: crust.PeerId
) -> None:
    """One IK initiation under ``dialler``'s identity, then nothing: a dial
    given up after its first datagram (timed out, or refused its
    retransmission by the reflection budget)."""
    ini = Initiator(dialler, network, remote=remote, local_cid=os.urandom(8), now=now_us())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for d in ini.datagrams_to_send(now_us()):
            s.sendto(d, to)


def _small_and_large() -> tuple[Identity, Identity]:
    a, b = sorted((Identity.generate() for _ in range(2)), key=lambda i: bytes(i.peer_id))
    return a, b


def test_an_abandoned_ik_dial_does_not_displace_a_working_connection() -> None:
    """An IK responder holds its connection one message before the dialler,
    which may still give it up: the responder must not switch a working
    connection to that one, though the rule of 0025 prefers it (the smaller
    initiator id). Seen in the 100-node mesh: a gossip dial given up after
    its first initiation; the responder moved the peer to a connection
    nobody else held, and its messages never left."""
    small, large = _small_and_large()  # the dialler's id is the smaller: it "wins"

    async def main() -> None:
        cfg_a = _cfg(tcp=False).replace(identity=large)
        cfg_b = _cfg(tcp=False).replace(identity=small)
        async with Service(cfg_a) as a, Service(cfg_b) as b:
            pa = await a.connect(b.endpoints[0], peer_id=b.id)  # initiator: a (larger id)
            a.maintain(pa)
            await asyncio.sleep(0.2)
            pb = b.peers[0]
            _abandoned_ik_dial(small, cfg_b.network, a.endpoints[0], a.id)
            for _ in range(100):
                if a.stats()["live"]["standby"]:
                    break
                await asyncio.sleep(0.01)
            await pa.send(b"after the abandoned dial")
            got = await asyncio.wait_for(pb.recv(), 5)
            assert got.data == b"after the abandoned dial"
            assert pa.is_connected and pb.is_connected and a.peers == [pa]
            assert a.stats()["live"]["standby"] == 1, a.stats()["live"]

    asyncio.run(asyncio.wait_for(main(), 60))


@pytest.mark.parametrize("by", ["address", "id"])
def test_a_connect_after_an_abandoned_ik_dial_gets_a_working_peer(by: str) -> None:
    """The other order: the abandoned IK dial came first, so the responder
    has a peer on a connection its dialler never held; the application's
    connect() must still give it a working peer (it returned that one, by
    id, or kept it against its own dial, by address, and the message sat
    there until the idle timeout: the rest of the 100-node flake)."""
    small, large = _small_and_large()

    async def main() -> None:
        cfg_a = _cfg(tcp=False).replace(identity=large)
        cfg_b = _cfg(tcp=False).replace(identity=small)
        async with Service(cfg_a) as a, Service(cfg_b) as b:
            _abandoned_ik_dial(small, cfg_b.network, a.endpoints[0], a.id)
            for _ in range(200):
                if a.peers:
                    break
                await asyncio.sleep(0.01)
            assert [p.id for p in a.peers] == [b.id]
            pid = b.id if by == "id" else None
            pa = await a.connect(b.endpoints[0], peer_id=pid)
            await pa.send(b"hello")
            for _ in range(500):
                if b.peers:
                    break
                await asyncio.sleep(0.01)
            pb = b.peers[0]
            got = await asyncio.wait_for(pb.recv(), 5)
            assert got.data == b"hello"
            assert pa.is_connected and pb.is_connected and a.peers == [pa]

    asyncio.run(asyncio.wait_for(main(), 60))
