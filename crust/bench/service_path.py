"""crust through its public API (``crust.Service`` and ``Peer``), one
connection between two processes on loopback, over UDP or TCP: bulk
goodput, small messages per second, request/response round trips, time to
connect.

The far end is a real ``Service`` in a child process; every figure is
counted where the application sees it (``NewMessage`` events), first
delivery to last. The service negotiates its cipher as it would for any
user; the figures carry the AEAD's name.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from typing import Any

from crust.bench.baselines import cpu_seconds
from crust.bench.procs import BenchError, ChildPipe, child
from crust.config import ServiceConfig
from crust.errors import WouldBlock
from crust.events import NewMessage, NewPeer
from crust.handshake import cipher_names
from crust.identity import Identity
from crust.peer import Address, Peer
from crust.service import Service

__all__ = ["aead_name", "bulk", "connect_time", "request_response", "small_messages"]

NETWORK = "crust-bench"
BULK_MSG = 1 << 20
# The application yields to the event loop this often while queueing small
# messages, as any producer that does other work would: the transport then
# sends while the producer produces.
_YIELD_EVERY = 256


class _Slowdown:
    """``CRUST_BENCH_SLOWDOWN=F`` (tests only): the sending application
    burns F times the CPU time it spent since its last burn, so crust's
    side of bulk and small-message cases does (1 + F) times the work; the
    baselines are untouched. It exists to show the CI gate
    (``crust.bench.gate``) fails when a ratio regresses."""

    def __init__(self) -> None:
        self.factor = float(os.environ.get("CRUST_BENCH_SLOWDOWN", "0") or 0)
        self._mark = time.thread_time()

    def __call__(self) -> None:
        if self.factor <= 0:
            return
        now = time.thread_time()
        until = now + (now - self._mark) * self.factor
        while time.thread_time() < until:
            pass
        self._mark = time.thread_time()


def service_config(transport: str, **overrides: Any) -> ServiceConfig:
    """One transport only (no racing), a fresh identity, no backup port.
    The cookie threshold and the per-source and total caps are lifted: the
    benchmarks measure capacity from one host, not the DoS policy that
    would throttle it (docs/security.md, "Hostile peers")."""
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be 'udp' or 'tcp', got {transport!r}")
    kw: dict[str, Any] = {
        "network": NETWORK,
        "identity": Identity.generate(),
        "backup_port": False,
        "udp": transport == "udp",
        "tcp": transport == "tcp",
        "max_message_size": BULK_MSG,
        "cookie_rate": 1_000_000,
        "prune_after": 3600.0,
    }
    # Discovery off (where this version has it): LAN beacon, bootstrap
    # cache and gossip would dial and chat between the benchmark's nodes.
    quiet = {"beacon": False, "cache_size": 0, "gossip": False}
    # The caps (where this version has them): every benchmark client
    # comes from 127.0.0.1.
    uncapped = {
        "max_connections": 1_000_000,
        "max_connections_per_source": 1_000_000,
        "tcp_unauthenticated_per_source": 1 << 16,
        "tcp_unauthenticated_max": 1_000_000,
    }
    for extra in (quiet, uncapped):
        kw.update((k, v) for k, v in extra.items() if k in ServiceConfig.__dataclass_fields__)
    kw.update(overrides)
    return ServiceConfig(**kw)


def aead_name(aead: int) -> str:
    """The configuration name of a cipher (``ServiceConfig.ciphers``)."""
    return cipher_names((aead,))


def peer_aead(peer: Peer) -> str:
    """The cipher the handshake chose for this peer's packets."""
    return peer.cipher or "unknown"


# ---- the far end ---------------------------------------------------------------


