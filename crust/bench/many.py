"""Many connections on one listening endpoint, two processes on loopback.

The measured side is a real ``crust.Service`` in a child process. The
dialling side is not: a thousand ``Service`` objects could not share one
process, so it runs crust's sans-IO handshake (``Initiator``, a fresh
identity per connection) over C ``Endpoint``s on ``SOURCES`` UDP sockets
(each on its own loopback address), or
over plain asyncio streams with crust's 2-byte framing (TCP), ``WINDOW``
handshakes in flight at a time. What the service sees is what it would see from that
many real nodes.

Figures:

- handshakes per second: from the dialler's first initiation to the
  service's last ``NewPeer``;
- memory per idle connection, three ways: the growth of the service
  process's resident set over all connections (everything: C, Python,
  allocator slack), the C core's own count (``Connection.memory()``
  summed), and the Python objects (``tracemalloc``, over a further batch of
  connections opened with tracing on: tracing slows allocation, so it is
  kept out of the handshake timing);
- aggregate messages per second: 64-byte messages round-robin over every
  connection, counted as ``NewMessage`` events at the service (UDP only).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import select
import socket
import struct
import time
import tracemalloc
from collections import Counter
from typing import Any

from crust import _core
from crust.bench.procs import BenchError, ChildPipe, child
from crust.bench.service_path import NETWORK, service_config
from crust.config import ServiceConfig
from crust.errors import WouldBlock
from crust.events import NewMessage, NewPeer
from crust.handshake import long_header_prefix
from crust.handshake.driver import DialFailed, Established, HandshakeDriver, Unconfirmed
from crust.identity import Identity
from crust.peer import Address, now_us
from crust.service import Service

__all__ = ["idle_connections", "many_connections"]

WINDOW = 64
SOURCES = 256
_HANDSHAKE_TIMEOUT_US = 10_000_000
# Handshakes per second below which a dial gives up: ~2,000/s on a quiet
# machine, ~65/s seen with the 2 cores shared by three engineers' work.
_SLOWEST_RATE = 40
_FRAME = struct.Struct(">H")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _more_files(want: int) -> None:
    """Raise the open-file limit towards ``want`` (TCP: a descriptor per
    connection)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


# ---- the measured side: a Service in a child process ------------------------


class _Counts:
    def __init__(self) -> None:
        self.peers = 0
        self.last_peer = 0  # when the latest NewPeer came
        self.msgs = 0
        self.first_msg = 0
        self.last_msg = 0


async def _serve(pipe: Any, transport: str, most: int, overrides: dict[str, Any]) -> None:
    _more_files(most + 256)
    # Keepalives at their default (20 s) would be the only traffic of an
    # idle connection; the run is shorter than that (except ``idle``'s).
    # Room for a NewPeer event per connection: on a loaded machine the
    # reader below falls behind the handshakes, and a subscription past its
    # backlog ends (EventsOverflow), so the peers after it were never
    # maintained and ``idle``'s pruning (at its default) closed them: a
    # 100,000-connection run kept 18,852.
    overrides = {"event_backlog": max(ServiceConfig().event_backlog, most + 1024), **overrides}
    async with Service(service_config(transport, **overrides)) as svc:
        counts = _Counts()

        async def consume() -> None:
            async for ev in svc.events():
                if isinstance(ev, NewPeer):
                    svc.maintain(ev.peer)
                    counts.peers += 1
                    counts.last_peer = time.perf_counter_ns()
                elif isinstance(ev, NewMessage):
                    counts.last_msg = time.perf_counter_ns()
                    if not counts.first_msg:
                        counts.first_msg = counts.last_msg
                    counts.msgs += 1

        task = asyncio.ensure_future(consume())
        gc.collect()
        pipe.send((svc.endpoints[0], _rss()))
        try:
            while True:
                cmd, arg = await asyncio.to_thread(pipe.recv)
                if cmd == "stop":
                    break
                if task.done() and cmd in ("peers", "settle", "idle"):
                    # The figures would count peers nobody maintained.
                    pipe.send({"error": f"the event reader ended: {task.exception()!r}"})
                elif cmd == "trace":
                    tracemalloc.start()
                    pipe.send("tracing")
                elif cmd == "peers":
                    pipe.send(await _wait_peers(svc, counts, arg))
                elif cmd == "messages":
                    counts.msgs = counts.first_msg = counts.last_msg = 0
                    pipe.send("counting")
                elif cmd == "settle":
                    pipe.send(await _settle(svc, counts))
                elif cmd == "idle":
                    pipe.send(await _idle(svc, *arg))
                elif cmd == "arrival":
                    # When the first message since "messages" came (the
                    # clock is the system's monotonic one, shared with the
                    # dialler), waiting up to a second for it.
                    give_up = time.monotonic() + 1.0
                    while not counts.first_msg and time.monotonic() < give_up:
                        await asyncio.sleep(0.005)
                    pipe.send(counts.first_msg)
                elif cmd == "count":
                    # Let what is in flight land before counting.
                    await asyncio.sleep(0.2)
                    pipe.send((counts.msgs, counts.last_msg - counts.first_msg))
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _settle(svc: Service, counts: _Counts) -> dict[str, Any]:
    """Wait until no new peer came for 3 s, then report as ``peers`` does:
    under load a finish message may be lost, and the bench's dialler does
    not repeat it, so a few handshakes it completed never reach us."""
    while time.perf_counter_ns() - counts.last_peer < 3e9:
        await asyncio.sleep(0.5)
    return await _wait_peers(svc, counts, counts.peers)


