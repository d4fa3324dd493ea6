"""A connected, authenticated peer as the application sees it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from crust import _core
from crust.errors import ConnectionClosed, WouldBlock
from crust.paths import PathName
from crust.wire import Address as Address  # re-exported: crust.peer.Address is public

if TYPE_CHECKING:
    # Typing only (Python 3.12's collections.abc.Buffer): any object with
    # the buffer protocol, bytes, bytearray, memoryview, numpy arrays...
    from typing_extensions import Buffer

    from crust.events import NewMessage
    from crust.identity import PeerId
    from crust.subscriptions import Inbound

__all__ = ["Peer", "PeerStats", "Received"]

logger = logging.getLogger(__name__)


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
    #: Bytes of received messages handed up and not yet taken by the
    #: application (they count against the receive budget with
    #: ``recv_buffered``).
    recv_held: int

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
            recv_held=st["recv_held"],
        )


def now_us() -> int:
    """The engine's clock: monotonic microseconds."""
    return time.monotonic_ns() // 1000


class Received(tuple[int, int]):
    """What :meth:`Peer.recv_into` returns: ``(nbytes, priority)``."""

    __slots__ = ()

    def __new__(cls, nbytes: int, priority: int) -> Received:
        return tuple.__new__(cls, (nbytes, priority))

    @property
    def nbytes(self) -> int:
        """Bytes written at the start of the buffer."""
        return self[0]

    @property
    def priority(self) -> int:
        """The message's priority (0 highest)."""
        return self[1]


class PeerOwner(Protocol):
    """What a peer needs from the node that owns it (the service)."""

    def resume_messages(self, peer: Peer, link: Link) -> None:
        """The peer holds few messages again: let ``link`` deliver more."""

    def note_unclaimed(self, peer: Peer) -> None:
        """``peer`` holds messages no reader took (for the next subscription)."""

    async def disconnect(self, peer: Peer, *, timeout: float = 5.0) -> None:
        """Close the peer's connection gracefully."""


#: Messages a peer's connection hands up before the application takes
#: some: past it, complete messages wait in the engine (compact, and still
#: charged to the window). Bounds the Python objects a flood of tiny
#: messages could make; bytes are bounded by the receive budget.
MESSAGES_HELD = 4096
# Window credit is given back in batches of up to this many bytes.
_CREDIT_BATCH = 64 << 10