async def _serve(pipe: Any, transport: str, mode: str, target: int) -> None:
    """``count``: count messages until ``target`` bytes (or messages, when
    negative) arrived, report, idle on. ``echo``: send every message back.
    ``accept``: just keep the peers. Runs until the parent says stop."""
    async with Service(service_config(transport)) as svc:
        pipe.send(svc.endpoints[0])
        stop = asyncio.ensure_future(asyncio.to_thread(pipe.recv))

        async def consume() -> None:
            got = msgs = first_len = 0
            first = last = 0
            cpu0 = 0.0
            reported = False
            async for ev in svc.events():
                if isinstance(ev, NewPeer):
                    svc.maintain(ev.peer)
                elif isinstance(ev, NewMessage):
                    if mode == "echo":
                        await ev.peer.send(ev.data)
                        continue
                    last = time.perf_counter_ns()
                    if not first:
                        first, first_len = last, len(ev.data)
                        cpu0 = cpu_seconds()
                    got += len(ev.data)
                    msgs += 1
                    done = got >= target if target >= 0 else msgs >= -target
                    if done and not reported:
                        reported = True
                        # The CPU this process spent receiving, for the
                        # figures per CPU second (steadier than per wall
                        # second on a shared machine: design note 0072).
                        pipe.send((got, msgs, first_len, last - first, cpu_seconds() - cpu0))

        task = asyncio.ensure_future(consume())
        await asyncio.wait({stop, task}, return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, EOFError):
            await task
        if stop.done():
            stop.exception()  # EOFError when the parent went away: retrieved, not logged
        stop.cancel()


def _server(pipe: Any, transport: str, mode: str, target: int) -> None:
    asyncio.run(_serve(pipe, transport, mode, target))


async def _connect(transport: str, addr: Address) -> tuple[Service, Peer]:
    svc = Service(service_config(transport))
    await svc.start()
    try:
        peer = await svc.connect(addr)
    except BaseException:
        await svc.close()
        raise
    return svc, peer


async def _finish(pipe: ChildPipe) -> Any:
    report = await asyncio.to_thread(pipe.recv)
    pipe.send("stop")
    return report


# ---- the measurements ----------------------------------------------------------


def bulk(transport: str, nbytes: int) -> dict[str, Any]:
    """``nbytes`` in 1 MiB messages (``await peer.send``); goodput at the
    receiver, first message to last (the first one's bytes not counted)."""

    async def main(pipe: ChildPipe, addr: Address) -> dict[str, Any]:
        svc, peer = await _connect(transport, addr)
        try:
            data = os.urandom(BULK_MSG)
            sent = 0
            slow = _Slowdown()
            cpu0 = cpu_seconds()
            while sent < nbytes:
                await peer.send(data, 1)
                sent += len(data)
                slow()
            got, _, first_len, ns, rx_cpu = await _finish(pipe)
            tx_cpu = cpu_seconds() - cpu0
            out = {
                "bytes": got,
                "bytes_per_s": (got - first_len) / ns * 1e9 if ns else 0.0,
                # Both ends' CPU (this process's sending, the far end's
                # receiving) per byte delivered.
                "bytes_per_cpu_s": got / (tx_cpu + rx_cpu) if tx_cpu + rx_cpu > 0 else 0.0,
                "tx_cpu_ns_per_byte": tx_cpu / got * 1e9 if got else 0.0,
                "rx_cpu_ns_per_byte": rx_cpu / got * 1e9 if got else 0.0,
                "aead": peer_aead(peer),
                "mtu": peer.stats.mtu,
                "lost_packets": peer.stats.lost_packets,
            }
            for ep in svc.stats().get("udp", []):
                # How much of the sending went out in GSO super-datagrams,
                # and how many datagrams each sendmmsg carried.
                if ep.get("tx_datagrams"):
                    out["gso_share"] = ep.get("gso_segments", 0) / ep["tx_datagrams"]
                    out["datagrams_per_batch"] = ep["tx_datagrams"] / max(1, ep["tx_batches"])
            return out
        finally:
            await svc.close()

    with child(_server, transport, "count", nbytes) as pipe:
        r = asyncio.run(main(pipe, pipe.recv()))
    if r["bytes"] < nbytes or r["bytes_per_s"] <= 0:
        raise BenchError(f"crust {transport} bulk delivered {r['bytes']} of {nbytes} bytes")
    return r


