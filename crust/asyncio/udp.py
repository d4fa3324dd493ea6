"""UDP transport: one socket, one C endpoint, many connections.

asyncio sees one reader per socket and one timer per listener; every
datagram is handled in C (``Endpoint.drive``). Only handshake packets of
our network come up to Python, where the sans-IO handshake runs; junk
(unknown connection ids, foreign long headers) is dropped and counted in C.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crust import _core
from crust.asyncio.netif import interfaces
from crust.asyncio.stun import StunDriver
from crust.errors import ConnectError, ConnectTimeout
from crust.handshake import long_header_prefix
from crust.handshake.driver import DialFailed, Established, Misbehaved, Unconfirmed
from crust.nat.binding import canonical_ip, crosses_nat
from crust.nat.mapping import is_binding_request
from crust.nat.punch import is_punch
from crust.nat.stun import StunClient, StunParseError
from crust.paths import PathName
from crust.peer import Address, now_us
from crust.reflection import udp_cost
from crust.wire import is_long_header, is_stun_shaped

if TYPE_CHECKING:
    from crust.handshake import HandshakeResult
    from crust.node import Node

__all__ = ["UdpListener"]

logger = logging.getLogger(__name__)

# Coalesced reads (docs/design/0067-coalesced-reads-when-idle.md): a node
# whose traffic is only keepalives and their ACKs, at more than
# COALESCE_RATE datagrams a second, for at least COALESCE_QUIET_US, reads
# its socket every few milliseconds instead of once per datagram, as a NIC
# moderates interrupts: 100,000 idle peers cost a wakeup per tick, not one
# per keepalive. The first datagram that moves data or starts a handshake
# ends it at once (it waited at most one tick).
COALESCE_RATE = 400.0
COALESCE_QUIET_US = 1_000_000
COALESCE_MAX_US = 10_000  # the longest a datagram waits to be read
COALESCE_BATCH = 64  # datagrams a tick aims to read at once
# Engine connections of completed dials that establish() has not taken yet
# (a dial whose caller moved on leaves one): the oldest go beyond this.
_MAX_UNCLAIMED = 256


class UdpLink:
    """One connection on a UDP listener (the :class:`~crust.peer.Link`)."""

    path: PathName = "direct-udp"

    def __init__(self, listener: UdpListener, conn: _core.Connection, address: Address) -> None:
        self.listener = listener
        self.conn = conn
        self.address = address
        self.refused = 0  # datagrams the connection refused, as last reported

    def kick(self) -> None:
        self.listener.kick()

    def close(self) -> None:
        self.listener.forget(self)


class UdpListener:
    """A bound UDP socket with its endpoint, handshakes and connections."""

    transport = "udp"

    def __init__(self, service: Node, sock: socket.socket, role: str) -> None:
        self.service = service
        self.sock = sock
        self.role = role
        self.address: Address = sock.getsockname()[:2]
        # Junk stays in C: short headers for no connection here, and long
        # headers without our version and network tag, are dropped there.
        # STUN messages come up: answers to our probes of STUN servers and
        # contacts (the listening port's own mapping is the one peers must
        # reach), and contacts' Binding requests, which we answer within
        # budget (crust.nat.mapping).
        self.endpoint = _core.Endpoint(
            sock, long_header_prefix=long_header_prefix(service.config.network), route_stun=True
        )
        self.stun = StunDriver(StunClient(rto=0.2, rc=4, rm=4), self.endpoint.send_raw)
        self.responder = service.make_responder()
        # Every handshake on this socket, in and out (crust.handshake.driver);
        # none answered while the service shuts down.
        self.handshakes = service.make_driver(
            responder=self.responder, admit=lambda _: not service.closing
        )
        # Outgoing handshakes waited for, by our connection id.
        self._dialing: dict[bytes, asyncio.Future[HandshakeResult]] = {}
        self._unclaimed: OrderedDict[bytes, _core.Connection] = OrderedDict()
        self._links: dict[bytes, UdpLink] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None  # the deadline the timer is for
        self._writing = False
        self._kicked = False
        self._closed = False
        self._ips: frozenset[str] | None = None
        self._ips_at = 0.0
        # Coalesced reads: the activity counter as last seen, when the
        # node last moved data, and the datagram rate over the last second.
        self._activity = 0
        self._busy_at = 0
        self._rate_at = 0
        self._rate_rx = 0
        self._rate = 0.0
        self._paused: asyncio.TimerHandle | None = None
        self._reader_off = False
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._drive)
        self._loop.call_soon(self._drive)

    @property
    def connections(self) -> int:
        """Connections on this listener now."""
        return len(self._links)

    @property
    def dials(self) -> int:
        """Outgoing handshakes in progress."""
        return len(self.handshakes)

    # -- the loop's entry points -----------------------------------------

    def kick(self) -> None:
        """Coalesce transmissions: one flush per loop iteration, however many
        messages the application queued in it."""
        if not self._kicked and not self._closed:
            self._kicked = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._kicked = False
        if self._closed:
            return
        self.endpoint.flush(now_us())
        self._drive()

    def flush_now(self) -> None:
        """Send what the connections queued without waiting for the next
        loop iteration (the socket is about to close)."""
        if not self._closed:
            self.endpoint.flush(now_us())

    def _drive(self) -> None:
        if self._closed:
            return
        now = now_us()
        deadline = self.endpoint.drive(now)
        handshakes = self.handshakes
        busy = bool(len(handshakes))
        for data, addr in self.endpoint.unrouted():
            busy = True
            self._on_unrouted(data, addr[:2], now)
        # Failures charged to the address they came from, never to a peer
        # whose connection id they carried (issue 15, "no framing").
        for addr, n in self.endpoint.junk_sources():
            self.service.count_failure(addr[:2], None, n)
        for conn, addr in self.endpoint.path_changes():
            link = self._links.get(conn.local_cid)
            if link is not None:
                logger.info(
                    "peer moved from %s to %s (path validated by the engine)",
                    link.address,
                    addr[:2],
                )
                link.address = addr[:2]
        for conn in self.endpoint.ready():
            link = self._links.get(conn.local_cid)
            if link is None:
                continue
            events = conn.poll_events()
            if events:
                self.service.on_conn_events(link, events)
            link.refused = self.service.note_refused(link, link.refused)
            if conn.is_closed:
                # Listed once when it finished closing: free it now.
                self.service.on_link_done(link, "connection closed")
        # Handshake retransmissions share the listener's one timer (and
        # finishes the peer answered are confirmed at once).
        if busy:
            handshakes.handle_timer(now)
            self._handshake_io(now)
            t = handshakes.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        self._coalesce(now, busy)
        self._schedule(deadline)

    def _coalesce(self, now: int, busy: bool) -> None:
        """Stop reading on every datagram when the node is idle but its
        keepalives come fast: drive on a tick instead; read at once again
        when it is not."""
        rx, activity = self.endpoint.counters
        if busy or activity != self._activity:
            self._activity = activity
            self._busy_at = now
            if self._reader_off:
                self._unpause()
                return
        if now - self._rate_at >= 1_000_000:
            self._rate = (rx - self._rate_rx) * 1e6 / (now - self._rate_at)
            self._rate_at, self._rate_rx = now, rx
        if self._rate >= COALESCE_RATE and now - self._busy_at >= COALESCE_QUIET_US:
            if self._paused is None:
                tick = min(COALESCE_MAX_US, int(COALESCE_BATCH * 1e6 / self._rate))
                # The reader stays off from tick to tick while the node
                # stays idle: toggling it each tick (two epoll_ctl calls and
                # the selector's bookkeeping) was a fifth of an idle node's
                # Python time.
                if not self._reader_off:
                    self._loop.remove_reader(self.sock.fileno())
                    self._reader_off = True
                self._paused = self._loop.call_later(tick / 1e6, self._resume)
        elif self._reader_off:
            self._unpause()

    def _unpause(self) -> None:
        """Back to reading on every datagram."""
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if self._reader_off:
            self._reader_off = False
            self._loop.add_reader(self.sock.fileno(), self._drive)

    def _resume(self) -> None:
        """The tick is over: read what came meanwhile (the next tick, or
        the reader, is decided by that drive)."""
        self._paused = None
        if not self._closed:
            self._drive()

    def _watch_writable(self) -> None:
        """When the socket buffer filled up, the endpoint keeps datagrams
        queued; flush them as soon as the socket can take more."""
        want = self.endpoint.want_write
        if want and not self._writing:
            self._loop.add_writer(self.sock.fileno(), self._flush)
        elif not want and self._writing:
            self._loop.remove_writer(self.sock.fileno())
        self._writing = want

    def _schedule(self, deadline: int | None) -> None:
        self._watch_writable()
        if self._closed:
            return
        # Re-arm only for an earlier deadline. During bulk transfer every
        # drive moves the deadline (pacing, ACK timers), and a new asyncio
        # timer per drive was a tenth of the sender's Python time; a timer
        # that fires early is harmless: it drives and re-arms.
        if self._paused is not None:
            # The tick's drive runs the timers due by then: one wakeup.
            deadline = None
        if self._timer is not None and deadline is not None and self._timer_at is not None:
            if self._timer_at <= deadline:
                return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._timer_at = None
        if deadline is None:
            return
        delay = max(0.0, (deadline - now_us()) / 1e6)
        self._timer = self._loop.call_later(delay, self._on_timer)
        self._timer_at = deadline

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._drive()

    # -- handshakes ------------------------------------------------------

    def _on_unrouted(self, data: bytes, addr: Address, now: int) -> None:
        if is_stun_shaped(data):
            # Only STUN has both top bits clear here (C checked the header).
            if is_binding_request(data):
                self._answer_probe(data, addr)
            elif self.stun.client.active:
                # An answer is parsed only while we wait for one: a flood
                # of STUN-shaped datagrams costs no parsing otherwise.
                self.stun.feed(data, addr)
            return
        if not is_long_header(data):
            self.service.count_failure(addr, None)
            return
        if self.service.is_blacklisted_address(addr):
            return
        if is_punch(data):
            self.service.traversal.on_punch(self, data, addr, now)
            return
        self.handshakes.receive_datagram(data, addr, now)
        self._handshake_io(now)

    def _answer_probe(self, data: bytes, addr: Address) -> None:
        """Where we see ``addr``, and our other port (crust.nat.mapping):
        never more bytes than asked with, within the answerer's budgets."""
        # Our other port on this address (live <-> backup): the asker
        # reaches it at the address it reached us by.
        other = next(
            (
                lst.address
                for lst in self.service.udp_ports
                if lst is not self
                and lst.address[0] == self.address[0]
                and lst.address[1] != self.address[1]
            ),
            None,
        )
        try:
            reply = self.service.probe_answers.answer(data, addr, time.monotonic(), other)
        except StunParseError:
            self.service.count_failure(addr, None)
            return
        if reply is not None:
            self.endpoint.send_raw(reply, addr)

    def _handshake_io(self, now: int) -> None:
        """Send what the handshake driver has to send; act on its events."""
        hs = self.handshakes
        for d, to in hs.datagrams_to_send(now):
            self.endpoint.send_raw(d, to)
        while (ev := hs.next_event()) is not None:
            if isinstance(ev, Established):
                assert ev.connection is not None
                if ev.incoming:
                    self._established(ev.result, ev.connection, ev.addr, incoming=True)
                    continue
                assert ev.dial is not None
                fut = self._dialing.pop(ev.dial.cid, None)
                if fut is not None and not fut.done():
                    self._unclaimed[ev.dial.cid] = ev.connection
                    while len(self._unclaimed) > _MAX_UNCLAIMED:
                        self._unclaimed.popitem(last=False)
                    fut.set_result(ev.result)
            elif isinstance(ev, DialFailed):
                fut = self._dialing.pop(ev.dial.cid, None)
                if fut is not None and not fut.done():
                    # A ConnectionError still (callers catch that), and a
                    # TimeoutError when the handshake timed out.
                    kind = ConnectTimeout if isinstance(ev.error, TimeoutError) else ConnectError
                    fut.set_exception(kind(str(ev.error)))
            elif isinstance(ev, Unconfirmed):
                self._unclaimed.pop(ev.dial.cid, None)
                link = self._links.get(ev.dial.cid)
                if link is not None and link.conn.stats()["rx_packets"] == 0:
                    # XX: every copy of our finish message was lost, so the
                    # peer has no keys; fail loudly rather than idle out.
                    self.service.abort_link(
                        link, "handshake not confirmed: the peer never answered under the new keys"
                    )
            elif isinstance(ev, Misbehaved):
                self.service.count_failure(ev.addr, None, ev.count)

    async def dial(
        self,
        addr: Address,
        remote: Any,
        timeout: float,
        charge: Callable[[int], bool] | None = None,
    ) -> HandshakeResult:
        """Run a handshake with ``addr`` (IK when ``remote`` is known).
        ``charge``: asked for every datagram before ``addr`` answered."""
        host = addr[0]
        dial = self.handshakes.connect(
            addr,
            remote,
            now=now_us(),
            timeout_us=int(timeout * 1e6),
            charge=(lambda n: charge(udp_cost(host, n))) if charge is not None else None,
        )
        fut: asyncio.Future[HandshakeResult] = self._loop.create_future()
        self._dialing[dial.cid] = fut
        self._drive()
        try:
            return await fut
        except BaseException:
            self._dialing.pop(dial.cid, None)
            self._unclaimed.pop(dial.cid, None)
            self.handshakes.abandon(dial)
            raise

    def establish(self, result: HandshakeResult, addr: Address) -> UdpLink:
        """Create the engine connection of a completed outgoing handshake."""
        conn = self._unclaimed.pop(result.local_cid, None)
        if conn is None:
            conn = self.service.make_connection(result)
        return self._established(result, conn, addr, incoming=False)

    def _established(
        self, result: HandshakeResult, conn: _core.Connection, addr: Address, *, incoming: bool
    ) -> UdpLink:
        if crosses_nat(result.observed_addr, self.address, self._local_ips()):
            self._nat_keepalive(conn)
        if incoming and result.pattern == "IK":
            # Our connection exists one message before the dialler's: what
            # we sent now would reach it before it can route it, and wait
            # for a retransmission (a second). Its first packet comes at once.
            conn.quiet_until_heard()
        link = UdpLink(self, conn, addr)
        self._links[conn.local_cid] = link
        self.endpoint.add(conn, addr)
        if incoming:
            self.service.on_established(link, result, incoming=True)
        self.kick()
        return link

    def adopt(self, conn: _core.Connection, addr: Address, path: PathName) -> UdpLink:
        """Carry an existing connection (a relayed one whose direct path
        was just punched) from now on, to ``addr``."""
        link = UdpLink(self, conn, addr)
        link.path = path
        if path.startswith("punched"):
            self._nat_keepalive(conn)  # a punched path crosses a NAT or firewall
        self._links[conn.local_cid] = link
        self.endpoint.add(conn, addr)
        self.kick()
        return link

    def _nat_keepalive(self, conn: _core.Connection) -> None:
        """Keep this connection's NAT binding: ``nat_keepalive``, when it
        is set and shorter than the connection's keepalive (which 0 turns
        off: then no keepalive at all, as configured)."""
        us = int(self.service.config.nat_keepalive * 1e6)
        if us and conn.keepalive_us and us < conn.keepalive_us:
            conn.keepalive_us = us

    def _local_ips(self) -> frozenset[str]:
        """This machine's addresses (canonical text), read at most once a
        minute: only a wildcard-bound socket needs them."""
        now = time.monotonic()
        if self._ips is None or now - self._ips_at > 60.0:
            found: set[str] = set()
            if self.address[0] in ("0.0.0.0", "::"):
                for itf in interfaces():
                    if itf.ipv4:
                        found.add(canonical_ip(itf.ipv4))
                    found.update(canonical_ip(a) for a in itf.ipv6)
            self._ips, self._ips_at = frozenset(found), now
        return self._ips

    def forget(self, link: UdpLink) -> None:
        if self._links.pop(link.conn.local_cid, None) is not None:
            self.endpoint.remove(link.conn)

    # -- shutdown ----------------------------------------------------------

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stun.close()
        if self._timer is not None:
            self._timer.cancel()
        if self._paused is not None:
            self._paused.cancel()
            self._paused = None
        if not self._reader_off:
            self._loop.remove_reader(self.sock.fileno())
        if self._writing:
            self._loop.remove_writer(self.sock.fileno())
        for fut in self._dialing.values():
            if not fut.done():
                fut.set_exception(ConnectionError("service closed"))
        self._dialing.clear()
        self._unclaimed.clear()
        for link in list(self._links.values()):
            self.forget(link)
        self.endpoint.close()
        self.sock.close()
