"""A connection whose datagrams travel inside control messages through a
mutual peer (the :class:`~crust.peer.Link` of a relayed connection).

The engine connection runs in datagram mode, exactly as over UDP: its
packets (ciphertext) are wrapped as ``RELAY DATA`` messages to the relay
peer, which forwards them to the other side (crust.nat.relay). Datagrams
that do not fit the relay's queue are dropped; the engine retransmits.
When a direct path is punched later, :meth:`upgraded` hands the same
engine connection to the UDP endpoint; datagrams still arriving through
the relay are fed to it for a while, so nothing in flight is lost. When
the relay goes away, the link is *orphaned* (:attr:`orphaned`): the engine
connection lives on, and crust.asyncio.relaying moves it to a new relay
session through another mutual peer (design note 0056).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from crust import _core
from crust.control import ControlKind
from crust.errors import CrustError
from crust.nat import relay
from crust.paths import PathName
from crust.peer import Address, now_us

if TYPE_CHECKING:
    from crust.node import Node
    from crust.peer import Peer

__all__ = ["RelayLink"]

logger = logging.getLogger(__name__)


class RelayLink:
    """One relayed connection (``path == "relayed"``)."""

    path: PathName = "relayed"

    def __init__(
        self,
        service: Node,
        via: Peer,
        session: bytes,
        address: Address,
        *,
        dialled: bool = False,
    ) -> None:
        self.service = service
        self.via = via
        self.session = session
        #: Whether our side asked for the relayed connection (the requester):
        #: that side re-routes it when the relay goes away.
        self.dialled = dialled
        #: Why the relay is gone (the relaying peer left, or it closed the
        #: session); None while it carries the connection.
        self.orphaned: str | None = None
        #: Datagrams that arrived through this session (a moved connection
        #: knows from the first one that the far side moved too).
        self.received = 0
        #: When the relayed connection began (kept across moves), and how
        #: many times a direct path was tried under it: for ``Peer.why``.
        self.started = asyncio.get_running_loop().time()
        self.tries = 0
        self._heard: asyncio.Event | None = None
        #: Where the relay is (the far peer's real address is unknown).
        self.address = address
        self._conn: _core.Connection | None = None
        self.upgraded_to: object | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._kicked = False
        self._closed = False
        self.sent = 0
        self.dropped = 0
        self._refused = 0  # datagrams the connection refused, as last reported
        self._loop = asyncio.get_running_loop()

    @property
    def conn(self) -> _core.Connection:
        assert self._conn is not None, "no connection before the handshake"
        return self._conn

    @property
    def established(self) -> bool:
        return self._conn is not None

    def attach(self, conn: _core.Connection) -> None:
        self._conn = conn
        self.kick()

    def send_datagram(self, data: bytes) -> bool:
        """Wrap one datagram for the relay; False when it was dropped."""
        if self._closed:
            return False
        try:
            self.service.send_control(
                self.via, ControlKind.RELAY, relay.encode(relay.RelayOp.DATA, self.session, data)
            )
        except (CrustError, ValueError) as e:
            # WouldBlock (the relay connection's buffer is full), the relay
            # peer gone, or an oversized packet: a lost datagram.
            self.dropped += 1
            logger.debug("relayed datagram dropped: %s", e)
            return False
        self.sent += 1
        self.via.last_used = time.monotonic()  # relaying uses that connection
        return True

    def receive_datagram(self, data: bytes) -> None:
        conn = self._conn
        if conn is None or self._closed:
            return
        self.received += 1
        if self._heard is not None:
            self._heard.set()
        now = now_us()
        # A bad datagram is counted by the engine; it must not end the link.
        with contextlib.suppress(CrustError):
            conn.receive_datagram(data, now)
        if self.upgraded_to is not None:
            kick = getattr(self.upgraded_to, "kick", None)
            if kick is not None:
                kick()
            return
        self._after_input(now)

    async def wait_heard(self, timeout: float) -> bool:
        """Whether a datagram arrives through this session within ``timeout``."""
        if self.received:
            return True
        self._heard = asyncio.Event()
        try:
            await asyncio.wait_for(self._heard.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        finally:
            self._heard = None
        return True

    def upgraded(self, link: object) -> None:
        """The connection moved to ``link`` (a punched UDP path, or another
        relay session): stop sending and driving it here."""
        self.upgraded_to = link
        self._cancel_timer()

    def orphan(self, reason: str) -> None:
        """The relay is gone: keep the connection, but send nothing and run
        no timer until it moves (a retransmission timer backing off through
        the gap would only delay the catch-up after the move)."""
        self.orphaned = reason
        self._cancel_timer()

    # -- Link ---------------------------------------------------------------

    def kick(self) -> None:
        if not self._kicked and not self._closed and self.upgraded_to is None:
            self._kicked = True
            self._loop.call_soon(self._flush)

    def close(self) -> None:
        self._closed = True
        self._cancel_timer()

    # -- driving the engine ---------------------------------------------------

    def _flush(self) -> None:
        self._kicked = False
        if not self._closed and self._conn is not None and self.upgraded_to is None:
            self._after_input(now_us())

    def _after_input(self, now: int) -> None:
        conn = self.conn
        events = conn.poll_events()
        if events:
            self.service.on_conn_events(self, events)
        self._refused = self.service.note_refused(self, self._refused)
        if self.upgraded_to is not None or self._closed:
            return
        if conn.is_closed:
            self.service.on_link_done(self, "connection closed")
            return
        if self.orphaned is not None:
            return  # no carrier until the connection moves (see orphan)
        for d in conn.datagrams_to_send(now):
            self.send_datagram(d)
        t = conn.get_timer()
        self._cancel_timer()
        if t is not None and not conn.is_closed:
            self._timer = self._loop.call_later(max(0.0, (t - now_us()) / 1e6), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed or self._conn is None or self.upgraded_to is not None or self.orphaned:
            return
        now = now_us()
        self._conn.handle_timer(now)
        self._after_input(now)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
