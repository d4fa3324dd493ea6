"""Relaying glue: being a relay for two of our peers, and reaching a peer
through one (crust.nat.relay has the messages, the table and the policy;
crust.asyncio.relay_link the connection's carrier).

As the relay (M): sessions are opened only for pairs our introducer passed
a reply between (``table.open``), and each ``RELAY DATA`` message from one
side is forwarded unchanged to the other, within the session's cap.

As an endpoint: the requester dials (IK, pinned to the target's id) over
a :class:`RelayLink`; the target accepts a relayed handshake only for a
session it was introduced to, and only from that requester.

When the relay goes away (it disconnected, or closed the session), the
connection is kept (the link is orphaned) and the requester asks its other
peers for a new rendezvous with the target (or the same relay, if it only
closed the session); the engine connection then moves to the new session,
keys, streams and packet numbers intact, so nothing in flight is lost. The
target moves its side only when the first datagram through the new session
is accepted by the connection (authenticated by its keys) and only while its
own relay is gone, so no introducer can take over a working connection.
Neither side gives up before ``REROUTE_WAIT`` (design note 0056).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crust import _core
from crust.asyncio.relay_link import RelayLink
from crust.control import ControlKind
from crust.errors import CrustError
from crust.handshake import HandshakeResult
from crust.handshake.driver import Dial, DialFailed, Established, HandshakeDriver
from crust.identity import PeerId
from crust.nat import relay
from crust.nat.relay import RelayOp, RelayPolicy, RelayTable
from crust.peer import Address, Peer, now_us
from crust.wire import LONG_HEADER as _LONG_HEADER
from crust.wire import dst_cid

if TYPE_CHECKING:
    from crust.node import Node

__all__ = ["REROUTE_WAIT", "Relaying"]

logger = logging.getLogger(__name__)

_MAX_OFFERS = 1024
#: Seconds a relayed connection whose relay went away is kept while a new
#: route is sought (the target waits _TARGET_SLACK longer than the requester).
REROUTE_WAIT = 10.0
_TARGET_SLACK = 2.0
#: Seconds the requester waits to hear the target through a new session
#: before it asks again (the target may not have noticed the loss yet).
_CONFIRM_WAIT = 1.0
_MAX_TOLD = 256


@dataclass(eq=False)
class _Offer:
    """Target side: a requester that may reach us through ``via``'s relay."""

    requester: PeerId
    via: Peer


@dataclass(eq=False)
class _Dial:
    dial: Dial
    done: asyncio.Future[tuple[HandshakeResult, _core.Connection]]


