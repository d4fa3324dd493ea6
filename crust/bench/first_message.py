"""The first message's round trip on fresh connections.

A fresh connection must carry its first message at once: its round trip
should take about one RTT plus processing, never a loss timer. Before issue
22, 5-15 % of new UDP connections waited ~1 s: the dialler's first data
packets shared a receive batch with its final handshake message, arrived
before their connection existed, and were dropped until retransmitted
(``docs/design/0036-holding-early-packets.md``).

:func:`first_message_rtts` dials ``n`` fresh connections (XX: the dialler
pins no peer id) from one client service to an echoing server in a child
process, sends one message on each as soon as it is connected, and times
its echo.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from crust.bench.procs import child
from crust.bench.service_path import service_config
from crust.events import NewMessage
from crust.service import Service

__all__ = ["first_message_rtts", "percentile"]


async def _echo(svc: Service) -> None:
    async for ev in svc.events():
        if isinstance(ev, NewMessage):
            await ev.peer.send(ev.data)


async def _collect(svc: Service, inbox: asyncio.Queue[bytes]) -> None:
    async for ev in svc.events():
        if isinstance(ev, NewMessage):
            inbox.put_nowait(ev.data)


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _server(pipe: Any, transport: str) -> None:
    async def main() -> None:
        async with Service(service_config(transport)) as server:
            task = asyncio.create_task(_echo(server))
            pipe.send(server.endpoints[0])
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, pipe.recv)  # told to stop
            task.cancel()

    asyncio.run(main())


async def first_message_rtts(n: int, size: int = 16 << 10, transport: str = "udp") -> list[float]:
    """Seconds from sending the first message on each of ``n`` fresh
    connections to receiving its echo. The echoing server runs in a child
    process, so its receive batches mix packets as a remote peer's would."""
    with child(_server, transport) as pipe:
        address = pipe.recv()
        client = Service(service_config(transport))
        await client.start()
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        task = asyncio.create_task(_collect(client, inbox))
        try:
            rtts: list[float] = []
            for i in range(n):
                peer = await client.connect(address)
                message = i.to_bytes(4, "big") + bytes(size - 4)
                t0 = time.perf_counter()
                await peer.send(message)
                echo = await asyncio.wait_for(inbox.get(), 10.0)
                rtts.append(time.perf_counter() - t0)
                if echo != message:
                    raise AssertionError(f"connection {i}: the echo is not the message sent")
                await client.disconnect(peer)
            return rtts
        finally:
            await client.close()
            task.cancel()
            pipe.send("stop")