async def _idle(svc: Service, warmup: float, seconds: float) -> dict[str, Any]:
    """The service's own CPU time (every thread) and memory while its
    connections idle for ``seconds``: keepalives, timers and the service's
    own periodic work are all it does. The window opens ``warmup`` seconds
    after the last handshake: until then the young connections finish
    setting up (their path MTU search, first round-trip samples, probes of
    answers the dialler, just out of its dialling, gave late), which is
    the cost of new connections, not of idle ones; its CPU is reported
    apart."""
    wall0, cpu0 = time.monotonic(), _cpu()
    await asyncio.sleep(warmup)
    warm_share = (_cpu() - cpu0) / (time.monotonic() - wall0) if warmup else None
    # Outside the window: each connection's packets so far, to tell how
    # many each sent and received in it.
    before = {id(p): _window_counters(p.link.conn.stats()) for p in svc.peers}
    gc.collect()
    ep0 = _endpoint_counts(svc)
    collector = _GcTime()
    gc.callbacks.append(collector)
    wall0, cpu0 = time.monotonic(), _cpu()
    # The share in slices: keepalives come in waves where connections were
    # dialled in bursts, and one slice's figure says nothing alone.
    slices = []
    end = wall0 + seconds
    while (left := end - time.monotonic()) > 0:
        t, c = time.monotonic(), _cpu()
        await asyncio.sleep(min(_SLICE_S, left))
        slices.append((_cpu() - c) / (time.monotonic() - t))
    cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
    gc.callbacks.remove(collector)
    ep1 = _endpoint_counts(svc)
    rss = _rss()
    # What the endpoint did meanwhile, per second: keepalive packets each
    # way, drives (each a pass through Python) and connection timers run.
    rates = {k: (ep1[k] - ep0[k]) / wall for k in ep0}
    # After the window: probe timeouts and key updates over every
    # connection's life, and how many connections sent and received how
    # many packets in the window (why a node moves more than one PING and
    # one ACK per keepalive interval per peer).
    ptos = updates = 0
    window: Counter[tuple[int, int]] = Counter()
    moved: Counter[str] = Counter()  # the window's counts, summed
    for p in svc.peers:
        st = p.link.conn.stats()
        ptos += int(st["pto_count"])
        updates += int(st["key_updates"])
        now = _window_counters(st)
        then = before.get(id(p), (0,) * len(now))
        for name, a, b in zip(_WINDOW_COUNTERS, then, now, strict=True):
            moved[name] += b - a
        window[(now[0] - then[0], now[1] - then[1])] += 1
    return {
        "ptos": ptos,
        "key_updates": updates,
        "packets_in_window": [
            f"{n} connections sent {tx}, received {rx}" for (tx, rx), n in window.most_common(8)
        ],
        "window_counts": dict(moved),
        "peers": len(svc.peers),
        "cpu_share": cpu / wall,
        "cpu_share_slices": slices,
        # The garbage collector's share of the window, by generation.
        "gc_share": {g: t / wall for g, t in collector.seconds.items()},
        "gc_collections": dict(collector.count),
        "warmup_cpu_share": warm_share,
        "rss": rss,
        "rates": rates,
        # Why peers ended, since the start (none should have).
        "lost": svc.stats()["lost_reasons"],
    }


