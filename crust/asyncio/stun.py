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
from collections.abc import Sequence
from types import TracebackType
from typing import cast

from crust.nat.classify import NatBehaviour, Probe, classify
from crust.nat.stun import BindingFailed, BindingSucceeded, StunClient, StunFailed

__all__ = ["StunSocket", "probe_nat"]

logger = logging.getLogger(__name__)

Addr = tuple[str, int]


class StunSocket(asyncio.DatagramProtocol):
    """One UDP socket (one NAT mapping) running binding transactions."""

    def __init__(self, client: StunClient) -> None:
        self.client = client
        self._transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[bytes, asyncio.Future[BindingSucceeded]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

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
        self.client.receive_datagram(data, (str(addr[0]), int(addr[1])), self._loop.time())
        self._service()

    def error_received(self, exc: Exception) -> None:
        # ICMP errors only reach connected UDP sockets on Linux; the
        # transaction's own timeout decides either way.
        logger.debug("STUN socket %s: %s", self.local_address, exc)

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self._waiters.values():
            if not fut.done():
                fut.set_exception(StunFailed(("?", 0), "socket closed"))
        self._waiters.clear()
        if self._timer is not None:
            self._timer.cancel()

    async def binding(
        self, server: Addr, *, change_ip: bool = False, change_port: bool = False
    ) -> BindingSucceeded:
        """One binding transaction; raises :class:`StunFailed` on timeout
        or an error response."""
        if self._transport is None or self._transport.is_closing():
            raise StunFailed(server, "socket closed")
        txid = self.client.binding(
            server, self._loop.time(), change_ip=change_ip, change_port=change_port
        )
        fut: asyncio.Future[BindingSucceeded] = self._loop.create_future()
        self._waiters[txid] = fut
        self._service()
        try:
            return await fut
        finally:
            self._waiters.pop(txid, None)
            self.client.cancel(txid)

    def _service(self) -> None:
        now = self._loop.time()
        self.client.handle_timer(now)
        assert self._transport is not None
        if not self._transport.is_closing():
            for data, addr in self.client.datagrams_to_send(now):
                self._transport.sendto(data, addr)
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
        if self._transport is not None:
            self._transport.close()

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


async def _probe(sock: StunSocket, test: str, server: Addr, **change: bool) -> Probe:
    t0 = time.monotonic()
    try:
        ok = await sock.binding(server, **change)
    except StunFailed as e:
        logger.debug("STUN test %s to %s: %s", test, server, e.reason)
        return Probe(test, server, None, None, None, time.monotonic() - t0)
    return Probe(test, server, ok.mapped, ok.source, ok.other, time.monotonic() - t0, ok.rtt)


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

    Mapping: Test I to ``servers[0]``; if it names an OTHER-ADDRESS, Tests II
    (other IP, primary port) and III (other IP and port) from the same
    socket, else one test to ``servers[1]`` when given. Filtering (RFC 5780
    servers only): from a fresh socket, so no earlier flow opens the NAT's
    filter, a request to the primary asking the answer to come from the
    other IP and port, then from the other port only. A filtering test
    "fails" by design behind a filtering NAT, so it uses ``filter_rc``
    requests: with the defaults it costs 0.2 + 0.2 + 0.8 = 1.2 s.
    """
    if not servers:
        raise ValueError("probe_nat needs at least one STUN server")
    primary = servers[0]
    local_ip = route_source(primary)
    probes: list[Probe] = []
    async with await StunSocket.open((host, 0), rto=rto, rc=rc, rm=rm) as sock:
        local = (local_ip, sock.local_address[1])
        first = await _probe(sock, "I", primary)
        probes.append(first)
        if first.mapped is not None:
            if first.other is not None:
                other = first.other
                probes += await asyncio.gather(
                    _probe(sock, "II", (other[0], primary[1])),
                    _probe(sock, "III", other),
                )
            elif len(servers) > 1:
                probes.append(await _probe(sock, "II-server", servers[1]))
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