class Relaying:
    """The service's relay sessions, as relay and as endpoint."""

    def __init__(self, service: Node, policy: RelayPolicy) -> None:
        self.svc = service
        self.policy = policy
        #: Sessions we relay for others.
        self.table = RelayTable(policy)
        self._offers: dict[bytes, _Offer] = {}
        self._links: dict[bytes, RelayLink] = {}
        self._dials: dict[bytes, _Dial] = {}
        # Every relayed handshake, by session (its pseudo address); the
        # responder is made when the first one for an offer arrives. The
        # relay's control channel loses nothing: no XX finish repeats.
        self._handshakes: HandshakeDriver = service.make_driver(
            reliable=True, max_mtu=_relay_mtu(), lost_timeout_us=0
        )
        self._hs_timer: asyncio.TimerHandle | None = None
        self._hs_timer_at: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        #: (peer, unknown session) -> when we last said so (_unknown).
        self._told: dict[bytes, float] = {}
        #: Relayed connections moved to a new relay session (figures).
        self.rerouted = 0
        service.on_control(ControlKind.RELAY, self.on_message)

    # -- endpoint ------------------------------------------------------------------

    def offer(self, session: bytes, requester: PeerId, via: Peer) -> None:
        """Accept a relayed handshake from ``requester`` through ``via``."""
        while len(self._offers) >= _MAX_OFFERS:
            del self._offers[next(iter(self._offers))]
        self._offers[session] = _Offer(requester, via)

    def has_offer(self, session: bytes) -> bool:
        return session in self._offers

    async def dial(
        self, target: PeerId, session: bytes, via: Peer, deadline: float, delay: float
    ) -> Peer:
        """A relayed connection to ``target`` through ``via``, after ``delay``."""
        loop = asyncio.get_running_loop()
        if delay:
            await asyncio.sleep(delay)
        existing = self.svc.find_peer(target)
        if existing is not None and existing.is_connected:
            return existing
        link = RelayLink(self.svc, via, session, via.address, dialled=True)
        self._links[session] = link
        dial = _Dial(
            self._handshakes.connect(
                _pseudo_addr(session),
                target,
                now=now_us(),
                timeout_us=int(max(0.5, deadline - loop.time()) * 1e6),
            ),
            loop.create_future(),
        )
        self._dials[session] = dial
        try:
            self._pump()
            result, conn = await dial.done
        except BaseException:
            self._handshakes.abandon(dial.dial)
            self.drop(session)
            raise
        finally:
            self._dials.pop(session, None)
        link.attach(conn)
        peer = self.svc.on_established(link, result, incoming=False)
        if peer is None:
            raise ConnectionError("refused (blacklisted)")
        return peer

    def drop(self, session: bytes) -> None:
        """End our side of a relayed session (tell the relay)."""
        link = self._links.pop(session, None)
        self._offers.pop(session, None)
        if link is None:
            return
        link.close()
        if link.via.is_connected:
            self._send(link.via, RelayOp.CLOSE, session, b"done")

    # -- both roles ------------------------------------------------------------------

    def on_message(self, peer: Peer, payload: bytes) -> None:
        op, session, body = relay.decode_untrusted(payload)
        now = now_us()
        # Relayed traffic is control traffic, which does not keep a
        # connection from being pruned; relaying is a use of it all the same.
        peer.last_used = time.monotonic()
        if session in self.table:
            if op is RelayOp.DATA:
                to = self.table.forward(peer.id, session, len(body), now)
            else:
                to = self.table.close(session, peer.id)
            target = self.svc.find_peer(to) if to is not None else None
            if target is not None and target.is_connected:
                target.last_used = peer.last_used
                # A full queue towards the target drops the datagram: the
                # endpoints' reliability resends it.
                with contextlib.suppress(CrustError):
                    self.svc.send_control(target, ControlKind.RELAY, bytes(payload))
            return
        if op is RelayOp.CLOSE:
            link = self._links.get(session)
            if link is not None and link.via is peer:
                if _carries(link):
                    reason = body.decode("utf-8", "replace")
                    self._orphan(link, f"relay closed: {reason}")
                else:
                    self.drop(session)
            return
        if not body:
            return
        link = self._links.get(session)
        if link is None:
            offer = self._offers.get(session)
            if offer is None:
                self._unknown(peer, session, time.monotonic())
            if offer is None or offer.via is not peer:
                return
            link = RelayLink(self.svc, peer, session, peer.address)
            self._links[session] = link
        elif link.via is not peer:
            return
        if body[0] & _LONG_HEADER:
            self._handshake(link, body, now)
        elif not link.established:
            self._adopt(link, body, now)
        else:
            link.receive_datagram(body)

    def on_peer_lost(self, peer: Peer) -> None:
        """``peer`` is gone: end the sessions through or of it."""
        for session, other in self.table.close_peer(peer.id):
            target = self.svc.find_peer(other)
            if target is not None:
                self._send(target, RelayOp.CLOSE, session, b"relay peer left")
        for session, link in list(self._links.items()):
            if link.via is peer and _carries(link):
                self._orphan(link, "the relaying peer disconnected")
            elif link.via is peer or (link.established and link.conn.is_closed):
                self.drop(session)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for timer in self._timers:
            timer.cancel()
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        for session in list(self._links):
            self.drop(session)

    # -- surviving the loss of the relay (design note 0056) ------------------------

    def rerouting(self, requester: PeerId) -> bool:
        """Whether we have a relayed connection to ``requester``: a
        rendezvous from it now is its search for a new relay (connecting
        again would have found the connection). If our side has not seen
        the relay go, a probe through it finds out: a relay that forgot the
        session answers "unknown session" (:meth:`_unknown`)."""
        link = self._link_of(requester)
        if link is None:
            return False
        if link.orphaned is None and link.established and not link.conn.is_closed:
            with contextlib.suppress(CrustError):
                link.conn.probe_path(now_us())
            link.kick()
        return True

    def _link_of(self, pid: PeerId) -> RelayLink | None:
        peer = self.svc.find_peer(pid)
        link = peer.link if peer is not None and peer.is_connected else None
        return link if isinstance(link, RelayLink) else None

    def _orphan(self, link: RelayLink, reason: str) -> None:
        """Keep ``link``'s connection while a new route is sought."""
        self._links.pop(link.session, None)
        self._offers.pop(link.session, None)
        peer = self.svc.peer_of(link)
        if peer is None or peer.link is not link:
            link.close()
            return
        link.orphan(reason)
        logger.info("%r lost its relay (%s): seeking another route", peer, reason)
        loop = asyncio.get_running_loop()
        if link.dialled and self.svc.config.relay != "never":
            task = loop.create_task(self._reroute(peer, link, loop.time()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            timer: asyncio.TimerHandle | None = None

            def give_up() -> None:
                if timer is not None:
                    self._timers.discard(timer)
                if peer.link is link and peer.is_connected:
                    self.svc.abort_link(link, _gave_up(reason))

            timer = loop.call_later(REROUTE_WAIT + _TARGET_SLACK, give_up)
            self._timers.add(timer)

    async def _reroute(self, peer: Peer, lost: RelayLink, since: float) -> None:
        """Requester: find a new relay session for ``peer`` and move the
        connection to it; the first datagram back through it confirms that
        the target moved too. Gives up (the peer is lost) after REROUTE_WAIT."""
        loop = asyncio.get_running_loop()
        deadline = since + REROUTE_WAIT
        reason = lost.orphaned or "relay lost"
        old_via = lost.via.id.short
        cur = lost
        tried: list[str] = []
        while loop.time() < deadline:
            if peer.link is not cur or not peer.is_connected:
                return  # upgraded to a direct path, or closed, meanwhile
            try:
                reply, via, session, _ = await self.svc.traversal.ask(peer.id, deadline)
            except (ConnectionError, CrustError) as e:
                tried.append(str(e))
                await asyncio.sleep(0.25)
                continue
            if peer.link is not cur or not peer.is_connected:
                return
            if not reply.relay:
                tried.append(f"{via.id.short} does not relay")
                await asyncio.sleep(0.25)
                continue
            new = RelayLink(self.svc, via, session, via.address, dialled=True)
            self._links[session] = new
            self._move(peer, cur, new)
            cur = new
            if await new.wait_heard(_CONFIRM_WAIT):
                took = loop.time() - since
                self.rerouted += 1
                peer.why = (
                    f"relayed through {via.id.short}: re-routed {took:.2f} s after "
                    f"{reason} (was through {old_via})"
                )
                logger.info("%r re-routed through %s in %.2f s", peer, via.id.short, took)
                return
            tried.append(f"{via.id.short}: no answer through it")
        if peer.link is cur and peer.is_connected:
            logger.info("%r: no other route: %s", peer, "; ".join(tried[-3:]))
            self.svc.abort_link(cur, _gave_up(reason))

    def _adopt(self, link: RelayLink, body: bytes, now: int) -> None:
        """Target: a short-header datagram on a session we were introduced
        to. If the requester's relayed connection lost its relay and the
        datagram authenticates as that connection's, move it here."""
        offer = self._offers.get(link.session)
        if offer is None:
            return
        old = self._link_of(offer.requester)
        if old is None or old.orphaned is None or not old.established:
            return
        conn = old.conn
        seen = conn.stats()["rx_packets"]
        with contextlib.suppress(CrustError):
            conn.receive_datagram(body, now)
        if conn.stats()["rx_packets"] == seen:
            # Not the connection's (a forgery, a replay): the datagram came
            # through ``link.via``, which is whom it counts against.
            if conn.refused > old._refused:
                self.svc.count_failure(link.via.address, link.via.id, conn.refused - old._refused)
                old._refused = conn.refused
            return
        peer = self.svc.find_peer(offer.requester)
        if peer is None:  # as the registry's lookup always did
            raise KeyError(offer.requester)
        reason = old.orphaned
        self._move(peer, old, link)
        link.received += 1
        self.rerouted += 1
        peer.why = f"relayed through {link.via.id.short}: re-routed by the peer after {reason}"
        logger.info("%r re-routed through %s", peer, link.via.id.short)

    def _unknown(self, peer: Peer, session: bytes, now: float) -> None:
        """Data for a session we neither relay nor end: a relay that forgot
        it (expired or evicted it, or restarted) or an endpoint that ended
        it. Say so (at most once a second per session, never more bytes
        than came), so the sender's side moves to a new route (0056) instead
        of sending into nothing until its connection times out."""
        told = self._told
        key = bytes(peer.id) + session
        if now - told.get(key, -1.0) < 1.0:
            return
        told.pop(key, None)
        told[key] = now
        while len(told) > _MAX_TOLD:
            del told[next(iter(told))]
        self._send(peer, RelayOp.CLOSE, session, b"unknown session")

    def _move(self, peer: Peer, old: RelayLink, new: RelayLink) -> None:
        """Move ``peer``'s engine connection from ``old`` to ``new``."""
        conn = old.conn
        new._refused = old._refused
        new.started, new.tries = old.started, old.tries
        self.svc.replace_link(peer, new)
        old.upgraded(new)
        if old.orphaned is None:
            self.drop(old.session)  # an earlier try nobody answered through
        else:
            old.close()
        new.attach(conn)
        # Something to send at once, which the far side answers at once:
        # the target learns of the move, and the requester hears it did.
        with contextlib.suppress(CrustError):
            conn.probe_path(now_us())

    # -- internals -------------------------------------------------------------------

    def _handshake(self, link: RelayLink, data: bytes, now: int) -> None:
        dial = self._dials.get(link.session)
        if dial is not None:
            # Only our own handshake's replies on a session we dialled.
            if dst_cid(data) != dial.dial.cid:
                return
        elif link.session not in self._offers:
            return
        self._handshakes.receive_datagram(data, _pseudo_addr(link.session), now)
        self._pump(now)

    def _pump(self, now: int | None = None) -> None:
        """Run the relayed handshakes' timers, send what they have to send
        through their sessions, and act on what finished."""
        hs = self._handshakes
        if now is None:
            now = now_us()
        t = hs.get_timer()
        if t is not None and t <= now:
            hs.handle_timer(now)
        for d, addr in hs.datagrams_to_send(now):
            link = self._links.get(_session_of(addr))
            if link is not None:
                link.send_datagram(d)
        while (ev := hs.next_event()) is not None:
            if isinstance(ev, Established):
                assert ev.connection is not None
                session = _session_of(ev.addr)
                if not ev.incoming:
                    dial = self._dials.get(session)
                    if dial is not None and not dial.done.done():
                        dial.done.set_result((ev.result, ev.connection))
                    continue
                offer = self._offers.get(session)
                link = self._links.get(session)
                if offer is None or link is None or link.established:
                    continue
                if ev.result.peer_id != offer.requester:
                    continue  # only the introduced peer may come through here
                link.attach(ev.connection)
                self.svc.on_established(link, ev.result, incoming=True)
            elif isinstance(ev, DialFailed):
                dial = self._dials.get(_session_of(ev.dial.addr))
                if dial is not None and not dial.done.done():
                    dial.done.set_exception(ConnectionError(f"relayed handshake: {ev.error}"))
            # Misbehaved: what a relayed stranger sends is the relay's to
            # police (its session caps); Unconfirmed cannot happen (reliable).
        t = hs.get_timer()
        if t is None or (self._hs_timer is not None and self._hs_timer_at == t):
            return
        if self._hs_timer is not None:
            self._hs_timer.cancel()
        self._hs_timer_at = t
        self._hs_timer = asyncio.get_running_loop().call_later(
            max(0.0, (t - now_us()) / 1e6), self._on_hs_timer
        )

    def _on_hs_timer(self) -> None:
        self._hs_timer = None
        self._hs_timer_at = None
        self._pump()

    def _send(self, peer: Peer, op: RelayOp, session: bytes, body: bytes) -> None:
        with contextlib.suppress(CrustError):
            self.svc.send_control(peer, ControlKind.RELAY, relay.encode(op, session, body))


def _carries(link: RelayLink) -> bool:
    """Whether ``link`` is a live connection's current carrier."""
    return link.established and link.upgraded_to is None and not link.conn.is_closed


def _gave_up(reason: str) -> str:
    return f"{reason} (no other route within {REROUTE_WAIT:g} s)"


# Relayed connections run no lost timer (lost_timeout_us=0): the relay
# queues, and may drop, our packets while the far side is back-pressured,
# so silence end to end is no sign of death (a slow reader behind a relay
# was declared lost: test_back_pressure, relayed). The link to the relay
# has the timer, and losing the relay puts this connection on hold to be
# re-routed (design note 0056);
# the idle timeout still applies. docs/design/0048-dead-peers-noticed.md.
def _relay_mtu() -> int:
    return min(_core.MAX_MTU, relay.MAX_DATAGRAM)


def _pseudo_addr(session: bytes) -> Address:
    """A per-session stand-in for the relayed peer's address: the
    handshake keys its replay and rate checks by it, and it is no IP
    literal, so no observed address is echoed for it."""
    return (f"relay-{session.hex()}", 0)


def _session_of(addr: Address) -> bytes:
    """The session of a :func:`_pseudo_addr`."""
    return bytes.fromhex(addr[0][len("relay-") :])