# Per-connection counters whose change over the idle window is reported
# (summed): which of them move tells why a connection sent more than a
# keepalive's PING and ACK. Packets first (the histogram reads them).
_WINDOW_COUNTERS = (
    "tx_packets",
    "rx_packets",
    "tx_bytes",
    "rx_bytes",
    "pto_count",
    "lost_packets",
    "spurious_losses",
    "rx_stall_pings",
    "rx_dropped_duplicate",
    "rx_dropped_old",
    "unreachable_reports",
)


class _GcTime:
    """A ``gc.callbacks`` entry: the time each collection took (wall
    clock, the collector holds the GIL: the process does nothing else
    meanwhile), summed by generation."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.count: Counter[int] = Counter()
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            g = info["generation"]
            self.seconds[g] = self.seconds.get(g, 0.0) + time.perf_counter() - self._start
            self.count[g] += 1


def _window_counters(st: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(st[k]) for k in _WINDOW_COUNTERS)


_SLICE_S = 5.0  # the idle window's CPU share is also given per slice this long

_COUNTED = ("rx_datagrams", "tx_datagrams", "rx_batches", "tx_batches", "drives", "timers")


def _endpoint_counts(svc: Service) -> dict[str, int]:
    # The endpoint's own counters: svc.stats() would build every peer's.
    st = svc.udp_ports[0].endpoint.stats()
    return {k: int(st[k]) for k in _COUNTED}


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def _wait_peers(svc: Service, counts: _Counts, goal: int) -> dict[str, Any]:
    give_up = time.monotonic() + 120 + goal / _SLOWEST_RATE
    while counts.peers < goal:
        if time.monotonic() > give_up:
            return {"error": f"only {counts.peers} of {goal} peers arrived"}
        await asyncio.sleep(0.01)
    gc.collect()
    out: dict[str, Any] = {
        "peers": len(svc.peers),
        "rss": _rss(),
        # The C core's own accounting of every connection's heap.
        "c_bytes": sum(p.link.conn.memory() for p in svc.peers),
        "last_ns": counts.last_peer,
        # Cookie replies: the listener judged itself under load (see _UdpDialer).
        "cookies": svc.stats()["handshake"].get("cookie_replies", 0),
    }
    if tracemalloc.is_tracing():
        out["traced"] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    return out


def _server(pipe: Any, transport: str, most: int, overrides: dict[str, Any]) -> None:
    asyncio.run(_serve(pipe, transport, most, overrides))


# ---- the dialling side ---------------------------------------------------------


# Identities of the dialling peers, made before the clock starts: a peer's
# key generation is its own start-up work, not the service's, and on two
# cores the dialler competes with the measured service for CPU.
_IDENTITIES: list[Identity] = []


def _prepare_identities(n: int) -> None:
    _IDENTITIES.extend(Identity.generate() for _ in range(n - len(_IDENTITIES)))


def _identity() -> Identity:
    return _IDENTITIES.pop() if _IDENTITIES else Identity.generate()


class _UdpDialer:
    """Handshakes over ``SOURCES`` UDP sockets (each with its C Endpoint);
    every finished handshake becomes an engine connection on the endpoint
    that dialled it.

    Several source addresses (127.0.0.2, 127.0.0.3, ...: all of 127/8 is
    this host), because a listener under load (its table of recent
    handshakes three-quarters full: crust keeps each for 15 s to answer
    retransmissions) demands cookies and then admits only
    ``CookiePolicy.per_source_rate`` initiations per second per source, an
    address whatever its ports, as it should against a flood from one
    host. Thousands of real peers come from thousands of addresses.
    """

    def __init__(self, server: Address, sources: int, **overrides: Any) -> None:
        self.server = server
        self.socks: list[socket.socket] = []
        self.eps: list[_core.Endpoint] = []
        prefix = long_header_prefix(NETWORK)
        for i in range(sources):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.socks.append(sock)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, 1 << 20)
            sock.bind((f"127.0.{1 + i // 250}.{2 + i % 250}", 0))
            sock.setblocking(False)
            self.eps.append(_core.Endpoint(sock, long_header_prefix=prefix))
        self._by_fd = {s.fileno(): ep for s, ep in zip(self.socks, self.eps, strict=True)}
        # Never started: its handshake drivers (one per endpoint, dialling
        # only) make engine connections configured as a service's would be.
        self.maker = Service(service_config("udp", **overrides))
        self.drivers = [self.maker.make_driver(accept=False) for _ in self.eps]
        self._index = {id(ep): i for i, ep in enumerate(self.eps)}
        # Dials without a result yet (XX ones then wait, in their driver,
        # for the service's first packet under the new keys: the finish is
        # repeated until then, as crust's UDP transport does: a listener
        # behind on its socket loses some, and a dialler that sent each
        # once left thousands of connections the service never had).
        self.pending = 0
        self.conns: list[_core.Connection] = []
        self.failures = 0
        self.unconfirmed = 0
        self._next_all = 0

    def close(self) -> None:
        for ep in self.eps:
            ep.close()
        for s in self.socks:
            s.close()

    def _service(self, now: int, timeout: float) -> None:
        """Drive the endpoints with something to read (all of them every
        20 ms, for their timers)."""
        readable, _, _ = select.select(self.socks, [], [], timeout)
        eps = [self._by_fd[s.fileno()] for s in readable]
        if now >= self._next_all:
            self._next_all = now + 20_000
            eps = self.eps
        for ep in eps:
            ep.drive(now)
            i = self._index[id(ep)]
            for data, _ in ep.unrouted():
                self.drivers[i].receive_datagram(data, self.server, now)
                self._io(i, now)
            for c in ep.ready():
                c.poll_events()

    def _io(self, i: int, now: int) -> None:
        """Send what endpoint ``i``'s driver has to send; count what ended."""
        ep, hs = self.eps[i], self.drivers[i]
        for d, to in hs.datagrams_to_send(now):
            ep.send_raw(d, to)
        while (ev := hs.next_event()) is not None:
            if isinstance(ev, Established):
                assert ev.connection is not None
                self.pending -= 1
                ep.add(ev.connection, self.server)
                self.conns.append(ev.connection)
            elif isinstance(ev, DialFailed):
                # A listener under load may let a handshake time out (its
                # table of recent handshakes full); a real peer dials again.
                self.pending -= 1
                self.failures += 1
                if self.failures > 1000:
                    raise BenchError(f"{self.failures} handshakes failed, the last: {ev.error}")
            elif isinstance(ev, Unconfirmed):
                self.unconfirmed += 1  # every copy lost: the service has no such peer

    def dial(self, n: int) -> None:
        goal = len(self.conns) + n
        next_timers = 0
        give_up = time.monotonic() + 120 + n / _SLOWEST_RATE
        while len(self.conns) < goal or any(len(hs) for hs in self.drivers):
            now = now_us()
            while len(self.conns) + self.pending < goal and self.pending < WINDOW:
                i = (len(self.conns) + self.pending) % len(self.eps)
                self.drivers[i].connect(
                    self.server, now=now, timeout_us=_HANDSHAKE_TIMEOUT_US, identity=_identity()
                )
                self.pending += 1
                self._io(i, now)
            if now >= next_timers:
                # Retransmissions, repeated finishes, and finishes the
                # service confirmed (its first packet) let go.
                next_timers = now + 20_000
                for i, hs in enumerate(self.drivers):
                    if len(hs):
                        hs.handle_timer(now)
                        self._io(i, now)
            if time.monotonic() > give_up:
                raise BenchError(f"dialled only {len(self.conns)} of {goal} connections")
            self._service(now_us(), 0.002)

    def messages(self, seconds: float, size: int) -> int:
        """Round-robin ``size``-byte messages over every connection."""
        msg = bytes(size)
        sent = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            now = now_us()
            for c in self.conns:
                try:
                    c.send(msg, now=now)
                    sent += 1
                except WouldBlock:
                    pass
            for ep in self.eps:
                ep.flush(now)
            self._service(now, 0.0)
        self.idle(0.2)  # retransmissions finish while the service counts
        return sent

    def idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self._service(now_us(), 0.01)