def credit_batch(window: int) -> int:
    """Bytes of credit a peer gives back at once, for a window of
    ``window`` bytes: small next to it, so holding a batch back never
    keeps the window from reopening (it does at half)."""
    return min(_CREDIT_BATCH, window // 8)


# Every peer's inbox until its first message waits there: it takes
# nothing (maxlen 0), and nothing may be added to it (Peer._own_inbox).
_NO_INBOX: deque[Inbound] = deque(maxlen=0)


class Peer:
    """One connection to an authenticated peer.

    ``id`` is the peer's :class:`~crust.identity.PeerId`; ``path`` which
    transport carries it (``"direct-tcp"`` or ``"direct-udp"``);
    ``incoming`` whether the peer dialled us. Send with :meth:`send`
    (waits while the send buffer is full) or :meth:`send_nowait`; receive
    from this peer alone with :meth:`recv`, :meth:`recv_into` or
    ``async for msg in peer``. ``async with peer:`` closes it at the end.

    A message goes to exactly one reader: once the application reads a
    peer directly (its first ``recv*`` call or iteration, or
    :meth:`crust.Service.accept`), its messages come only through the peer;
    before that they are :class:`~crust.events.NewMessage` events of the
    subscriptions that take messages, or wait (within the receive budget)
    for whichever reader comes first. Messages the application has not
    taken stay charged to the connection's flow-control window, so a peer
    that sends faster than the application reads is made to wait.
    """

    def __init__(
        self,
        peer_id: PeerId,
        link: Link,
        *,
        incoming: bool,
        extra: Any = None,
        owner: PeerOwner | None = None,
    ) -> None:
        self.id = peer_id
        self._link = link
        self._owner = owner
        self.incoming = incoming
        #: Whether this node chose the peer: its application dialled it, or
        #: it is a configured contact (not a peer that dialled us, nor one
        #: that gossip, a beacon or the cache suggested). Only a chosen
        #: rendezvous peer can start a traversal that sends to unverified
        #: addresses without a budget (crust.reflection).
        self.chosen = False
        #: The connection's received bytes already credited to the
        #: reflection budget (crust.reflection).
        self._rx_credited = 0
        self.maintained = False
        #: The peer joined through us (asked us to be its contact, and we
        #: accepted): kept while its link lives, never pruned for being
        #: idle, but it still gives way under the connection caps
        #: (crust.capacity, design note 0053).
        self.joined = False
        self.last_used = time.monotonic()
        self.closed_reason: str | None = None
        #: The current path and how it came about (dialled, punched, relayed
        #: through whom, upgraded or re-routed), then, when connecting by
        #: peer id, what the other attempts ran into: e.g. "relayed through
        #: 3f2a9c1e, which introduced us; udp punch: ...; tcp punch: ...".
        #: Set by the service; it changes with the path (design note 0057).
        self.why = ""
        # Made when first waited on (an asyncio.Event with its deque is
        # ~700 bytes, and most peers are never waited on): issue 22, a
        # node with 100,000 idle peers.
        self._writable: asyncio.Event | None = None
        self._closed: asyncio.Event | None = None
        # Transport-specific state (e.g. the handshake result for rekeying).
        self.extra = extra
        #: The packet cipher the handshake chose (a key of
        #: crust.handshake.CIPHERS), set by the service.
        self.cipher = ""
        # -- receiving (see the class docstring) --
        self._direct = False  # read through the peer, not the events
        self._dialled = False  # the application's connect() made it (not for accept)
        # Messages no reader took yet; a deque of its own from the first
        # one (an empty deque is ~600 bytes).
        self._inbox: deque[Inbound] = _NO_INBOX
        self._recv_waiter: asyncio.Future[None] | None = None
        self._held = 0  # messages handed up and not yet credited back
        self._credit_link: Link | None = None
        self._credit_bytes = 0
        self._credit_batch = _CREDIT_BATCH  # the service sets it from the budget
        # Hands messages to the event subscriptions (the service sets it).
        self._publish: Callable[[Inbound], bool] | None = None
        # A link that stopped handing up messages (MESSAGES_HELD), until
        # the application has taken half of them.
        self._stalled: Link | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed_reason else "open"
        return f"<Peer {self.id.short} {self.path} {self.address[0]}:{self.address[1]} {state}>"

    @property
    def link(self) -> Link:
        """The transport's link carrying the connection now (for crust's
        transports and node core; it changes when the path does: a relayed
        connection upgraded to a punched one, a duplicate replaced)."""
        return self._link

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
        """Queue one message: any contiguous buffer (bytes, bytearray,
        memoryview, a numpy array...), copied once, by the engine, and not
        at all in Python. Returns its message id. Raises :class:`WouldBlock`
        when the send buffer is full, :class:`ConnectionClosed` after the
        end, :class:`~crust.errors.MessageTooLarge` and ``ValueError`` for
        bad arguments; nothing already queued is ever lost by a failed
        call."""
        if self.closed_reason is not None:
            raise ConnectionClosed(f"peer {self.id.short} is disconnected: {self.closed_reason}")
        msg_id: int = self._link.conn.send(data, priority, now=now_us())
        self.last_used = time.monotonic()
        self._link.kick()
        return msg_id

    async def send(self, data: Buffer, priority: int = 0) -> int:
        """Queue one message, waiting while the send buffer is full
        (backpressure: also while the peer's application does not read).
        Returns its message id."""
        while True:
            try:
                return self.send_nowait(data, priority)
            except WouldBlock:
                # _on_closed sets _writable too, so one wait covers both;
                # bulk senders land here for every message, and two tasks
                # plus asyncio.wait per message showed in profiles.
                if self._writable is None:
                    self._writable = asyncio.Event()
                else:
                    self._writable.clear()
                await self._writable.wait()

    async def wait_closed(self) -> None:
        """Return once the connection has ended."""
        if self.closed_reason is not None:
            return  # _on_closed set it
        if self._closed is None:
            self._closed = asyncio.Event()
        await self._closed.wait()

    async def close(self, *, timeout: float = 5.0) -> None:
        """Close gracefully (what was sent is delivered first); waits at
        most ``timeout`` seconds. Messages already received stay readable."""
        if self._owner is not None:
            await self._owner.disconnect(self, timeout=timeout)

    async def __aenter__(self) -> Peer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- receiving ---------------------------------------------------------

    def recv_nowait(self) -> NewMessage:
        """The next message from this peer (``.data``, ``.priority``), in
        order per priority. Raises :class:`WouldBlock` when none is waiting
        and :class:`ConnectionClosed` once the connection ended and every
        message was read."""
        self._direct = True
        if not self._inbox:
            if self.closed_reason is not None:
                raise ConnectionClosed(
                    f"peer {self.id.short} is disconnected: {self.closed_reason}"
                )
            raise WouldBlock(f"no message from peer {self.id.short} yet")
        rec = self._inbox.popleft()
        rec.done()
        return rec.event

    async def recv(self) -> NewMessage:
        """Wait for the next message from this peer (see :meth:`recv_nowait`).
        Cancelling the wait loses nothing."""
        await self._wait_message()
        return self.recv_nowait()

    async def recv_into(self, buffer: Buffer) -> Received:
        """Wait for the next message and copy it into ``buffer`` (any
        writable contiguous buffer: bytearray, memoryview, a numpy array),
        once, with no intermediate copy. Returns :class:`Received`
        ``(nbytes, priority)``. A message larger than the buffer raises
        ``ValueError`` and stays first in line (read it with a larger
        buffer or :meth:`recv`)."""
        view = memoryview(buffer)
        if view.readonly:
            raise TypeError("recv_into needs a writable buffer")
        if not view.c_contiguous:
            raise ValueError("recv_into needs a contiguous buffer")
        target = view.cast("B") if view.format != "B" or view.ndim != 1 else view
        await self._wait_message()
        self._direct = True
        rec = self._inbox[0]
        data = rec.event.data
        n = len(data)
        if n > target.nbytes:
            raise ValueError(
                f"a message of {n} bytes does not fit in a buffer of {target.nbytes} bytes"
            )
        target[:n] = data
        self._inbox.popleft()
        rec.done()
        return Received(n, rec.event.priority)

    def __aiter__(self) -> Peer:
        self._direct = True
        return self

    async def __anext__(self) -> NewMessage:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def _wait_message(self) -> None:
        self._direct = True
        while not self._inbox and self.closed_reason is None:
            waiter = self._recv_waiter
            if waiter is None or waiter.done():
                waiter = self._recv_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiter)

    # -- called by the service -------------------------------------------

    def _deliver(self, rec: Inbound) -> None:
        """A message arrived: to the peer's reader, the subscriptions, or
        the inbox until a reader comes."""
        self._held += 1
        if self._direct or self._publish is None or not self._publish(rec):
            self._own_inbox().append(rec)
            self._wake()

    def _own_inbox(self) -> deque[Inbound]:
        """The inbox to add to: the shared empty one is replaced first."""
        if self._inbox is _NO_INBOX:
            self._inbox = deque()
        return self._inbox

    def _wake(self) -> None:
        w = self._recv_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _give_back(self, rec: Inbound) -> None:
        """A message a closed subscription held and nobody yielded: first in
        line again (the subscription gives them back newest first)."""
        if self._direct or self._publish is None or not self._publish(rec):
            self._own_inbox().appendleft(rec)
            self._wake()
            if self._owner is not None:
                self._owner.note_unclaimed(self)

    def _take_waiting(self) -> list[Inbound]:
        """The messages no reader took yet, for the first subscription that
        takes messages (never those of a peer read directly)."""
        if self._direct or not self._inbox:
            return []
        waiting = list(self._inbox)
        self._inbox.clear()
        return waiting

    def _credit(self, rec: Inbound) -> None:
        """``rec`` reached the application: give its bytes back to the
        window of the connection it came on (in batches)."""
        self._held -= 1
        link = rec.link
        if link is not self._credit_link:
            self._flush_credit()
            self._credit_link = link
        # Batched: one engine call per batch, not per message. What waits
        # here is a small part of the window (at most an eighth), so the
        # window still reopens while it waits.
        self._credit_bytes += rec.charge
        if self._credit_bytes >= self._credit_batch:
            self._flush_credit()
        if self._stalled is not None and self._held <= MESSAGES_HELD // 2:
            stalled, self._stalled = self._stalled, None
            if self._owner is not None:
                self._owner.resume_messages(self, stalled)

    def _flush_credit(self) -> None:
        link, n = self._credit_link, self._credit_bytes
        self._credit_bytes = 0
        if link is not None and n and link.conn.release(n):
            link.kick()  # the window reopened: tell the peer soon

    def _on_writable(self) -> None:
        if self._writable is not None:
            self._writable.set()

    def _on_closed(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
        if self._closed is not None:
            self._closed.set()
        if self._writable is not None:
            self._writable.set()
        self._wake()  # a reader waiting for a message learns of the end
