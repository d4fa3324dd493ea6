"""Birthday punching, the symmetric ("hard") side: many sockets, one wins.

A symmetric NAT gives every (socket, destination) pair its own random
public port, so the easy side cannot know where to send. The hard side
opens ``count`` sockets and sends, from each, punch packets at low TTL to
the easy side's public address: each creates one NAT mapping (and, with
address-dependent filtering, a hole for exactly that address) without
reaching the easy side's NAT. The easy side meanwhile sprays punches at
random ports of the hard side's public address (crust.nat.punch, ``burst``);
with 256 holes among ~64,000 ports, 1,000 probes hit one with probability
~98 % (lab notes: 256 x 1,024 succeeded in ~0.25 s).

The first socket that hears an authentic punch answers it at full TTL and
becomes the connection's socket: it is wrapped in its own
:class:`~crust.asyncio.udp.UdpListener` (role "birthday"), over which the
handshake then runs; the other sockets are closed at once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from typing import TYPE_CHECKING

from crust.asyncio.punch_io import send_with_ttl
from crust.asyncio.udp import UdpListener
from crust.nat.punch import PunchConfig, PunchSession, PunchState, is_punch
from crust.peer import Address, now_us

if TYPE_CHECKING:
    from crust.node import Node

__all__ = ["HardSide"]

logger = logging.getLogger(__name__)

SOCKETS = 256


class HardSide:
    """``count`` sockets punching toward ``targets`` until one is answered."""

    def __init__(
        self,
        service: Node,
        *,
        key: bytes,
        session: bytes,
        responder: bool,
        targets: list[Address],
        host: str,
        prefix: bytes,
        timeout: float,
        count: int = SOCKETS,
    ) -> None:
        self.service = service
        self._loop = asyncio.get_running_loop()
        self._done: asyncio.Future[tuple[UdpListener, Address]] = self._loop.create_future()
        self._done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._socks: dict[int, tuple[socket.socket, PunchSession]] = {}
        self._timer: asyncio.TimerHandle | None = None
        rng = random.Random()
        # Low TTL all along: a punch of ours reaching the easy side's NAT
        # before its probe for that port left would spoil that port there.
        config = PunchConfig(
            interval_us=200_000, low_ttl_us=int(timeout * 1e6), timeout_us=int(timeout * 1e6)
        )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            for _ in range(count):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                self._socks[sock.fileno()] = (sock, PunchSession(
                    key=key, session=session, responder=responder, candidates=targets,
                    prefix=prefix, now=now_us(), config=config, rng=rng,
                ))  # fmt: skip
                sock.setblocking(False)
                sock.bind((host, 0))
                self._loop.add_reader(sock.fileno(), self._readable, sock.fileno())
        except OSError as e:
            # Out of descriptors or ports: fewer sockets, lower odds.
            logger.info("birthday punching with %d sockets: %s", len(self._socks), e)
        self._drive()

    async def wait(self) -> tuple[UdpListener, Address]:
        """The listener on the winning socket and the easy side's address."""
        try:
            return await asyncio.shield(self._done)
        finally:
            if not self._done.done():
                self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for fd, (sock, _) in list(self._socks.items()):
            self._loop.remove_reader(fd)
            sock.close()
        self._socks.clear()
        if not self._done.done():
            self._done.set_exception(ConnectionError("birthday punching stopped"))

    def _readable(self, fd: int) -> None:
        entry = self._socks.get(fd)
        if entry is None:
            return
        sock, ps = entry
        now = now_us()
        for _ in range(16):
            try:
                data, addr = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error reported on this socket
            if is_punch(data) and ps.receive_datagram(data, addr[:2], now):
                self._win(fd, sock, ps, addr[:2])
                return

    def _win(self, fd: int, sock: socket.socket, ps: PunchSession, addr: Address) -> None:
        # Answer at once, at full TTL, before the endpoint takes the socket.
        for data, to, ttl in ps.datagrams_to_send(now_us()):
            send_with_ttl(sock, data, to, ttl)
        self._loop.remove_reader(fd)
        del self._socks[fd]
        self.close_losers()
        listener = UdpListener(self.service, sock, "birthday")
        logger.info("birthday punch: socket %s answered by %s:%d", listener.address, *addr)
        if not self._done.done():
            self._done.set_result((listener, addr))

    def close_losers(self) -> None:
        for fd, (sock, _) in list(self._socks.items()):
            self._loop.remove_reader(fd)
            sock.close()
        self._socks.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drive(self) -> None:
        self._timer = None
        if not self._socks:
            return
        now = now_us()
        nxt: int | None = None
        for sock, ps in self._socks.values():
            ps.handle_timer(now)
            for data, to, ttl in ps.datagrams_to_send(now):
                send_with_ttl(sock, data, to, ttl)
            t = ps.get_timer()
            if t is not None:
                nxt = t if nxt is None else min(nxt, t)
        if all(ps.state is PunchState.FAILED for _, ps in self._socks.values()):
            self.close()
            return
        if nxt is not None:
            self._timer = self._loop.call_later(max(0.0, (nxt - now_us()) / 1e6), self._drive)