class _TcpHandshake(asyncio.Protocol):
    """One handshake over a TCP stream (crust's framing), as a bare
    protocol: asyncio's streams cost the dialler more per connection than
    the handshake itself, and the dialler shares the machine with the
    measured service."""

    def __init__(self, server: Address, done: asyncio.Future[None]) -> None:
        self.server = server
        self.done = done
        # A stream loses nothing: the finish goes once (reliable).
        self.hs = HandshakeDriver(_identity(), NETWORK, accept=False, reliable=True)
        self.hs.connect(server, now=now_us(), timeout_us=_HANDSHAKE_TIMEOUT_US)
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._write()

    def _write(self) -> None:
        assert self.transport is not None
        out = [_FRAME.pack(len(d)) + d for d, _ in self.hs.datagrams_to_send(now_us())]
        if out:
            self.transport.write(b"".join(out))
        while (ev := self.hs.next_event()) is not None:
            if self.done.done():
                continue
            if isinstance(ev, DialFailed):
                self.done.set_exception(BenchError(f"handshake failed: {ev.error}"))
            elif isinstance(ev, Established):
                self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= _FRAME.size and not self.done.done():
            (n,) = _FRAME.unpack_from(self.buf)
            if len(self.buf) < _FRAME.size + n:
                return
            frame, self.buf = self.buf[_FRAME.size : _FRAME.size + n], self.buf[_FRAME.size + n :]
            self.hs.receive_datagram(frame, self.server, now_us())
            self._write()  # a cookie retry, or the finish message

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(BenchError(f"connection lost during the handshake: {exc}"))


