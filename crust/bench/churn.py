"""Connection churn: open and end connections every way, and watch memory.

A node that runs for weeks sees millions of connections come and go; each
must leave nothing behind. :func:`churn` runs ``cycles`` connections
between a long-lived server ``Service`` and clients in the same process
(one transport, one way of ending), then reports the resident set's growth
per connection after a warm-up (a least-squares slope over samples, so one
allocator step does not decide it) and the services' live-object counters
(``Service.stats()["live"]``) once everything has ended: both must come
back to where they started.

Ways of ending (:data:`ENDINGS`):

- ``disconnect``: the client calls ``Service.disconnect``;
- ``close``: a client ``Service`` per connection, closed with it;
- ``peer_gone``: a client per connection that vanishes without a word (its
  sockets closed under it): the server learns it from TCP, or from its
  idle timeout on UDP;
- ``pruned``: nobody uses the connection; the server prunes it
  (``prune_after``);
- ``handshake_failure``: the client dials pinning a peer id the server
  does not have, so the handshake never completes (both sides give up);
- ``duplicate``: both nodes dial each other at once; one of the two
  connections is retired (``crust.retirement``), then the other is closed.

Used by ``tests/service/test_churn.py`` (bounded) and ``crust bench --churn``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from crust.asyncio.tcp import TcpLink
from crust.bench.service_path import service_config
from crust.config import ServiceConfig
from crust.errors import ConnectionClosed
from crust.identity import Identity
from crust.service import Service

__all__ = ["ENDINGS", "TRANSPORTS", "ChurnResult", "churn", "rss", "slope"]

TRANSPORTS = ("tcp", "udp")
ENDINGS = ("disconnect", "close", "peer_gone", "pruned", "handshake_failure", "duplicate")
#: Endings that wait on a timer: run _PARALLEL connections at a time.
PARALLEL_ENDINGS = ("peer_gone", "pruned", "handshake_failure")

_PAGE = os.sysconf("SC_PAGE_SIZE")
# Short timers so ended connections go within a second or two.
_IDLE_TIMEOUT = 1.0
_KEEPALIVE = 0.25
_PRUNE_AFTER = 0.2
_FAILED_DIAL = 0.3  # seconds a doomed handshake is given
# Concurrent cycles for the ways of ending that wait on a timer.
_PARALLEL = 32
# 64 KiB, so each connection grows its buffers as a real exchange would:
# a connection left behind then costs what it did in issue 22.
_PAYLOAD = bytes(64 << 10)


def _libc_trim() -> Callable[[int], object]:
    try:
        trim: Callable[[int], object] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda pad: 0  # not glibc: measure as is
    return trim


_trim = _libc_trim()


def rss() -> int:
    """This process's resident set, in bytes, once the allocator returned
    the memory it holds free (glibc's ``malloc_trim``): a client ``Service``
    per connection frees megabytes of socket buffers each time, and glibc
    keeps much of that in its per-thread arenas. What is still allocated
    (a leak) stays counted."""
    _trim(0)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points (0 for fewer than two)."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


@dataclass(frozen=True)
class ChurnResult:
    transport: str
    ending: str
    cycles: int
    seconds: float
    #: Resident-set growth per connection after the warm-up, in bytes (a
    #: ``duplicate`` cycle makes two connections). It includes state kept
    #: for a bounded time on purpose: each responder remembers a completed
    #: handshake for 15 s (to answer a retransmitted initiation).
    rss_slope: float
    #: ``stats()["live"]`` of the server and of the long-lived client once
    #: every connection ended (``engine_connections`` is per process).
    server_live: dict[str, int]
    client_live: dict[str, int]
    #: ``(connections so far, resident bytes)`` after the warm-up.
    samples: list[tuple[int, int]]


def _config(transport: str, **kw: Any) -> ServiceConfig:
    # service_config: no LAN beacon, bootstrap cache (thousands of
    # short-lived nodes would fill it) or gossip, only these connections.
    return service_config(transport, idle_timeout=_IDLE_TIMEOUT, keepalive=_KEEPALIVE, **kw)


async def _drain(svc: Service) -> None:
    # An application that never reads its events would keep every event
    # (and the peer it names) forever; these nodes read them all.
    async for _ in svc.events():
        pass


def _vanish(svc: Service) -> None:
    """Drop ``svc``'s sockets without a close on any connection: to its
    peers it is simply gone."""
    for ul in svc.udp_ports:
        ul.close()
    for link in list(svc.tcp_links):
        if isinstance(link, TcpLink) and link.transport is not None:
            link.transport.abort()


class _Run:
    def __init__(self, transport: str, ending: str) -> None:
        self.transport = transport
        self.ending = ending
        prune = {"prune_after": _PRUNE_AFTER} if ending == "pruned" else {}
        self.server = Service(_config(transport, **prune))
        self.client = Service(_config(transport, **prune))
        self.tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> _Run:
        await self.server.start()
        await self.client.start()
        self.tasks = [asyncio.create_task(_drain(s)) for s in (self.server, self.client)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        await self.server.close()
        for t in self.tasks:
            t.cancel()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.endpoints[0][:2]
        return (str(host), int(port))

    async def one(self) -> None:
        step: Callable[[], Awaitable[None]] = getattr(self, "_" + self.ending)
        await step()

    async def _disconnect(self) -> None:
        peer = await self.client.connect(self.address)
        await peer.send(_PAYLOAD)
        await self.client.disconnect(peer)

    async def _close(self) -> None:
        async with Service(_config(self.transport)) as c:
            peer = await c.connect(self.address)
            await peer.send(_PAYLOAD)

    async def _peer_gone(self) -> None:
        c = Service(_config(self.transport))
        await c.start()
        task = asyncio.create_task(_drain(c))
        try:
            peer = await c.connect(self.address)
            await peer.send(_PAYLOAD)
            await asyncio.sleep(0.05)  # on its way out
            _vanish(c)
        finally:
            await c.close()
            task.cancel()

    async def _pruned(self) -> None:
        peer = await self.client.connect(self.address)
        # On a loaded machine the prune may come first.
        with contextlib.suppress(ConnectionClosed):
            await peer.send(_PAYLOAD)
        await peer.wait_closed()

    async def _handshake_failure(self) -> None:
        stranger = Identity.generate().peer_id
        with contextlib.suppress(ConnectionError):
            await self.client.connect(self.address, peer_id=stranger, timeout=_FAILED_DIAL)
            raise AssertionError("a handshake with the wrong peer id completed")

    async def _duplicate(self) -> None:
        back = self.client.endpoints[0][:2]
        a, b = await asyncio.gather(
            self.client.connect(self.address), self.server.connect((str(back[0]), int(back[1])))
        )
        await a.send(_PAYLOAD)
        await b.send(_PAYLOAD)
        await self.client.disconnect(a)


async def _settled(svcs: list[Service], limit: float) -> None:
    """Wait until no service holds a per-connection object (or ``limit``)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(not any(_per_connection(s).values()) for s in svcs):
            return
        await asyncio.sleep(0.05)


def _per_connection(svc: Service) -> dict[str, int]:
    live = dict(svc.stats()["live"])
    live.pop("engine_connections")  # the whole process's: checked apart
    return live


async def churn(transport: str, ending: str, cycles: int, *, warmup: int = 50) -> ChurnResult:
    """Run ``cycles`` connections of one kind (after ``warmup`` more, not
    measured) and report the memory slope and what is left alive."""
    if transport not in TRANSPORTS or ending not in ENDINGS:
        raise ValueError(f"unknown case {transport} x {ending}")
    parallel = _PARALLEL if ending in PARALLEL_ENDINGS else 1
    points: list[tuple[int, int]] = []
    started = time.monotonic()
    async with _Run(transport, ending) as run:
        done = 0
        total = warmup + cycles
        sample_every = max(parallel, cycles // 20)
        while done < total:
            batch = min(parallel, total - done)
            await asyncio.gather(*(run.one() for _ in range(batch)))
            done += batch
            if done > warmup and (done - warmup) % sample_every < batch:
                gc.collect()
                points.append((done, rss()))
        await _settled([run.server, run.client], _IDLE_TIMEOUT * 3 + 2.0)
        gc.collect()
        server_live = run.server.stats()["live"]
        client_live = run.client.stats()["live"]
    return ChurnResult(
        transport,
        ending,
        cycles,
        time.monotonic() - started,
        slope([(float(x), float(y)) for x, y in points]) / (2 if ending == "duplicate" else 1),
        server_live,
        client_live,
        points,
    )
