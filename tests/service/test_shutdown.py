"""Shutdown: from the moment close() starts no new peer is accepted, every
peer gets a close, and close() ends within a bounded time (issue 22)."""

from __future__ import annotations

import asyncio
import time

import pytest

from crust import Identity, LostPeer, NewPeer, Service, ServiceConfig
from crust.service import CLOSE_WAIT


def config(**kw: object) -> ServiceConfig:
    return ServiceConfig(
        hosts=("127.0.0.1",),
        identity=Identity.generate(),
        beacon=False,
        cache_size=0,
        gossip=False,
        **kw,  # type: ignore[arg-type]
    )


def freeze(svc: Service) -> None:
    """``svc`` stops reading its sockets (a process stopped, say): it
    acknowledges nothing and answers no close."""
    for link in svc.tcp_links:
        if link.transport is not None:
            link.transport.pause_reading()
    loop = asyncio.get_running_loop()
    for ul in svc._udp:
        loop.remove_reader(ul.sock.fileno())


TRANSPORTS = [
    pytest.param({"udp": False}, id="tcp"),
    pytest.param({"tcp": False}, id="udp"),
    pytest.param({}, id="both"),
]


@pytest.mark.parametrize("only", TRANSPORTS)
def test_a_client_reconnecting_during_close_is_refused(only: dict[str, bool]) -> None:
    async def main() -> None:
        node = Service(config(**only))
        await node.start()
        address = node.endpoints[0]
        # A frozen peer with data queued for it keeps the node inside
        # close() for CLOSE_WAIT.
        ghost = Service(config(**only))
        await ghost.start()
        await ghost.connect(address)
        freeze(ghost)
        await asyncio.sleep(0.1)
        (ghost_at_node,) = node.peers
        sending = asyncio.create_task(ghost_at_node.send(bytes(6 << 20)))
        async with Service(config(**only)) as client:
            await client.connect(address)
            seen: list[object] = []

            async def watch(svc: Service) -> None:
                async for ev in svc.events():
                    seen.append(ev)

            at_node: list[object] = []

            async def watch_node() -> None:
                async for ev in node.events():
                    at_node.append(ev)

            watchers = [asyncio.create_task(watch(client)), asyncio.create_task(watch_node())]
            await asyncio.sleep(0.05)  # the node's watcher saw what came before
            before = len(at_node)
            t0 = time.monotonic()
            closing = asyncio.create_task(node.close())
            lost = None
            while lost is None:
                await asyncio.sleep(0.005)
                lost = next((e for e in seen if isinstance(e, LostPeer)), None)
                assert time.monotonic() - t0 < 5, "the client was never told"
            assert lost.reason == "service shut down", lost
            assert not closing.done(), "close() should still wait for the vanished peer"
            # The client reconnects at once, while the node is inside close().
            with pytest.raises(ConnectionError):
                await client.connect(address, timeout=1.0)
            await closing
            elapsed = time.monotonic() - t0
            assert elapsed < CLOSE_WAIT + 2.0, f"close() took {elapsed:.1f} s"
            new_at_node = [e for e in at_node[before:] if isinstance(e, NewPeer)]
            assert not new_at_node, "the node accepted a peer while closing"
            assert client.peers == []
            for w in watchers:
                w.cancel()
        sending.cancel()
        await ghost.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_connect_fails_once_close_started() -> None:
    async def main() -> None:
        async with Service(config()) as far:
            node = Service(config())
            await node.start()
            closing = asyncio.create_task(node.close())
            await asyncio.sleep(0)
            with pytest.raises(Exception, match="not running"):
                await node.connect(far.endpoints[0])
            await closing

    asyncio.run(asyncio.wait_for(main(), 30))
