"""Connection caps (issue 15, design note 0043): peers from many addresses
fill a node; it keeps at most ``max_connections`` in all and
``max_connections_per_source`` per source, the least recently used
incoming unmaintained peer gives way, and maintained peers and peers it
dialled are never the ones evicted.

Against 57f4858 there was no cap at all: every authenticated connection
was kept (each with its engine buffers, design 0040).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from crust import LostPeer, NewPeer, Service

from .tools import Recorder, figure, node, run

TOTAL, PER_SOURCE = 8, 3


@contextlib.asynccontextmanager
async def nodes(hosts: list[str], **kw: Any) -> AsyncIterator[list[tuple[Service, Recorder]]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(node(hosts=(h,), beacon=False, **kw)) for h in hosts
        ]


def test_caps_hold_and_maintained_peers_stay() -> None:
    async def main() -> None:
        kw: dict[str, Any] = {"max_connections": TOTAL, "max_connections_per_source": PER_SOURCE}
        async with (
            node(beacon=False, **kw) as (victim, rv),
            nodes(["127.0.0.3", "127.0.0.4"]) as ((dialled, _), (friend, _)),
        ):
            target = victim.endpoints[0]
            # One peer the victim dialled and one incoming it maintains.
            out_peer = await victim.connect(dialled.endpoints[0])
            await friend.connect(target)
            ev = await rv.wait(NewPeer, lambda ev: ev.peer.id == friend.id)
            victim.maintain(ev.peer)
            # Six peers from one address: the cap per source holds.
            async with nodes(["127.0.0.2"] * 6) as same:
                for s, _ in same:
                    await s.connect(target)
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
                from_2 = [p for p in victim.peers if p.address[0] == "127.0.0.2"]
                assert len(from_2) == PER_SOURCE
                # Twelve more from twelve addresses: the total holds.
                async with nodes([f"127.0.1.{i}" for i in range(1, 13)]) as many:
                    for s, _ in many:
                        await s.connect(target)
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(0.3)
                    assert len(victim.peers) == TOTAL
                    # The newest made room, the oldest unprotected ones left.
                    ids = {p.id for p in victim.peers}
                    assert {many[-1][0].id, many[-2][0].id} <= ids
                    assert out_peer.is_connected and friend.id in ids and dialled.id in ids
                    lost = rv.of(LostPeer)
                    assert lost and all(ev.reason.startswith("connection limit") for ev in lost)
                    assert {ev.peer.id for ev in lost}.isdisjoint({friend.id, dialled.id})
                    st = victim.stats()["connections"]
                    # (Refusals happen too: discovery redials evicted
                    # peers, and with every slot taken by protected peers
                    # those dials are refused.)
                    assert st["evicted_full"] == len(lost)

    run(main(), timeout=90)


def test_a_full_node_of_protected_peers_refuses_newcomers() -> None:
    async def main() -> None:
        async with (
            node(beacon=False, max_connections=2) as (victim, rv),
            nodes(["127.0.0.3", "127.0.0.4", "127.0.0.5"]) as ((a, _), (b, _), (c, rc)),
        ):
            for s in (a, b):
                await s.connect(victim.endpoints[0])
                ev = await rv.wait(NewPeer, lambda ev, s=s: ev.peer.id == s.id)
                victim.maintain(ev.peer)
            with contextlib.suppress(ConnectionError):
                await c.connect(victim.endpoints[0])
            await rc.wait(LostPeer, lambda ev: ev.peer.id == victim.id, timeout=5)
            assert {p.id for p in victim.peers} == {a.id, b.id}
            assert victim.stats()["connections"]["refused_full"] == 1

    run(main(), timeout=60)


def test_joining_does_not_make_a_stranger_untouchable() -> None:
    """Asking to be bootstrapped off (joining, design note 0053) is free,
    so it must not protect a connection from the caps: strangers who all
    joined still give way to a newcomer, and a peer that joined gives way
    only after those that did not. Against 8b6df56 a joined peer was
    maintained: two strangers who joined held a node of two, and every
    newcomer was refused."""

    async def main() -> None:
        async with (
            node(beacon=False, gossip=False, max_connections=2) as (victim, rv),
            nodes(["127.0.0.3", "127.0.0.4", "127.0.0.5"], gossip=False) as three,
        ):
            (a, _), (b, _), (c, _) = three
            for s in (a, b):
                peer = await s.connect(victim.endpoints[0])
                assert await s.discovery._ask_bootstrap(peer)  # joined: accepted
            await asyncio.sleep(0.1)
            with contextlib.suppress(ConnectionError):
                await c.connect(victim.endpoints[0])
            await asyncio.sleep(0.5)
            ids = {p.id for p in victim.peers}
            st = victim.stats()["connections"]
            done = f"newcomer refused {st['refused_full']} times, {st['evicted_full']} evicted"
            figure("two joined strangers fill a node of two", done)
            assert c.id in ids and len(ids) == 2
            assert all(p.joined and not p.maintained for p in victim.peers if p.id != c.id)
            assert st["evicted_full"] == 1 and st["refused_full"] == 0
            # Joined peers give way after plain incoming ones: c did not
            # join, so the next newcomer evicts c, not the joined one left.
            async with nodes(["127.0.0.6"], gossip=False) as ((d, _),):
                await d.connect(victim.endpoints[0])
                await rv.wait(NewPeer, lambda ev: ev.peer.id == d.id)
                await asyncio.sleep(0.3)
                ids = {p.id for p in victim.peers}
                assert c.id not in ids and d.id in ids and ids & {a.id, b.id}

    run(main(), timeout=60)
