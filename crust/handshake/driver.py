"""The handshake driver: one object per node or transport endpoint that runs
every handshake there, in and out, sans-IO (design note 0071).

It owns the :class:`~crust.handshake.Responder` (and with it every
admission rule for handshakes from strangers: the cookie round under load,
the per-source rate limits, the cap on handshakes in progress) and the
outgoing :class:`~crust.handshake.Initiator` s, with its own cap on those.
It is driven like an aioquic ``QuicConnection``:

- :meth:`~HandshakeDriver.receive_datagram` ``(data, addr, now)``: a
  long-header datagram; it goes to the dial whose connection id it names,
  else to the responder (if this driver accepts handshakes);
- :meth:`~HandshakeDriver.datagrams_to_send` ``(now)``: ``(bytes, addr)``
  pairs to put on the wire (replies, initiations, retransmissions);
- :meth:`~HandshakeDriver.get_timer` / :meth:`~HandshakeDriver.handle_timer`;
- :meth:`~HandshakeDriver.connect` ``(addr, remote, now=...)``: a new dial;
- :meth:`~HandshakeDriver.next_event`: what happened, in order:
  :class:`Established` (a finished handshake and, given a
  ``make_connection``, its engine connection with the keys installed),
  :class:`DialFailed`, :class:`Unconfirmed` (an XX finish the peer never
  acknowledged: it has no keys) and :class:`Misbehaved` (junk counted
  against the address it came from).

Nothing here reads a clock, touches a socket or imports asyncio: ``now``
(monotonic microseconds) is passed in. The transports keep what is theirs:
UDP the socket and its routing, TCP the stream framing and the caps on
unauthenticated streams (``crust.admission.PreAuthTcp``), the relay its
sessions; they only move bytes and events between the driver and the world.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crust.errors import ConnectError, HandshakeError
from crust.handshake.initiator import Initiator, InitiatorState
from crust.handshake.payload import TransportParams
from crust.handshake.responder import CookiePolicy, Responder
from crust.handshake.result import HandshakeResult
from crust.identity import Identity, PeerId
from crust.wire import CID_LEN, dst_cid
from crust.wire import Address as Addr

if TYPE_CHECKING:
    from crust._core import Connection

__all__ = [
    "DEFAULT_MAX_DIALS",
    "Dial",
    "DialFailed",
    "DriverEvent",
    "Established",
    "HandshakeDriver",
    "Misbehaved",
    "Unconfirmed",
    "install_keys",
]

logger = logging.getLogger("crust.handshake")

#: Outgoing handshakes one driver runs at once. Dials are ours, but what
#: starts them (gossip, beacons, introductions) is often a peer's word:
#: the table has a budget like every other.
DEFAULT_MAX_DIALS = 4096


def install_keys(conn: Connection, result: HandshakeResult) -> Connection:
    """Put a handshake's keys in an engine connection: generation 0 into
    phase 0, generation 1 into phase 1 (later generations when the engine
    asks for them with ``EV_KEYS_NEEDED``: ``result.keys_for_generation``)."""
    k = result.keys
    conn.set_keys(0, k.aead, k.tx_key, k.tx_iv, k.rx_key, k.rx_iv)
    nxt = result.keys_for_generation(1)
    conn.set_keys(1, nxt.aead, nxt.tx_key, nxt.tx_iv, nxt.rx_key, nxt.rx_iv)
    return conn


@dataclass(eq=False)
class Dial:
    """An outgoing handshake: the handle :meth:`HandshakeDriver.connect`
    returns. ``cid`` is our connection id (every reply names it)."""

    cid: bytes
    addr: Addr
    initiator: Initiator
    #: Asked for every datagram sent before the peer answered (its address
    #: is unverified until then); False ends the dial.
    charge: Callable[[int], bool] | None = None
    connection: Connection | None = None
    established: bool = False
    confirmed: bool = False
    seq: int = 0  # order of connect() calls: the order dials send in


@dataclass(frozen=True, eq=False)
class Established:
    """A handshake finished. ``connection``: the engine connection with the
    keys installed (None when the driver has no ``make_connection``)."""

    result: HandshakeResult
    addr: Addr
    incoming: bool
    connection: Connection | None
    dial: Dial | None = None  # outgoing: the handle connect() returned


@dataclass(frozen=True, eq=False)
class DialFailed:
    """An outgoing handshake failed: a :class:`~crust.errors.HandshakeError`
    (a :class:`~crust.errors.HandshakeTimeout` when nobody answered in
    time) or a :class:`~crust.errors.ConnectError` (its charge refused)."""

    dial: Dial
    error: HandshakeError | ConnectError


@dataclass(frozen=True, eq=False)
class Unconfirmed:
    """An XX handshake whose finish message the peer never acknowledged
    (no packet came under the new keys before the finish deadline): every
    copy was lost, so the peer has no connection. Its transport should end
    ``dial.connection`` loudly rather than let it idle out."""

    dial: Dial


@dataclass(frozen=True, eq=False)
class Misbehaved:
    """``count`` datagrams from ``addr`` that only a sender that is not an
    honest peer sends (``Responder.take_failures``)."""

    addr: Addr
    count: int


DriverEvent = Established | DialFailed | Unconfirmed | Misbehaved


class HandshakeDriver:
    """Every handshake of one node or transport endpoint (module doc).

    ``responder``: a :class:`Responder` to share (TCP: one per listener,
    however many streams), or a zero-argument callable making one when the
    first handshake from a stranger arrives, or None to make one here from
    ``cookie_policy``, ``max_pending`` and ``pending_timeout_us``.
    ``accept=False``: dial only; datagrams for no dial are dropped.
    ``make_connection(result, now)``: a new engine connection for a
    finished handshake's connection ids; the driver installs the keys
    (:func:`install_keys`) before it reports it. ``reliable``: the carrier loses
    nothing (a TCP stream, a relay's control channel), so an XX finish
    needs no repeats: a dial is confirmed as soon as it completes.
    ``admit(addr)``: False drops a datagram that would go to the responder
    (the node is shutting down, say); it is asked before any work is done.
    """

    def __init__(
        self,
        identity: Identity,
        network: str,
        *,
        params: TransportParams | None = None,
        responder: Responder | Callable[[], Responder] | None = None,
        accept: bool = True,
        cookie_policy: CookiePolicy | None = None,
        max_pending: int = 4096,
        pending_timeout_us: int = 15_000_000,
        max_dials: int = DEFAULT_MAX_DIALS,
        new_cid: Callable[[], bytes] | None = None,
        make_connection: Callable[[HandshakeResult, int], Connection] | None = None,
        reliable: bool = False,
        admit: Callable[[Addr], bool] | None = None,
    ) -> None:
        if max_dials < 1:
            raise ValueError("max_dials must be >= 1")
        self.identity = identity
        self.network = network
        self.params = params if params is not None else TransportParams()
        self._new_cid = new_cid if new_cid is not None else _random_cid
        self._make_connection = make_connection
        self._reliable = reliable
        self._admit = admit
        self.max_dials = max_dials
        self._accept = accept
        self._responder: Responder | None = None
        self._make_responder: Callable[[], Responder] | None = None
        if isinstance(responder, Responder):
            self._responder = responder
        elif responder is not None:
            self._make_responder = responder
        elif accept:
            self._responder = Responder(
                identity,
                network,
                params=self.params,
                cookie_policy=cookie_policy,
                max_pending=max_pending,
                pending_timeout_us=pending_timeout_us,
                new_cid=self._new_cid,
            )
        self._dials: dict[bytes, Dial] = {}
        # Dials that may have queued datagrams since the last
        # datagrams_to_send (started, fed or timed since): only these are
        # asked, so a datagram costs O(1) however many dials are running.
        self._touched: dict[bytes, Dial] = {}
        self._seq = 0
        self._outbox: list[tuple[bytes, Addr]] = []
        self._events: deque[DriverEvent] = deque()
        #: Dials refused because ``max_dials`` were in progress.
        self.dials_refused = 0

    # -- what the driver holds ---------------------------------------------------

    @property
    def responder(self) -> Responder | None:
        """The responder (with its ``stats``), once there is one."""
        return self._responder

    def __len__(self) -> int:
        """Outgoing handshakes in progress (an XX one until its finish is
        confirmed)."""
        return len(self._dials)

    def dial_for(self, cid: bytes) -> Dial | None:
        """The dial whose connection id is ``cid``, if it is in progress."""
        return self._dials.get(cid)

    # -- the aioquic-like verbs --------------------------------------------------

    def connect(
        self,
        addr: Addr,
        remote: PeerId | None = None,
        *,
        now: int,
        timeout_us: int = 10_000_000,
        cid: bytes | None = None,
        charge: Callable[[int], bool] | None = None,
        identity: Identity | None = None,
    ) -> Dial:
        """Start a handshake with ``addr``: IK when ``remote`` is its peer id,
        XX otherwise. The initiation leaves with the next
        :meth:`datagrams_to_send`. Raises :class:`~crust.errors.ConnectError`
        when ``max_dials`` are in progress. ``identity``: dial as another
        node than the driver's (a load generator posing as many peers)."""
        if len(self._dials) >= self.max_dials:
            self.dials_refused += 1
            raise ConnectError(f"{len(self._dials)} handshakes in progress: the most we run")
        if cid is None:
            cid = self._fresh_dial_cid()
        elif cid in self._dials:
            raise ValueError("a dial with this connection id is in progress")
        ini = Initiator(
            identity if identity is not None else self.identity,
            self.network,
            remote=remote,
            local_cid=cid,
            params=self.params,
            now=now,
            addr=addr,
            timeout_us=timeout_us,
        )
        self._seq += 1
        dial = Dial(ini.local_cid, addr, ini, charge, seq=self._seq)
        self._dials[dial.cid] = dial
        self._touched[dial.cid] = dial
        return dial

    def abandon(self, dial: Dial) -> None:
        """Stop a dial (its caller gave up): nothing more is sent for it and
        no event comes."""
        if self._dials.get(dial.cid) is dial:
            del self._dials[dial.cid]
            self._touched.pop(dial.cid, None)

    def confirm(self, dial: Dial, now: int) -> None:
        """The peer sent under the new keys: it has our XX finish."""
        dial.confirmed = True
        dial.initiator.confirm()
        self._settle(dial, now)

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        """One long-header datagram from ``addr``. Never raises on input:
        what the responder drops it counts (``responder.stats``), what an
        initiator ignores its ``stats``."""
        dial = self._dials.get(dst_cid(data))
        if dial is not None:
            dial.initiator.receive_datagram(data, addr, now)
            self._touched[dial.cid] = dial
            self._settle(dial, now)
            return
        if not self._accept or (self._admit is not None and not self._admit(addr)):
            return
        responder = self._responder
        if responder is None:
            if self._make_responder is None:
                return
            responder = self._responder = self._make_responder()
        responder.receive_datagram(data, addr, now)
        # Taken at once: the responder holds few (_MAX_QUEUED_REPLIES), and
        # replies go out before any dial's (datagrams_to_send).
        self._outbox.extend(responder.datagrams_to_send(now))
        for source, n in responder.take_failures():
            self._events.append(Misbehaved(source, n))
        for result in responder.take_completed():
            conn = self._connection(result, now)
            self._events.append(Established(result, result.peer_addr, True, conn))

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        """What to send, in order: replies first, then every dial's."""
        out, self._outbox = self._outbox, []
        touched, self._touched = self._touched, {}
        for dial in sorted(touched.values(), key=_by_seq) if len(touched) > 1 else touched.values():
            if self._dials.get(dial.cid) is not dial:
                continue  # let go meanwhile (what it had left is in the outbox)
            ini = dial.initiator
            sent = ini.datagrams_to_send(now)
            if not sent:
                continue
            charge = dial.charge if ini.result is None else None
            for d in sent:
                if charge is not None and not charge(len(d)):
                    del self._dials[dial.cid]
                    self._events.append(
                        DialFailed(
                            dial, ConnectError("the reflection budget of who named it is spent")
                        )
                    )
                    break
                out.append((d, dial.addr))
        return out

    def get_timer(self) -> int | None:
        best: int | None = None
        for dial in self._dials.values():
            t = dial.initiator.get_timer()
            if t is not None and (best is None or t < best):
                best = t
        return best

    def handle_timer(self, now: int) -> None:
        for dial in list(self._dials.values()):
            ini = dial.initiator
            if ini.state is InitiatorState.FINISHING and self._heard(dial):
                self.confirm(dial, now)
                continue
            t = ini.get_timer()
            if t is not None and t <= now:
                ini.handle_timer(now)
                self._touched[dial.cid] = dial
                self._settle(dial, now)

    def next_event(self) -> DriverEvent | None:
        """The oldest event not yet taken, or None."""
        return self._events.popleft() if self._events else None

    # -- internals -----------------------------------------------------------------

    def _connection(self, result: HandshakeResult, now: int) -> Connection | None:
        if self._make_connection is None:
            return None
        return install_keys(self._make_connection(result, now), result)

    @staticmethod
    def _heard(dial: Dial) -> bool:
        conn = dial.connection
        return conn is not None and conn.stats()["rx_packets"] > 0

    def _settle(self, dial: Dial, now: int) -> None:
        """Take up what an Initiator call changed: a result becomes an event
        (and a connection), an error a failure, a finished dial is let go."""
        ini = dial.initiator
        if ini.result is not None and not dial.established:
            dial.established = True
            dial.connection = self._connection(ini.result, now)
            if self._reliable:
                dial.confirmed = True
                ini.confirm()
            self._events.append(Established(ini.result, dial.addr, False, dial.connection, dial))
        if self._dials.get(dial.cid) is not dial:
            return
        if ini.error is not None:
            del self._dials[dial.cid]
            self._events.append(DialFailed(dial, ini.error))
        elif ini.result is not None and ini.get_timer() is None:
            del self._dials[dial.cid]
            # What it still had to send (the finish of a dial confirmed as
            # it completed, on a reliable carrier) goes all the same.
            self._outbox.extend((d, dial.addr) for d in ini.datagrams_to_send(now))
            if ini.pattern == "XX" and not dial.confirmed and not self._heard(dial):
                self._events.append(Unconfirmed(dial))

    def _fresh_dial_cid(self) -> bytes:
        for _ in range(64):
            cid = bytes(self._new_cid())
            if len(cid) != CID_LEN:
                raise ValueError(f"new_cid() must return {CID_LEN} bytes, got {len(cid)}")
            if any(cid) and cid not in self._dials:
                return cid
        raise RuntimeError("new_cid() keeps returning connection ids already in use")


def _by_seq(dial: Dial) -> int:
    return dial.seq


def _random_cid() -> bytes:
    return os.urandom(CID_LEN)
