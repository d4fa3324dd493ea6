"""TCP transport: the same handshake and engine packets, framed on a stream.

Each frame is a 2-byte big-endian length and one packet (a handshake packet
or an engine packet), so the application cannot tell TCP from UDP except
by ``Peer.path``. The engine connection runs in its stream-transport mode
(``Config.stream_transport``): TCP already retransmits, orders, paces and
controls congestion, so the engine does none of that and builds packets of
up to 64 KiB; its acknowledgments still release the send buffer, and flow
control still bounds the receiver's memory.

The data path calls Python once per read and once per write, not per
packet: reads land in a buffer shared by every link of the thread
(``asyncio.BufferedProtocol``), which ``Connection.receive_stream`` parses
and decrypts in C at once; only a partial frame left at the end of a read
is kept per link, so an idle link holds no read buffer. Writes are whole
batches of framed packets from ``Connection.stream_to_send``. Handshake
frames on the same stream go through the sans-IO handshake in Python.
Backpressure: while asyncio's write buffer is above its high-water mark
(``pause_writing``) no packets are produced; data waits in the engine's
bounded send buffer, and ``Peer.send`` waits once that is full.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

from crust import _core
from crust.errors import ConnectError, ConnectTimeout
from crust.handshake.driver import Dial, DialFailed, Established, Misbehaved
from crust.paths import PathName
from crust.peer import Address, now_us
from crust.wire import LONG_HEADER as _LONG_HEADER

if TYPE_CHECKING:
    from crust.handshake import HandshakeResult, Initiator
    from crust.handshake.driver import HandshakeDriver
    from crust.node import Node

__all__ = ["TcpLink", "TcpListener"]

logger = logging.getLogger(__name__)

_LEN = struct.Struct(">H")
_HDR = _LEN.size
MAX_FRAME = 65535
# Before a stream authenticated, frames are handshake packets, which fit a
# minimum-MTU datagram: a larger one is an attacker parking buffer space
# (6,000 streams x 64 KiB partial frames held 390 MB), and ends the stream.
_MAX_PREAUTH_FRAME = 2048

# Reads go into one buffer per thread (links are served one at a time by
# the loop, and each read is processed before the next starts): large, so
# bulk transfers make few calls per byte, and shared, so 10,000 idle links
# do not hold 10,000 buffers. It always has room for a whole frame after
# the partial one a link brings back.
_READ_SIZE = 2 << 20
_scratch = threading.local()


def _read_buffer(keep: int) -> bytearray:
    """This thread's read buffer, with room for ``keep`` bytes and a whole
    frame after them."""
    buf: bytearray | None = getattr(_scratch, "buf", None)
    if buf is None or len(buf) < keep + _HDR + MAX_FRAME:
        buf = _scratch.buf = bytearray(max(_READ_SIZE, keep + _HDR + MAX_FRAME))
    return buf


# Bytes of framed packets built per transport write.
_WRITE_CHUNK = 512 << 10
# asyncio's write buffer: stop producing above HIGH, resume below LOW.
_WRITE_HIGH = 1 << 20
_WRITE_LOW = 256 << 10


class TcpLink(asyncio.BufferedProtocol):
    """One TCP stream: handshake first, then the engine connection."""

    path: PathName = "direct-tcp"

    def __init__(self, service: Node, *, responder: Any = None) -> None:
        self.service = service
        self.responder = responder
        # The stream's handshakes (crust.handshake.driver): made by
        # start_dial, or by the first frame of an accepted stream, around
        # the listener's shared responder.
        self._handshakes: HandshakeDriver | None = None
        self._dial: Dial | None = None
        # A completed dial's engine connection, until establish() takes it.
        self._dialled: _core.Connection | None = None
        self.handshake: asyncio.Future[HandshakeResult] | None = None
        self._conn: _core.Connection | None = None
        self.address: Address = ("", 0)
        self.transport: asyncio.Transport | None = None
        # While a read is processed: the thread's read buffer, its
        # unprocessed bytes being _rbuf[_rstart:_rend]. Between reads: the
        # bytes left over (a partial frame, or frames held for establish()).
        self._rbuf = bytearray()
        self._rstart = 0
        self._rend = 0
        self._partial = b""
        self._held = False  # engine packets wait for establish()
        self._paused = False  # asyncio's write buffer is full
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None  # engine deadline the timer is for
        self._kicked = False
        self._closed = False
        # Inbound: closes the stream if no handshake completed in time.
        self._preauth_timer: asyncio.TimerHandle | None = None
        self._refused = 0  # datagrams the connection refused, as last reported
        self._loop = asyncio.get_running_loop()

    @property
    def initiator(self) -> Initiator | None:
        """The outgoing handshake, until its connection is established."""
        return self._dial.initiator if self._dial is not None else None

    @property
    def conn(self) -> _core.Connection:
        """The engine connection (only once the handshake completed)."""
        assert self._conn is not None, "no connection before the handshake"
        return self._conn

    # -- asyncio.BufferedProtocol --------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.service.tcp_links.add(self)
        if peer is None:  # reset before we saw it: nothing to serve
            self.abort()
            return
        self.address = peer[:2]
        if self.responder is not None and (
            self.service.closing
            or self.service.is_blacklisted_address(self.address)
            or not self.service.tcp_preauth.admit(self, self.address[0])
        ):
            # Shutting down, blacklisted or over the cap: not one byte of answer.
            self.abort()
            return
        if self.responder is not None:
            self._preauth_timer = self._loop.call_later(
                self.service.config.tcp_handshake_timeout, self._handshake_expired
            )
        transport.set_write_buffer_limits(high=_WRITE_HIGH, low=_WRITE_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def get_buffer(self, sizehint: int) -> memoryview:
        self._load_partial()
        return memoryview(self._rbuf)[self._rend :]

    def buffer_updated(self, nbytes: int) -> None:
        self._rend += nbytes
        self._process(now_us())
        self._keep_partial()

    def _load_partial(self) -> None:
        """Put the bytes left from the last read at the front of the read
        buffer (a same-length slice assignment: allowed while asyncio may
        still hold a view of it)."""
        partial = self._partial
        n = len(partial)
        buf = _read_buffer(n)
        if n:
            buf[:n] = partial
        self._rbuf, self._rstart, self._rend = buf, 0, n
        self._partial = b""

    def _keep_partial(self) -> None:
        """Copy what the read left unprocessed out of the shared buffer."""
        if self._rend > self._rstart:
            self._partial = bytes(self._rbuf[self._rstart : self._rend])
        self._rbuf, self._rstart, self._rend = bytearray(), 0, 0

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.service.tcp_links.discard(self)
        self._authenticated_or_gone()
        self._cancel_timer()
        if self.handshake is not None and not self.handshake.done():
            self.handshake.set_exception(
                ConnectionError(f"TCP connection closed during the handshake ({exc or 'EOF'})")
            )
        if self._conn is not None:
            # Nothing can come or go on the connection any more: it is done
            # now, whether or not its engine finished closing (with the
            # stream and its timer gone, it never would).
            self.service.on_link_done(self, f"TCP connection closed ({exc or 'EOF'})")

    # -- frames ------------------------------------------------------------

    def _process(self, now: int) -> None:
        """Feed the buffered bytes to the engine (in C, many frames per call)
        and the handshake (in Python, one frame at a time)."""
        buf = self._rbuf
        start, end = self._rstart, self._rend
        while start < end:
            conn = self._conn
            if conn is not None:
                start += conn.receive_stream(memoryview(buf)[start:end], now)
            if end - start < _HDR:
                break
            (size,) = _LEN.unpack_from(buf, start)
            if conn is None and self.responder is not None and size > _MAX_PREAUTH_FRAME:
                self.service.tcp_preauth.counts["oversized_frames"] += 1
                self.abort()
                return
            if end - start - _HDR < size:
                break  # a partial frame: wait for the rest
            if conn is None and size and not buf[start + _HDR] & _LONG_HEADER:
                if self._hold_engine_packets():
                    break
            frame = bytes(buf[start + _HDR : start + _HDR + size])
            start += _HDR + size
            self._rstart = start
            self._on_frame(frame, now)
            if self._closed:
                return
        if start == end:
            start = end = 0
        self._rstart, self._rend = start, end
        if self._conn is not None:
            self._after_input(now)

    def _hold_engine_packets(self) -> bool:
        """An engine packet before our connection exists: the handshake
        completed (its result is on its way to ``establish``), so keep the
        packet, and stop reading until then. Anything else is dropped."""
        if self._dialled is None:
            return False
        if not self._held and self.transport is not None:
            self._held = True
            self.transport.pause_reading()
        return True

    def _write(self, packets: list[bytes]) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        out = bytearray()
        for p in packets:
            out += _LEN.pack(len(p))
            out += p
        self.transport.write(out)

    def _on_frame(self, frame: bytes, now: int) -> None:
        if self._conn is not None and frame and not frame[0] & _LONG_HEADER:
            self._conn.receive_datagram(frame, now)
            return
        hs = self._handshakes
        if self._dial is not None and hs is not None:
            hs.receive_datagram(frame, self.address, now)
            self._handshake_io(now)
            return
        if self.responder is not None and self._conn is None:
            if self.service.closing:
                self.close_transport()  # shutting down: no new peer
                return
            if hs is None:
                hs = self._handshakes = self.service.make_driver(
                    responder=self.responder, reliable=True, pacing=0, stream_transport=1
                )
            hs.receive_datagram(frame, self.address, now)
            self._handshake_io(now)
            return
        self.service.count_failure(self.address, None)

    # -- handshake -------------------------------------------------------

    def start_dial(self, remote: Any, timeout: float) -> asyncio.Future[HandshakeResult]:
        # A stream loses nothing: the XX finish is sent once (reliable).
        hs = self._handshakes = self.service.make_driver(
            accept=False, reliable=True, pacing=0, stream_transport=1
        )
        now = now_us()
        self._dial = hs.connect(self.address, remote, now=now, timeout_us=int(timeout * 1e6))
        self.handshake = self._loop.create_future()
        self._handshake_io(now)
        return self.handshake

    def _handshake_io(self, now: int) -> None:
        """Write what the stream's handshake driver has to send (all of it
        to the far end of this stream); act on its events."""
        hs = self._handshakes
        if hs is None:
            return
        self._write([d for d, _ in hs.datagrams_to_send(now)])
        while (ev := hs.next_event()) is not None:
            fut = self.handshake
            if isinstance(ev, Established):
                assert ev.connection is not None
                if ev.incoming:
                    self._established(ev.result, ev.connection, incoming=True)
                elif fut is not None and not fut.done():
                    self._dialled = ev.connection
                    fut.set_result(ev.result)
            elif isinstance(ev, DialFailed):
                if fut is not None and not fut.done():
                    # A ConnectionError still (callers catch that), and a
                    # TimeoutError when the handshake timed out.
                    kind = ConnectTimeout if isinstance(ev.error, TimeoutError) else ConnectError
                    fut.set_exception(kind(str(ev.error)))
            elif isinstance(ev, Misbehaved):
                self.service.count_failure(ev.addr, None, ev.count)
        if self._conn is None and not self._closed:
            t = hs.get_timer()
            if t is not None:
                self._arm(t, self._handshake_timer)

    def _handshake_timer(self) -> None:
        self._timer = None
        if self._handshakes is not None and not self._closed:
            now = now_us()
            self._handshakes.handle_timer(now)
            self._handshake_io(now)

    def establish(self, result: HandshakeResult) -> TcpLink:
        """Create the engine connection of a completed outgoing handshake."""
        conn = self._dialled
        if conn is None:
            conn = self.service.make_connection(result, pacing=0, stream_transport=1)
        return self._established(result, conn, incoming=False)

    def _established(
        self, result: HandshakeResult, conn: _core.Connection, *, incoming: bool
    ) -> TcpLink:
        self._dial = None
        self._dialled = None
        self._handshakes = None
        self._cancel_timer()
        self._conn = conn
        self._authenticated_or_gone()
        if incoming:
            self.service.on_established(self, result, incoming=True)
        if self._held:
            # Engine packets that came before the connection existed.
            self._held = False
            if self.transport is not None and not self._closed:
                self.transport.resume_reading()
            self._loop.call_soon(self._process_held)
        self.kick()
        return self

    def _process_held(self) -> None:
        if not self._closed and self._conn is not None:
            self._load_partial()
            self._process(now_us())
            self._keep_partial()

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
        self._refused = self.service.note_refused(self, self._refused)
        tr = self.transport
        if tr is not None and not tr.is_closing():
            # Whole batches of packets per write, while asyncio's buffer
            # has room (write() may call pause_writing at once).
            while not self._paused:
                data = conn.stream_to_send(now, _WRITE_CHUNK)
                if not data:
                    break
                tr.write(data)
                if len(data) < _WRITE_CHUNK - _HDR - _core.MIN_MTU:
                    break  # the engine had no more
        # Re-arm only for an earlier deadline: most reads and writes push
        # the engine's deadline later (idle, keepalive), and a timer that
        # fires early is harmless (it runs the engine's timers and re-arms).
        t = conn.get_timer()
        if t is not None and (self._timer_at is None or t < self._timer_at):
            self._arm(t, self._engine_timer)
            self._timer_at = t
        if conn.is_closed:
            self.close_transport()

    def _engine_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        if self._closed or self._conn is None:
            return
        now = now_us()
        self._conn.handle_timer(now)
        self._after_input(now)

    def _arm(self, t: int, cb: Any) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(max(0.0, (t - now_us()) / 1e6), cb)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = None

    def close(self) -> None:
        """Forget the link (the service calls this once the peer is gone)."""
        self.close_transport()

    # -- before authentication ---------------------------------------------

    def _handshake_expired(self) -> None:
        self._preauth_timer = None
        if self._conn is None and not self._closed:
            self.service.tcp_preauth.counts["handshake_timeouts"] += 1
            self.abort()

    def _authenticated_or_gone(self) -> None:
        """Stop counting this stream as unauthenticated."""
        if self._preauth_timer is not None:
            self._preauth_timer.cancel()
            self._preauth_timer = None
        self.service.tcp_preauth.done(self)

    def abort(self) -> None:
        """Drop the stream at once (an RST, no lingering), before any
        engine connection exists."""
        self._closed = True
        self._authenticated_or_gone()
        if self.transport is not None:
            self.transport.abort()

    def close_transport(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class TcpListener:
    """A listening TCP socket; each accepted stream becomes a :class:`TcpLink`."""

    transport = "tcp"

    def __init__(self, service: Node, server: asyncio.Server, role: str) -> None:
        self.service = service
        self.server = server
        self.role = role
        self.address: Address = server.sockets[0].getsockname()[:2]

    @classmethod
    async def start(cls, service: Node, sock: Any, role: str) -> TcpListener:
        responder = service.make_responder()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: TcpLink(service, responder=responder), sock=sock)
        return cls(service, server, role)

    def stop_accepting(self) -> None:
        """Accept no more streams (the service is shutting down); those
        already open are left to the service."""
        self.server.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def dial_tcp(
    service: Node, addr: Address, remote: Any, timeout: float
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