class _TcpDialer:
    """Handshakes over TCP streams (crust's framing), kept open."""

    def __init__(self, server: Address) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.transports: list[asyncio.BaseTransport] = []

    async def _one(self, sem: asyncio.Semaphore) -> None:
        async with sem:
            done: asyncio.Future[None] = self.loop.create_future()
            transport, _ = await self.loop.create_connection(
                lambda: _TcpHandshake(self.server, done), *self.server
            )
            self.transports.append(transport)
            await done

    def dial(self, n: int) -> None:
        async def run() -> None:
            sem = asyncio.Semaphore(WINDOW)
            await asyncio.wait_for(asyncio.gather(*(self._one(sem) for _ in range(n))), 120)

        self.loop.run_until_complete(run())

    def idle(self, seconds: float) -> None:
        self.loop.run_until_complete(asyncio.sleep(seconds))

    def close(self) -> None:
        for t in self.transports:
            t.close()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()


def _check(report: dict[str, Any]) -> dict[str, Any]:
    if "error" in report:
        raise BenchError(f"the service side: {report['error']}")
    return report


def many_connections(
    transport: str, n: int, traced: int, msg_seconds: float, msg_size: int = 64
) -> dict[str, Any]:
    """``n`` connections to one service, then ``traced`` more under
    tracemalloc, then (UDP) ``msg_seconds`` of messages over all of them."""
    _more_files(n + traced + 256)
    with child(_server, transport, n + traced, {}, fresh=True) as pipe:
        addr, rss0 = pipe.recv()
        dialer: _UdpDialer | _TcpDialer = (
            _UdpDialer(addr, min(SOURCES, n)) if transport == "udp" else _TcpDialer(addr)
        )
        try:
            return _measure(pipe, dialer, rss0, n, traced, msg_seconds, msg_size)
        finally:
            with contextlib.suppress(OSError):  # the service may have died
                pipe.send(("stop", None))
            dialer.idle(0.1)
            dialer.close()


def _measure(
    pipe: ChildPipe,
    dialer: _UdpDialer | _TcpDialer,
    rss0: int,
    n: int,
    traced: int,
    msg_seconds: float,
    msg_size: int,
) -> dict[str, Any]:
    _prepare_identities(n)
    t0, cpu0 = time.perf_counter_ns(), time.process_time()
    dialer.dial(n)
    dial_ns = time.perf_counter_ns() - t0
    # Near 1.0: the dialling side, not the service, set the pace.
    dial_busy = (time.process_time() - cpu0) / dial_ns * 1e9
    pipe.send(("peers", n))
    first = _check(pipe.recv())
    out: dict[str, Any] = {
        "connections": first["peers"],
        # perf_counter is CLOCK_MONOTONIC, one clock for both processes:
        # from the first initiation here to the service's last NewPeer.
        "handshakes_per_s": n / (first["last_ns"] - t0) * 1e9,
        "dialler_cpu_share": dial_busy,
        "rss_per_conn": (first["rss"] - rss0) / n,
        "c_per_conn": first["c_bytes"] / n,
        "cookie_replies": first["cookies"],
    }
    if traced:
        _prepare_identities(traced)
        pipe.send(("trace", None))
        pipe.recv()
        dialer.dial(traced)
        pipe.send(("peers", n + traced))
        second = _check(pipe.recv())
        out["python_per_conn"] = second["traced"] / traced
        out["total_per_conn"] = out["c_per_conn"] + out["python_per_conn"]
    if msg_seconds and isinstance(dialer, _UdpDialer):
        pipe.send(("messages", None))
        pipe.recv()
        sent = dialer.messages(msg_seconds, msg_size)
        pipe.send(("count", None))
        got, ns = pipe.recv()
        out.update(
            messages_sent=sent,
            messages=got,
            messages_per_s=got / ns * 1e9 if ns else 0.0,
        )
    return out


