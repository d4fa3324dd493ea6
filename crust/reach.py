"""Staying reachable: the contacts a node joined, kept and rejoined
(``Service.join``, design note 0053).

A node that wants others to find it by its id joins a contact (a node
both sides know, e.g. a bootstrap node): it dials it, maintains the
connection (so its own side never prunes it and its keepalives keep the
link alive) and asks to be bootstrapped off, which makes the contact mark
it joined (``Peer.joined``: never pruned for idling while the link lives).
Senders then reach it by id through the contact's rendezvous.

When the link to a joined contact is lost (the contact restarted, a NAT
binding expired, the contact evicted us), the contact is dialled again at
the same address, expecting the same peer id (an impostor at that address
is not joined), after :data:`FIRST_RETRY` seconds and then with doubling
delays up to :data:`MAX_RETRY` (a fifth of jitter), for as long as the
service runs; a link lost again within :data:`STABLE` seconds of its
rejoin continues that backoff rather than starting over, so a contact
that keeps dropping us is not redialled four times a second.
``ContactLost`` is reported on the loss and on each failed
attempt (with the next delay), ``ContactJoined`` on each success, so an
application (``crust recv``) can say what it is waiting on.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crust.errors import CrustError
from crust.events import ContactJoined, ContactLost
from crust.wire import Address

if TYPE_CHECKING:
    from crust.identity import PeerId
    from crust.node import Node
    from crust.peer import Peer

__all__ = ["FIRST_RETRY", "MAX_RETRY", "STABLE", "Contacts"]

logger = logging.getLogger(__name__)

#: Seconds after a loss before the first redial: a restarting contact is
#: usually back within a second or two, and the redial's own handshake
#: retries cover the rest.
FIRST_RETRY = 0.25
#: Longest wait between redials (the delay doubles up to this): a contact
#: down for hours costs two dials a minute.
MAX_RETRY = 30.0
#: Longest one redial may take (the handshake retransmits meanwhile, so a
#: contact that comes up during an attempt is joined by it).
ATTEMPT_TIMEOUT = 5.0


#: A rejoined link lost again within this many seconds continues the
#: backoff instead of starting over: a contact that keeps dropping us (full,
#: and evicting us for a newcomer who is then evicted for us...) is dialled
#: less and less often, not four times a second.
STABLE = 60.0


@dataclass
class _Kept:
    address: Address
    peer_id: PeerId
    peer: Peer
    task: asyncio.Task[None] | None = None
    lost_at: float = 0.0
    joined_at: float = field(default_factory=time.monotonic)
    base: float = 0.0  # the backoff reached by the last rejoin
    rejoins: int = 0


class Contacts:
    """The contacts one service joined; ``ask(peer)`` asks a connected
    peer to let us join (bootstrap off it) and says whether it agreed."""

    def __init__(self, service: Node, ask: Callable[[Peer], Awaitable[bool]]) -> None:
        self.svc = service
        self._ask = ask
        self._kept: dict[Address, _Kept] = {}
        self._rng = random.Random()
        self._closed = False

    def __len__(self) -> int:
        return len(self._kept)

    def joined(self) -> list[tuple[PeerId, Address]]:
        """The contacts we joined and are connected to now, as (id, the
        address we dialled): where others can reach them to find us."""
        return [(k.peer_id, k.address) for k in self._kept.values() if k.peer.is_connected]

    async def join(self, address: Address, timeout: float | None = None) -> Peer:
        """Connect to ``address``, keep the connection and register as
        reachable through it; rejoined whenever lost until :meth:`close`."""
        kept = self._kept.get(address)
        if kept is not None and kept.peer.is_connected:
            return kept.peer
        peer = await self.svc.connect(address, timeout=timeout)
        await self._register(peer, address)
        # Where the contact's two ports see us tells whether our NAT maps
        # per destination (crust.nat.mapping): no STUN server needed.
        self.svc.contact_nat.probe(peer.address)
        if kept is None:
            self._kept[address] = _Kept(address, peer.id, peer)
        else:
            kept.peer = peer
        self._record_changed()
        self.svc.emit(ContactJoined(peer, address, False))
        return peer

    def _record_changed(self) -> None:
        """A contact joined or rejoined: have our DHT record put again now
        rather than at the next periodic check (crust.dht.directory.
        CHECK_EVERY, 10 s), so a node that just joined is findable by id
        through the DHT within a put's time. (A loss is left to that check:
        a rejoin usually follows within a second, and the record then
        needs no change at all.)"""
        if self.svc.dht is not None:
            self.svc.dht.changed()

    async def _register(self, peer: Peer, address: Address) -> None:
        self.svc.maintain(peer)
        if not await self._ask(peer):
            # Still kept from our side; the contact may prune us when idle.
            logger.warning(
                "contact %s:%d (%s) refused to let us join: it may drop us when idle",
                address[0], address[1], peer.id.short,
            )  # fmt: skip

    def on_lost_peer(self, peer: Peer, reason: str) -> None:
        """The service lost ``peer``: rejoin if it was a kept contact."""
        if self._closed or self.svc.closing:
            return
        for kept in self._kept.values():
            if kept.peer is peer and (kept.task is None or kept.task.done()):
                kept.lost_at = now = time.monotonic()
                if now - kept.joined_at >= STABLE:
                    kept.base = 0.0
                first = min(kept.base * 2, MAX_RETRY) if kept.base else FIRST_RETRY
                kept.base = first
                logger.info("contact %s lost (%s): rejoining", peer.id.short, reason)
                self.svc.emit(ContactLost(kept.address, reason, 0, first))
                kept.task = asyncio.create_task(self._rejoin(kept))
                return

    async def _rejoin(self, kept: _Kept) -> None:
        base = delay = kept.base
        attempts = 0
        while not self._closed:
            await asyncio.sleep(delay)
            attempts += 1
            try:
                limit = min(self.svc.config.connect_timeout, ATTEMPT_TIMEOUT)
                peer = await self.svc.connect(kept.address, peer_id=kept.peer_id, timeout=limit)
                await self._register(peer, kept.address)
            except (CrustError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
                if self._closed or self.svc.closing:
                    return
                # Jittered, so the peers of a restarted contact do not all
                # come back in the same instant.
                base = min(base * 2, MAX_RETRY)
                delay = base * (1 + self._rng.uniform(-0.2, 0.2))
                why = str(exc) or type(exc).__name__
                logger.info("rejoining %s failed (%s): retry in %.1f s", kept.address, why, delay)
                self.svc.emit(ContactLost(kept.address, why, attempts, delay))
                continue
            if not peer.is_connected:
                continue  # lost again before it was recorded: nobody else retries it
            kept.peer = peer
            kept.base = base
            self.svc.contact_nat.probe(peer.address)
            kept.joined_at = time.monotonic()
            kept.rejoins += 1
            after = time.monotonic() - kept.lost_at
            logger.info("rejoined contact %s after %.2f s", peer.id.short, after)
            self._record_changed()
            self.svc.emit(ContactJoined(peer, kept.address, True, round(after, 3)))
            return

    async def close(self) -> None:
        self._closed = True
        tasks = [k.task for k in self._kept.values() if k.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
