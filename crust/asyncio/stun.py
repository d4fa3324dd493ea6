"""asyncio glue for the STUN client: a UDP socket driving a
:class:`crust.nat.stun.StunClient`, and the RFC 5780 probe sequence that
feeds :func:`crust.nat.classify.classify`.

Everything here is bounded by the transaction parameters (``rto``, ``rc``,
``rm``): no call waits longer than ``rto * (2**rc - 1 + rm)``-ish seconds.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, cast

from crust.nat.classify import NatBehaviour, Probe, classify
from crust.nat.stun import BindingFailed, BindingSucceeded, StunClient, StunFailed
from crust.wire import Address as Addr

__all__ = ["StunDriver", "StunSocket", "mapping_probes", "probe_nat", "route_source"]

logger = logging.getLogger(__name__)


class StunDriver:
    """Runs a :class:`StunClient` on the event loop: ``send(data, addr)``
    transmits, :meth:`feed` takes received STUN datagrams, and one timer
    drives retransmissions. Shared by :class:`StunSocket` (its own socket)
    and the service's UDP listeners (the listening socket)."""

    def __init__(self, client: StunClient, send: Callable[[bytes, Addr], None]) -> None:
        self.client = client
        self._send = send
        self._waiters: dict[bytes, asyncio.Future[BindingSucceeded]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._closed = False

    def feed(self, data: bytes, addr: Addr) -> None:
        self.client.receive_datagram(data, addr, self._loop.time())
        self._service()

    async def binding(
        self,
        server: Addr,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        pad_to: int = 0,
    ) -> BindingSucceeded:
        """One binding transaction; raises :class:`StunFailed` on timeout,
        an error response or when the driver is closed."""
        if self._closed:
            raise StunFailed(server, "socket closed")
        txid = self.client.binding(
            server, self._loop.time(), change_ip=change_ip, change_port=change_port,
            pad_to=pad_to,
        )  # fmt: skip
        fut: asyncio.Future[BindingSucceeded] = self._loop.create_future()
        self._waiters[txid] = fut
        self._service()
        try:
            return await fut
        finally:
            self._waiters.pop(txid, None)
            self.client.cancel(txid)

    def _service(self) -> None:
        if self._closed:
            return
        now = self._loop.time()
        self.client.handle_timer(now)
        for data, addr in self.client.datagrams_to_send(now):
            try:
                self._send(data, addr)
            except OSError as e:
                # The retransmission schedule covers a failed send too.
                logger.debug("STUN send to %s: %s", addr, e)
        while (ev := self.client.next_event()) is not None:
            fut = self._waiters.get(ev.txid)
            if fut is None or fut.done():
                continue
            if isinstance(ev, BindingSucceeded):
                fut.set_result(ev)
            elif isinstance(ev, BindingFailed):
                fut.set_exception(StunFailed(ev.server, ev.reason))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.client.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(when, self._service)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for txid, fut in self._waiters.items():
            if not fut.done():
                fut.set_exception(StunFailed(("?", 0), "socket closed"))
            self.client.cancel(txid)


class StunSocket(asyncio.DatagramProtocol):
    """One UDP socket of its own (one NAT mapping) running binding
    transactions."""

    def __init__(self, client: StunClient) -> None:
        self._transport: asyncio.DatagramTransport | None = None
        self.driver = StunDriver(client, self._sendto)

    def _sendto(self, data: bytes, addr: Addr) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    @classmethod
    async def open(
        cls,
        local: Addr = ("0.0.0.0", 0),
        *,
        rto: float = 0.5,
        rc: int = 7,
        rm: int = 16,
    ) -> StunSocket:
        """Binds a UDP socket on ``local`` (family from the address)."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
        _, proto = await loop.create_datagram_endpoint(
            lambda: cls(StunClient(rto=rto, rc=rc, rm=rm)), local_addr=local, family=family
        )
        return proto

    @property
    def local_address(self) -> Addr:
        assert self._transport is not None
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: CPython's selector datagram transport does
        # not derive from asyncio.DatagramTransport before 3.12.
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.driver.feed(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors only reach connected UDP sockets on Linux; the
        # transaction's own timeout decides either way.
        logger.debug("STUN socket %s: %s", self.local_address, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.driver.close()

    async def binding(
        self, server: Addr, *, change_ip: bool = False, change_port: bool = False
    ) -> BindingSucceeded:
        """One binding transaction (see :meth:`StunDriver.binding`)."""
        return await self.driver.binding(server, change_ip=change_ip, change_port=change_port)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self.driver.close()

    async def __aenter__(self) -> StunSocket:
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        e: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def route_source(server: Addr) -> str:
    """The local address the kernel would send from towards ``server``
    (a connected UDP socket sends nothing)."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(server)
        return str(s.getsockname()[0])


class _Binder(Protocol):
    async def binding(
        self, server: Addr, *, change_ip: bool = False, change_port: bool = False
    ) -> BindingSucceeded: ...


async def _probe(sock: _Binder, test: str, server: Addr, **change: bool) -> Probe:
    t0 = time.monotonic()
    try:
        ok = await sock.binding(server, **change)
    except StunFailed as e:
        logger.debug("STUN test %s to %s: %s", test, server, e.reason)
        return Probe(test, server, None, None, None, time.monotonic() - t0)
    return Probe(test, server, ok.mapped, ok.source, ok.other, time.monotonic() - t0, ok.rtt)


async def mapping_probes(sock: _Binder, servers: Sequence[Addr]) -> list[Probe]:
    """Test I to ``servers[0]``; then, from the same socket, Tests II (other
    IP, primary port) and III (other IP and port) when the server names an
    RFC 5780 OTHER-ADDRESS, else one test to ``servers[1]`` when given."""
    primary = servers[0]
    first = await _probe(sock, "I", primary)
    probes = [first]
    if first.mapped is not None:
        if first.other is not None:
            other = first.other
            probes += await asyncio.gather(
                _probe(sock, "II", (other[0], primary[1])),
                _probe(sock, "III", other),
            )
        elif len(servers) > 1:
            probes.append(await _probe(sock, "II-server", servers[1]))
    return probes


async def probe_nat(
    servers: Sequence[Addr],
    *,
    host: str = "0.0.0.0",
    rto: float = 0.2,
    rc: int = 3,
    filter_rc: int = 2,
    rm: int = 4,
) -> NatBehaviour:
    """Runs the RFC 5780 tests (or what the servers allow) and classifies.

    Mapping: :func:`mapping_probes` on one socket. Filtering (RFC 5780
    servers only): from a fresh socket, so no earlier flow opens the NAT's
    filter, a request to the primary asking the answer to come from the
    other IP and port, then from the other port only. A filtering test
    "fails" by design behind a filtering NAT, so it uses ``filter_rc``
    requests: with the defaults an unanswered one ends after 0.2 + 0.8 = 1 s
    (the second request goes out at 0.2 s, the client gives up Rm x RTO later).
    """
    if not servers:
        raise ValueError("probe_nat needs at least one STUN server")
    primary = servers[0]
    local_ip = route_source(primary)
    async with await StunSocket.open((host, 0), rto=rto, rc=rc, rm=rm) as sock:
        local = (local_ip, sock.local_address[1])
        probes = await mapping_probes(sock, servers)
    first = probes[0]
    if first.mapped is not None and first.other is not None:
        async with await StunSocket.open((host, 0), rto=rto, rc=filter_rc, rm=rm) as fsock:
            base = await _probe(fsock, "filter-base", primary)
            if base.mapped is not None:
                probes.append(base)
                probes.append(
                    await _probe(fsock, "filter-ip-port", primary, change_ip=True, change_port=True)
                )
                if probes[-1].mapped is None:
                    probes.append(await _probe(fsock, "filter-port", primary, change_port=True))
    return classify(local, probes)


class _StunListener(Protocol):
    role: str
    address: Addr
    stun: StunDriver


async def probe_listener(
    listeners: Sequence[_StunListener], servers: Sequence[str]
) -> NatBehaviour | None:
    """The mapping tests (:func:`mapping_probes`) from a service's live UDP
    listening socket, whose mapping is the one peers have to reach; returns
    ``None`` when no listener or server fits. ``servers``: ``"host:port"``
    (hostnames resolved here; the first address of the listener's family)."""
    from crust.config import parse_host_port  # deferred: config imports the core

    loop = asyncio.get_running_loop()
    for listener in listeners:
        if listener.role != "live":
            continue
        family = socket.AF_INET6 if ":" in listener.address[0] else socket.AF_INET
        resolved: list[Addr] = []
        for text in servers:
            host, port = parse_host_port(text)
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, family=family, type=socket.SOCK_DGRAM), 3.0
                )
            except (OSError, asyncio.TimeoutError) as e:
                logger.info("STUN server %s: cannot resolve: %s", text, e)
                continue
            resolved.append((str(infos[0][4][0]), port))
        if not resolved:
            continue
        probes = await mapping_probes(listener.stun, resolved)
        host = listener.address[0]
        if host in ("0.0.0.0", "::"):
            host = route_source(resolved[0])
        result = classify((host, listener.address[1]), probes)
        logger.info(
            "STUN: %s:%d is seen at %s (mapping %s)",
            host, listener.address[1], result.reflexive, result.mapping.value,
        )  # fmt: skip
        return result
    return None
