"""TCP transport: the same handshake and engine packets, framed on a stream.

Each frame is a 2-byte big-endian length and one packet (a handshake packet
or an engine packet), so the application cannot tell TCP from UDP except
by ``Peer.path``. TCP already paces and retransmits, so the engine runs
with pacing off over it; its own acknowledgments still bound the buffers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from typing import TYPE_CHECKING, Any

from crust import _core
from crust.peer import Address, now_us

if TYPE_CHECKING:
    from crust.handshake import HandshakeResult, Initiator
    from crust.service import Service

__all__ = ["TcpLink", "TcpListener"]

logger = logging.getLogger(__name__)

_LEN = struct.Struct(">H")
MAX_FRAME = 65535


class TcpLink(asyncio.Protocol):
    """One TCP stream: handshake first, then the engine connection."""

    path = "direct-tcp"

    def __init__(self, service: Service, *, responder: Any = None) -> None:
        self.service = service
        self.responder = responder
        self.initiator: Initiator | None = None
        self.handshake: asyncio.Future[HandshakeResult] | None = None
        self._conn: _core.Connection | None = None
        self.address: Address = ("", 0)
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._kicked = False
        self._closed = False
        self._loop = asyncio.get_running_loop()

    @property
    def conn(self) -> _core.Connection:
        """The engine connection (only once the handshake completed)."""
        assert self._conn is not None, "no connection before the handshake"
        return self._conn

    # -- asyncio.Protocol ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.address = transport.get_extra_info("peername")[:2]
        self.service.tcp_links.add(self)
        if self.responder is not None and self.service.is_blacklisted_address(self.address):
            transport.abort()  # blacklisted: not one byte of answer
            self._closed = True
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            import socket

            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        now = now_us()
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            (size,) = _LEN.unpack_from(buf, pos)
            if n - pos - 2 < size:
                break
            frame = bytes(buf[pos + 2 : pos + 2 + size])
            pos += 2 + size
            self._on_frame(frame, now)
            if self._closed:
                return
        del buf[:pos]
        if self._conn is not None:
            self._after_input(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.service.tcp_links.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(
                ConnectionError(f"TCP connection closed during the handshake ({exc or 'EOF'})")
            )
        if self._conn is not None:
            self.service.on_link_lost(self, f"TCP connection closed ({exc or 'EOF'})")

    # -- frames ------------------------------------------------------------

    def _write(self, packets: list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        out = bytearray()
        for p in packets:
            out += _LEN.pack(len(p))
            out += p
        self.transport.write(out)

    def _on_frame(self, frame: bytes, now: int) -> None:
        if self._conn is not None and frame and not frame[0] & 0x80:
            self._conn.receive_datagram(frame, now)
            return
        if self.initiator is not None and self.handshake is not None:
            self.initiator.receive_datagram(frame, self.address, now)
            self._pump_initiator(now)
            return
        if self.responder is not None and self._conn is None:
            replies = self.responder.receive_datagram(frame, self.address, now)
            self._write([r for r, _ in replies])
            for result in self.service.take_completed(self.responder):
                self._established(result, incoming=True)
            return
        self.service.count_failure(self.address, None)

    # -- handshake -------------------------------------------------------

    def start_dial(self, remote: Any, timeout: float) -> asyncio.Future[HandshakeResult]:
        self.initiator = self.service.make_initiator(
            remote, os.urandom(_core.CID_LEN), self.address, timeout
        )
        self.handshake = self._loop.create_future()
        self._pump_initiator(now_us())
        return self.handshake

    def _pump_initiator(self, now: int) -> None:
        ini = self.initiator
        fut = self.handshake
        if ini is None or fut is None:
            return
        self._write(ini.datagrams_to_send(now))
        if fut.done():
            return
        if ini.result is not None:
            fut.set_result(ini.result)
        elif ini.error is not None:
            fut.set_exception(ConnectionError(str(ini.error)))
        else:
            t = ini.get_timer()
            if t is not None:
                self._arm(t, self._initiator_timer)

    def _initiator_timer(self) -> None:
        if self.initiator is not None and not self._closed:
            now = now_us()
            self.initiator.handle_timer(now)
            self._pump_initiator(now)

    def establish(self, result: HandshakeResult) -> TcpLink:
        """Create the engine connection of a completed outgoing handshake."""
        return self._established(result, incoming=False)

    def _established(self, result: HandshakeResult, *, incoming: bool) -> TcpLink:
        if self.initiator is not None:
            self.initiator.confirm()  # a stream loses nothing: the finish arrived
            self._write(self.initiator.datagrams_to_send(now_us()))
        self.initiator = None
        self._conn = self.service.make_connection(result, pacing=0)
        if incoming:
            self.service.on_established(self, result, incoming=True)
        self.kick()
        return self

    # -- engine ------------------------------------------------------------

    def kick(self) -> None:
        if not self._kicked and not self._closed:
            self._kicked = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._kicked = False
        if not self._closed and self._conn is not None:
            self._after_input(now_us())

    def _after_input(self, now: int) -> None:
        conn = self.conn
        events = conn.poll_events()
        if events:
            self.service.on_conn_events(self, events)
        while True:
            packets = conn.datagrams_to_send(now, 256)
            if not packets:
                break
            self._write(packets)
        t = conn.get_timer()
        if t is not None:
            self._arm(t, self._engine_timer)
        if conn.is_closed:
            self.close_transport()

    def _engine_timer(self) -> None:
        if self._closed or self._conn is None:
            return
        now = now_us()
        self._conn.handle_timer(now)
        self._after_input(now)

    def _arm(self, t: int, cb: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(max(0.0, (t - now_us()) / 1e6), cb)

    def close(self) -> None:
        """Forget the link (the service calls this once the peer is gone)."""
        self.close_transport()

    def close_transport(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class TcpListener:
    """A listening TCP socket; each accepted stream becomes a :class:`TcpLink`."""

    transport = "tcp"

    def __init__(self, service: Service, server: asyncio.Server, role: str) -> None:
        self.service = service
        self.server = server
        self.role = role
        self.address: Address = server.sockets[0].getsockname()[:2]

    @classmethod
    async def start(cls, service: Service, sock: Any, role: str) -> TcpListener:
        responder = service.make_responder()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: TcpLink(service, responder=responder), sock=sock)
        return cls(service, server, role)

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def dial_tcp(
    service: Service, addr: Address, remote: Any, timeout: float
) -> tuple[TcpLink, HandshakeResult]:
    """Connect a TCP stream to ``addr`` and run the handshake over it."""
    loop = asyncio.get_running_loop()
    _, link = await loop.create_connection(lambda: TcpLink(service), addr[0], addr[1])
    try:
        result = await link.start_dial(remote, timeout)
    except BaseException:
        link.close_transport()
        raise
    return link, result
