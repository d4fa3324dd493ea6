"""Relaying glue: being a relay for two of our peers, and reaching a peer
through one (crust.nat.relay has the messages, the table and the policy;
crust.asyncio.relay_link the connection's carrier).

As the relay (M): sessions are opened only for pairs our introducer passed
a reply between (``table.open``), and each ``RELAY DATA`` message from one
side is forwarded unchanged to the other, within the session's cap.

As an endpoint: the requester dials (IK, pinned to the target's id) over
a :class:`RelayLink`; the target accepts a relayed handshake only for a
session it was introduced to, and only from that requester.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crust import _core
from crust.asyncio.relay_link import RelayLink
from crust.control import ControlKind
from crust.errors import CrustError
from crust.handshake import HandshakeResult, Initiator, Responder
from crust.identity import PeerId
from crust.nat import relay
from crust.nat.relay import RelayOp, RelayPolicy, RelayTable
from crust.peer import Address, Peer, now_us

if TYPE_CHECKING:
    from crust.service import Service

__all__ = ["Relaying"]

logger = logging.getLogger(__name__)

_LONG_HEADER = 0x80
_MAX_OFFERS = 1024


@dataclass(eq=False)
class _Offer:
    """Target side: a requester that may reach us through ``via``'s relay."""

    requester: PeerId
    via: Peer


@dataclass(eq=False)
class _Dial:
    initiator: Initiator
    done: asyncio.Future[HandshakeResult]
    timer: asyncio.TimerHandle | None = None


class Relaying:
    """The service's relay sessions, as relay and as endpoint."""

    def __init__(self, service: Service, policy: RelayPolicy) -> None:
        self.svc = service
        self.policy = policy
        #: Sessions we relay for others.
        self.table = RelayTable(policy)
        self._offers: dict[bytes, _Offer] = {}
        self._links: dict[bytes, RelayLink] = {}
        self._dials: dict[bytes, _Dial] = {}
        self._responder: Responder | None = None
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
        existing = self.svc._peers.get(target)
        if existing is not None and existing.is_connected:
            return existing
        link = RelayLink(self.svc, via, session, via.address)
        self._links[session] = link
        ini = self.svc.make_initiator(
            target,
            os.urandom(_core.CID_LEN),
            _pseudo_addr(session),
            max(0.5, deadline - loop.time()),
        )
        dial = _Dial(ini, loop.create_future())
        self._dials[session] = dial
        try:
            self._pump(link, dial)
            result = await dial.done
        except BaseException:
            self.drop(session)
            raise
        finally:
            if dial.timer is not None:
                dial.timer.cancel()
            self._dials.pop(session, None)
        link.attach(self.svc.make_connection(result, max_mtu=_relay_mtu(), lost_timeout_us=0))
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
            target = self.svc._peers.get(to) if to is not None else None
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
                if link.established and link.upgraded_to is None:
                    reason = body.decode("utf-8", "replace")
                    self.svc.abort_link(link, f"relay closed: {reason}")
                self.drop(session)
            return
        if not body:
            return
        link = self._links.get(session)
        if link is None:
            offer = self._offers.get(session)
            if offer is None or offer.via is not peer:
                return
            link = RelayLink(self.svc, peer, session, peer.address)
            self._links[session] = link
        elif link.via is not peer:
            return
        if body[0] & _LONG_HEADER:
            self._handshake(link, body, now)
        else:
            link.receive_datagram(body)

    def on_peer_lost(self, peer: Peer) -> None:
        """``peer`` is gone: end the sessions through or of it."""
        for session, other in self.table.close_peer(peer.id):
            target = self.svc._peers.get(other)
            if target is not None:
                self._send(target, RelayOp.CLOSE, session, b"relay peer left")
        for session, link in list(self._links.items()):
            if link.via is peer and link.upgraded_to is None and link.established:
                self.svc.abort_link(link, "the relaying peer disconnected")
            if link.via is peer or (link.established and link.conn.is_closed):
                self.drop(session)

    def close(self) -> None:
        for session in list(self._links):
            self.drop(session)

    # -- internals -------------------------------------------------------------------

    def _handshake(self, link: RelayLink, data: bytes, now: int) -> None:
        pseudo = _pseudo_addr(link.session)
        dial = self._dials.get(link.session)
        if dial is not None:
            dial.initiator.receive_datagram(data, pseudo, now)
            self._pump(link, dial)
            return
        offer = self._offers.get(link.session)
        if offer is None:
            return
        if self._responder is None:
            self._responder = self.svc.make_responder()
        for reply, _ in self._responder.receive_datagram(data, pseudo, now):
            link.send_datagram(reply)
        for result in self._responder.take_completed():
            if result.peer_id != offer.requester or link.established:
                continue  # only the introduced peer may come through here
            link.attach(self.svc.make_connection(result, max_mtu=_relay_mtu(), lost_timeout_us=0))
            self.svc.on_established(link, result, incoming=True)

    def _pump(self, link: RelayLink, dial: _Dial) -> None:
        ini = dial.initiator
        now = now_us()
        t = ini.get_timer()
        if t is not None and t <= now:
            ini.handle_timer(now)
        for d in ini.datagrams_to_send(now):
            link.send_datagram(d)
        if dial.done.done():
            return
        if ini.result is not None:
            ini.confirm()
            dial.done.set_result(ini.result)
        elif ini.error is not None:
            dial.done.set_exception(ConnectionError(f"relayed handshake: {ini.error}"))
        else:
            t = ini.get_timer()
            if t is not None:
                if dial.timer is not None:
                    dial.timer.cancel()
                dial.timer = asyncio.get_running_loop().call_later(
                    max(0.0, (t - now_us()) / 1e6), self._pump, link, dial
                )

    def _send(self, peer: Peer, op: RelayOp, session: bytes, body: bytes) -> None:
        with contextlib.suppress(CrustError):
            self.svc.send_control(peer, ControlKind.RELAY, relay.encode(op, session, body))


# Relayed connections run no lost timer (lost_timeout_us=0): the relay
# queues, and may drop, our packets while the far side is back-pressured,
# so silence end to end is no sign of death (a slow reader behind a relay
# was declared lost: test_back_pressure, relayed). The link to the relay
# has the timer, and losing the relay ends this connection (RELAY_LOST);
# the idle timeout still applies. docs/design/0048-dead-peers-noticed.md.
def _relay_mtu() -> int:
    return min(_core.MAX_MTU, relay.MAX_DATAGRAM)


def _pseudo_addr(session: bytes) -> Address:
    """A per-session stand-in for the relayed peer's address: the
    handshake keys its replay and rate checks by it, and it is no IP
    literal, so no observed address is echoed for it."""
    return (f"relay-{session.hex()}", 0)