def small_messages(transport: str, count: int, size: int = 64) -> dict[str, Any]:
    """``count`` messages of ``size`` bytes queued as fast as the send
    buffer takes them; messages per second delivered to the receiving
    application (its ``NewMessage`` events), first to last."""

    async def main(pipe: ChildPipe, addr: Address) -> dict[str, Any]:
        svc, peer = await _connect(transport, addr)
        try:
            msg = bytes(size)
            slow = _Slowdown()
            cpu0 = cpu_seconds()
            for i in range(count):
                try:
                    peer.send_nowait(msg)
                except WouldBlock:
                    await peer.send(msg)
                if i % _YIELD_EVERY == 0:
                    slow()
                    await asyncio.sleep(0)
            _, msgs, _, ns, rx_cpu = await _finish(pipe)
            cpu = cpu_seconds() - cpu0 + rx_cpu
            return {
                "messages": msgs,
                "messages_per_s": (msgs - 1) / ns * 1e9 if ns else 0.0,
                "messages_per_cpu_s": msgs / cpu if cpu > 0 else 0.0,
                "aead": peer_aead(peer),
            }
        finally:
            await svc.close()

    with child(_server, transport, "count", -count) as pipe:
        r = asyncio.run(main(pipe, pipe.recv()))
    if r["messages"] < count or r["messages_per_s"] <= 0:
        raise BenchError(f"crust {transport} delivered {r['messages']} of {count} messages")
    return r


def request_response(transport: str, seconds: float, size: int = 1024) -> dict[str, Any]:
    """One ``size``-byte request at a time, echoed by the far application;
    round trips per second (and the median round trip) for ``seconds``."""

    async def main(pipe: ChildPipe, addr: Address) -> dict[str, Any]:
        svc, peer = await _connect(transport, addr)
        try:
            events = svc.events()
            msg = os.urandom(size)
            times: list[int] = []
            end = time.monotonic() + seconds
            t_start = time.perf_counter_ns()
            while time.monotonic() < end:
                t0 = time.perf_counter_ns()
                await peer.send(msg)
                while True:
                    ev = await asyncio.wait_for(events.__anext__(), 10.0)
                    if isinstance(ev, NewMessage):
                        break
                if ev.data != msg:
                    raise BenchError(f"echo returned {len(ev.data)} bytes, not the request")
                times.append(time.perf_counter_ns() - t0)
            took = time.perf_counter_ns() - t_start
            pipe.send("stop")
            return {
                "round_trips": len(times),
                "round_trips_per_s": len(times) / took * 1e9,
                "median_us": statistics.median(times) / 1e3,
                "aead": peer_aead(peer),
            }
        finally:
            await svc.close()

    with child(_server, transport, "echo", 0) as pipe:
        return asyncio.run(main(pipe, pipe.recv()))


def connect_time(transport: str, count: int) -> dict[str, Any]:
    """``count`` connects in turn, each by a new node (its own identity),
    to one listening service: the median time ``Service.connect`` takes
    (the full handshake, as the application waits for it)."""

    async def main(pipe: ChildPipe, addr: Address) -> dict[str, Any]:
        times: list[int] = []
        aead = "unknown"
        for _ in range(count):
            async with Service(service_config(transport)) as svc:
                t0 = time.perf_counter_ns()
                peer = await svc.connect(addr)
                times.append(time.perf_counter_ns() - t0)
                aead = peer_aead(peer)
        pipe.send("stop")
        return {
            "connects": len(times),
            "median_ms": statistics.median(times) / 1e6,
            "min_ms": min(times) / 1e6,
            "aead": aead,
        }

    with child(_server, transport, "accept", 0) as pipe:
        return asyncio.run(main(pipe, pipe.recv()))