def idle_connections(
    n: int,
    seconds: float,
    keepalive: float | None = None,
    probes: int = 5,
    warmup: float | None = None,
) -> dict[str, Any]:
    """``n`` idle UDP connections to one service (keepalives, idle timeout
    and pruning at their defaults, every peer maintained), held for
    ``seconds``: the service's CPU share and memory per connection; then
    ``probes`` single messages, each after a quiet spell, timed to the
    service. ``keepalive`` (both ends) instead of the default: a short one
    packs the keepalives of many more connections into a short run (the
    tests). The measured window opens ``warmup`` seconds after the last
    handshake (default: a keepalive interval and 5 s, so that every
    connection is past its setup and its first keepalive)."""
    defaults = ServiceConfig()
    if warmup is None:
        warmup = (defaults.keepalive if keepalive is None else keepalive) + 5.0
    overrides: dict[str, Any] = {"prune_after": defaults.prune_after}
    ends: dict[str, Any] = {} if keepalive is None else {"keepalive": keepalive}
    overrides.update(ends)
    with child(_server, "udp", n, overrides, fresh=True, timeout=300 + n / _SLOWEST_RATE) as pipe:
        addr, rss0 = pipe.recv()
        dialer = _UdpDialer(addr, min(SOURCES, n), **ends)
        try:
            _prepare_identities(n)
            t0 = time.perf_counter_ns()
            dialer.dial(n)
            pipe.send(("settle", None))
            while not pipe.poll():
                dialer.idle(0.2)  # answering the service meanwhile
            first = _check(pipe.recv(timeout=5))
            dial_s = (first["last_ns"] - t0) / 1e9
            # The dialler keeps answering keepalives in a thread of its own
            # while the service idles.
            pipe.send(("idle", (warmup, seconds)))
            stop = time.monotonic() + warmup + seconds + 300
            wall0, cpu0 = time.monotonic(), _cpu()
            while not pipe.poll() and time.monotonic() < stop:
                dialer.idle(0.2)
            # The dialler's own share (it runs as many connections): a
            # dialler near a full core answers late, and the service's
            # probes of late answers are then the bench's doing.
            dial_cpu = (_cpu() - cpu0) / (time.monotonic() - wall0)
            idle = _check(pipe.recv(timeout=5))
            delays = [_message_delay(pipe, dialer, i) for i in range(probes)]
        finally:
            with contextlib.suppress(OSError):
                pipe.send(("stop", None))
            dialer.idle(0.1)
            dialer.close()
    return {
        "connections": idle["peers"],
        "dial_seconds": dial_s,
        "handshakes_retried": dialer.failures,
        "finish_never_confirmed": dialer.unconfirmed,
        "idle_seconds": seconds,
        "idle_cpu_share": idle["cpu_share"],
        "idle_cpu_share_slices": idle["cpu_share_slices"],
        "idle_gc_share": idle["gc_share"],
        "idle_gc_collections": idle["gc_collections"],
        "warmup_seconds": warmup,
        "warmup_cpu_share": idle["warmup_cpu_share"],
        "dialler_idle_cpu_share": dial_cpu,
        "rss_per_conn": (idle["rss"] - rss0) / idle["peers"],
        "c_per_conn": first["c_bytes"] / first["peers"],
        "per_second": idle["rates"],
        "peers_after_dial": first["peers"],
        "lost": idle["lost"],
        "ptos": idle["ptos"],
        "key_updates": idle["key_updates"],
        "packets_in_window": idle["packets_in_window"],
        "window_counts": idle["window_counts"],
        # One-way delays of single messages sent to the idling service,
        # each after a quiet spell (reads coalesced: at most a tick).
        "message_delays_s": delays,
    }


def _message_delay(pipe: Any, dialer: _UdpDialer, i: int) -> float:
    """Idle 1.5 s (the service goes back to coalescing reads after a
    second without data), send one 64-byte message on a connection, and
    return how long it took to reach the service's application."""
    dialer.idle(1.5)
    pipe.send(("messages", None))
    pipe.recv(timeout=5)
    conn = dialer.conns[(i * 7919) % len(dialer.conns)]
    sent = time.perf_counter_ns()
    conn.send(bytes(64), now=now_us())
    for ep in dialer.eps:
        ep.flush(now_us())
    pipe.send(("arrival", None))
    while not pipe.poll():
        dialer.idle(0.01)
    arrived = pipe.recv(timeout=5)
    return (arrived - sent) / 1e9 if arrived else float("inf")
