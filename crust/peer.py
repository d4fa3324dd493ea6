"""A connected, authenticated peer as the application sees it."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from crust import _core
from crust.errors import ConnectionClosed, WouldBlock
from crust.paths import PathName

if TYPE_CHECKING:
    # Typing only (Python 3.12's collections.abc.Buffer): any object with
    # the buffer protocol, bytes, bytearray, memoryview, numpy arrays...
    from typing_extensions import Buffer

    from crust.identity import PeerId

__all__ = ["Peer", "PeerStats"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]


class Link(Protocol):
    """What a transport provides for one connection (UDP endpoint or TCP
    stream): the engine connection, and ways to get its packets moving."""

    path: PathName
    address: Address

    @property
    def conn(self) -> _core.Connection:
        """The engine connection."""

    def kick(self) -> None:
        """Transmit what the connection has queued, soon (coalesced)."""

    def close(self) -> None:
        """Forget the connection at the transport (after it closed)."""


@dataclass(frozen=True, slots=True)
class PeerStats:
    """A snapshot of one connection (times in seconds, sizes in bytes)."""

    path: PathName
    cipher: str
    rtt: float
    min_rtt: float
    cwnd: int
    bytes_in_flight: int
    pacing_rate: int
    sent_bytes: int
    received_bytes: int
    sent_messages: int
    received_messages: int
    lost_packets: int
    retransmitted_bytes: int
    mtu: int
    send_buffered: int
    recv_buffered: int

    @classmethod
    def from_engine(cls, path: PathName, st: dict[str, int], cipher: str = "") -> PeerStats:
        return cls(
            path=path,
            cipher=cipher,
            rtt=st["srtt_us"] / 1e6,
            min_rtt=st["min_rtt_us"] / 1e6,
            cwnd=st["cwnd"],
            bytes_in_flight=st["bytes_in_flight"],
            pacing_rate=st["pacing_rate"],
            sent_bytes=st["tx_bytes"],
            received_bytes=st["rx_bytes"],
            sent_messages=st["tx_msgs"],
            received_messages=st["rx_msgs"],
            lost_packets=st["lost_packets"],
            retransmitted_bytes=st["retransmitted_bytes"],
            mtu=st["mtu"],
            send_buffered=st["send_buffered"],
            recv_buffered=st["recv_buffered"],
        )


def now_us() -> int:
    """The engine's clock: monotonic microseconds."""
    return time.monotonic_ns() // 1000


class Peer:
    """One connection to an authenticated peer.

    ``id`` is the peer's :class:`~crust.identity.PeerId`; ``path`` which
    transport carries it (``"direct-tcp"`` or ``"direct-udp"``);
    ``incoming`` whether the peer dialled us. Send with :meth:`send`
    (waits while the send buffer is full) or :meth:`send_nowait`.
    """

    def __init__(self, peer_id: PeerId, link: Link, *, incoming: bool, extra: Any = None) -> None:
        self.id = peer_id
        self._link = link
        self.incoming = incoming
        self.maintained = False
        self.last_used = time.monotonic()
        self.closed_reason: str | None = None
        #: Why the paths tried before this one failed (connect by peer id),
        #: e.g. "udp punch: ...; tcp punch: ..."; empty when the first worked.
        self.why = ""
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = asyncio.Event()
        # Transport-specific state (e.g. the handshake result for rekeying).
        self.extra = extra
        #: The packet cipher the handshake chose (a key of
        #: crust.handshake.CIPHERS), set by the service.
        self.cipher = ""

    def __repr__(self) -> str:
        state = "closed" if self.closed_reason else "open"
        return f"<Peer {self.id.short} {self.path} {self.address[0]}:{self.address[1]} {state}>"

    @property
    def path(self) -> PathName:
        """How the connection travels: ``direct-tcp``, ``direct-udp``,
        ``punched-udp``, ``punched-tcp`` or ``relayed`` (it can change, from
        ``relayed`` to ``punched-udp``, when a punch succeeds later)."""
        return self._link.path

    @property
    def address(self) -> Address:
        """The peer's address on the current path, ``(host, port)``."""
        return self._link.address

    @property
    def is_connected(self) -> bool:
        """False once the connection ended (``closed_reason`` says why)."""
        return self.closed_reason is None

    @property
    def stats(self) -> PeerStats:
        """A snapshot of this connection's figures (:class:`PeerStats`)."""
        return PeerStats.from_engine(self.path, self._link.conn.stats(), self.cipher)

    def send_nowait(self, data: Buffer, priority: int = 0) -> int:
        """Queue one message (any bytes-like object; copied once, into the
        engine). Returns its message id. Raises :class:`WouldBlock` when the
        send buffer is full, :class:`ConnectionClosed` after the end,
        :class:`~crust.errors.MessageTooLarge` and ``ValueError`` for bad
        arguments; nothing already queued is ever lost by a failed call."""
        if self.closed_reason is not None:
            raise ConnectionClosed(f"peer {self.id.short} is disconnected: {self.closed_reason}")
        msg_id: int = self._link.conn.send(data, priority, now=now_us())
        self.last_used = time.monotonic()
        self._link.kick()
        return msg_id

    async def send(self, data: Buffer, priority: int = 0) -> int:
        """Queue one message, waiting while the send buffer is full
        (backpressure). Returns its message id."""
        while True:
            try:
                return self.send_nowait(data, priority)
            except WouldBlock:
                # _on_closed sets _writable too, so one wait covers both;
                # bulk senders land here for every message, and two tasks
                # plus asyncio.wait per message showed in profiles.
                self._writable.clear()
                await self._writable.wait()

    async def wait_closed(self) -> None:
        """Return once the connection has ended."""
        await self._closed.wait()

    # -- called by the service -------------------------------------------

    def _on_writable(self) -> None:
        self._writable.set()

    def _on_closed(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        self._closed.set()
        self._writable.set()
