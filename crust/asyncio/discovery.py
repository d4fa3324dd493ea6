"""The service's discovery: LAN beacon, bootstrap cache, bootstrap dialler
and contact gossip, wired to one :class:`~crust.service.Service`.

- Beacon finds become ``LanPeerFound`` events and bootstrap candidates.
- Every outgoing connection, and every incoming one once the peer told us
  (by gossip) where it listens, is recorded in the bootstrap cache. Writes
  are batched (at most one per ``_CACHE_FLUSH`` seconds, off the event
  loop) and flushed on close.
- Gossip: a new peer gets our signed contact list at once, every peer gets
  one each ``gossip_interval``; contacts learned from it are bootstrap
  candidates (and reach the cache only once connected). When a peer first
  can be shared (we dialled it, or it told us where it listens), the
  others hear of it within about a second (one coalesced extra round), not
  at the next interval: nodes that join a bootstrap node together would
  otherwise wait ``gossip_interval`` to find each other.
- ``BOOTSTRAP`` control messages: a dialler asks (``REQUEST``), we answer
  ``ACCEPT`` (and keep the connection: the peer has joined through us,
  ``Peer.joined``) or ``REFUSE`` and disconnect, as ``accept_bootstrap``
  says.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from crust.asyncio.beacon import BeaconTransport
from crust.bootstrap import Bootstrapper, Candidate
from crust.config import parse_host_port
from crust.control import ControlKind
from crust.discovery.beacon import Beacon
from crust.discovery.cache import BootstrapCache, CacheEntry, default_cache_path
from crust.discovery.endpoints import is_announceable, resolve_unspecified
from crust.discovery.gossip import MAX_CONTACTS, GossipReceiver, encode_gossip
from crust.errors import CrustError
from crust.events import BootstrapAccept, LanPeerFound
from crust.peer import now_us
from crust.wire import Address

if TYPE_CHECKING:
    from crust.identity import PeerId
    from crust.node import Node
    from crust.peer import Peer

__all__ = ["Discovery"]

logger = logging.getLogger(__name__)

REQUEST = 1
ACCEPT = 2
REFUSE = 3
#: Seconds between cache writes: each is a locked read-merge-fsync-rename,
#: and many nodes may share the file (close() always flushes).
_CACHE_FLUSH = 5.0
#: A new contact is passed on after this delay (more may come with it),
#: in at most one extra gossip round per _SOON_EVERY seconds: a burst of
#: joins costs a round every few seconds, not a round per join. Receivers
#: take a burst of three messages, then one a second (GossipReceiver).
_SOON_DELAY = 0.3
_SOON_EVERY = 2.0


@functools.lru_cache(maxsize=4096)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _shareable(endpoints: list[Address], to: Address) -> list[Address]:
    """Endpoints worth telling the peer at ``to``: loopback ones only to a
    peer on loopback (elsewhere they point at the wrong machine)."""
    local = _is_loopback(to[0])
    return [e for e in endpoints if is_announceable(e[0]) or (local and _is_loopback(e[0]))]


class Discovery:
    """Owned by the service: ``start`` after the listeners are up, ``close``
    before the connections close."""

    def __init__(self, service: Node) -> None:
        self.svc = service
        cfg = service.config
        self.cache: BootstrapCache | None = None
        if cfg.cache_size:
            path = cfg.cache_path or default_cache_path(cfg.network)
            self.cache = BootstrapCache(path, cfg.cache_size)
        self.beacon: Beacon | None = None
        self._beacon_io: BeaconTransport | None = None
        self._gossip_rx = GossipReceiver(cfg.network, min_interval=min(1.0, cfg.gossip_interval))
        self._gossip_seq = time.time_ns()
        self._rng = random.Random()
        #: Where each connected peer says it listens (from its gossip).
        self._advertised: dict[PeerId, list[Address]] = {}
        self._pending_cache: dict[PeerId, CacheEntry] = {}
        self._requests: dict[PeerId, asyncio.Future[bool]] = {}
        self._accepted: set[PeerId] = set()
        #: Connected peers by id (the service tells us of each change).
        self.connected: dict[PeerId, Peer] = {}
        self.bootstrapper = Bootstrapper(
            service, self._ask_bootstrap, self.connected, on_failed=self._on_candidate_failed
        )
        #: Cache entries whose bootstrap attempt failed (written in batches).
        self._failed_cache: set[PeerId] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._writing: asyncio.Future[bool] | None = None
        self._soon: asyncio.TimerHandle | None = None
        self._last_soon = -_SOON_EVERY
        self._started = False

    # -- life cycle -----------------------------------------------------------------

    async def start(self) -> None:
        svc, cfg = self.svc, self.svc.config
        self._started = True
        svc.on_control(ControlKind.GOSSIP, self._on_gossip)
        svc.on_control(ControlKind.BOOTSTRAP, self._on_bootstrap)
        loop = asyncio.get_running_loop()
        if cfg.beacon:
            self.beacon = Beacon(
                svc.identity,
                cfg.network,
                now=loop.time(),
                endpoints=[e for e in svc.endpoints if is_announceable(e[0])],
                interval=cfg.beacon_interval,
            )
            io = BeaconTransport(
                self.beacon,
                port=cfg.beacon_port,
                hosts=cfg.hosts,
                on_found=self._on_lan_peer,
                on_received=self._on_beacon_bytes,
            )
            if io.active and io.start():
                self._beacon_io = io
            else:
                self.beacon = None
        initial: list[Candidate] = []
        if self.cache is not None:
            for e in await asyncio.to_thread(self.cache.load):
                initial.append(Candidate("cache", e.endpoints, e.peer_id))
        # The contacts are the fallback for when the peers of earlier runs
        # are gone (the original crust's); the dialler does not let a
        # stale cache hold them up for long.
        contacts = [Candidate("contact", (parse_host_port(c),)) for c in cfg.contacts]
        self.bootstrapper.start(initial, expect_more=self._beacon_io is not None, fallback=contacts)
        if cfg.gossip:
            self._tasks.append(asyncio.create_task(self._gossip_loop()))
        if self.cache is not None:
            self._tasks.append(asyncio.create_task(self._cache_loop()))

    async def close(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._beacon_io is not None:
            self._beacon_io.close()
        await self.bootstrapper.close()
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for fut in self._requests.values():
            if not fut.done():
                fut.set_result(False)
        await self._flush_cache()

    # -- what the service calls --------------------------------------------------------

    def peers_on_lan(self) -> list[LanPeerFound]:
        """Nodes of our network the beacon heard recently."""
        if self.beacon is None:
            return []
        # The beacon runs on the event loop's clock (time.monotonic()).
        now = time.monotonic()
        return [LanPeerFound(p.peer_id, p.endpoints) for p in self.beacon.peers(now)]

    def stats(self) -> dict[str, Any]:
        """Counters for ``Service.stats()`` (JSON-serialisable)."""
        beacon: dict[str, int] | None = None
        if self.beacon is not None:
            beacon = {**self.beacon.stats, "lan_peers": len(self.beacon.peers(time.monotonic()))}
        b = self.bootstrapper
        return {
            "beacon": beacon,
            "bootstrap": {
                "tried": b.tried,
                "connected": b.connected,
                "skipped": dict(b.skipped),
                "first_success": b.first_success,
            },
            "gossip": dict(self._gossip_rx.stats),
        }

    def on_new_peer(self, peer: Peer) -> None:
        self.connected[peer.id] = peer
        if not self._started:
            return
        if not peer.incoming:
            self._remember(peer, [peer.address])
        elif self.beacon is not None:
            # Where it listens is known already if the beacon heard it.
            lan = self.beacon.lan_peer(peer.id)
            if lan is not None and lan.endpoints:
                self._remember(peer, list(lan.endpoints))
        if self.svc.config.gossip:
            self._send_gossip(peer)
            if not peer.incoming:
                self._gossip_soon()  # shareable now (by the address we dialled)

    def on_link_replaced(self, peer: Peer) -> None:
        """``peer``'s connection was replaced by a better one (both sides
        dialled at once, TCP won over UDP...): what we sent on the old one
        may be lost with it, and the peer may now count as dialled by us."""
        if not self._started:
            return
        if not peer.incoming:
            self._remember(peer, [peer.address])
        if self.svc.config.gossip:
            self._send_gossip(peer)

    def on_lost_peer(self, peer: Peer) -> None:
        if self.connected.get(peer.id) is peer:
            del self.connected[peer.id]
        self._gossip_rx.forget(peer.id)
        self._advertised.pop(peer.id, None)
        self._accepted.discard(peer.id)
        fut = self._requests.pop(peer.id, None)
        if fut is not None and not fut.done():
            fut.set_result(False)

    # -- beacon ---------------------------------------------------------------------------

    def _on_beacon_bytes(self, host: str, nbytes: int) -> None:
        self.svc.reflection.received(host, nbytes, now_us())

    def _on_lan_peer(self, ev: LanPeerFound, source: str) -> None:
        self.svc.emit(ev)
        # A beacon is signed by a key anyone can make, and its source can
        # be forged: the dial it causes is charged to its source address.
        budget = self.svc.reflection

        def charge(nbytes: int) -> bool:
            return budget.spend(source, nbytes, now_us())

        self.bootstrapper.offer(Candidate("beacon", ev.endpoints, ev.peer_id, charge))

    # -- bootstrap requests ------------------------------------------------------------

    async def _ask_bootstrap(self, peer: Peer) -> bool:
        fut = self._requests.get(peer.id)
        if fut is None or fut.done():
            fut = asyncio.get_running_loop().create_future()
            self._requests[peer.id] = fut
            try:
                self.svc.send_control(peer, ControlKind.BOOTSTRAP, bytes((REQUEST,)))
            except CrustError as exc:
                logger.debug("bootstrap request to %s not sent: %s", peer.id.short, exc)
                return False
        return await asyncio.shield(fut)

    def _on_bootstrap(self, peer: Peer, payload: bytes) -> None:
        if len(payload) != 1 or payload[0] not in (REQUEST, ACCEPT, REFUSE):
            raise ValueError(f"bad bootstrap message {payload[:8].hex()}")
        what = payload[0]
        if what != REQUEST:
            fut = self._requests.pop(peer.id, None)
            if fut is not None and not fut.done():
                fut.set_result(what == ACCEPT)
            return
        accept = self.svc.config.accept_bootstrap
        try:
            answer = bytes((ACCEPT if accept else REFUSE,))
            self.svc.send_control(peer, ControlKind.BOOTSTRAP, answer)
        except CrustError as exc:
            logger.debug("bootstrap answer to %s not sent: %s", peer.id.short, exc)
            return
        if not accept:
            logger.info("refusing to bootstrap %s (accept_bootstrap is off)", peer.id.short)
            if peer.maintained:
                return  # the application keeps this connection for its own use
            # Graceful: the REFUSE queued above still goes out first.
            task = asyncio.create_task(self.svc.disconnect(peer))
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)
            return
        if peer.id not in self._accepted:
            self._accepted.add(peer.id)
            # Joined, not maintained: kept while its link lives (never
            # pruned for idling), yet still subject to the connection caps
            # (crust.capacity): a request anyone can send must not make a
            # connection untouchable (design note 0053).
            peer.joined = True
            self.svc.emit(BootstrapAccept(peer))

    # -- gossip ----------------------------------------------------------------------------

    def _listening(self, peer: Peer) -> list[Address]:
        """Where ``peer`` listens, as far as we know."""
        eps = list(self._advertised.get(peer.id, ()))
        if not peer.incoming and peer.address not in eps:
            eps.insert(0, peer.address)
        return eps

    def _send_gossip(self, peer: Peer) -> None:
        # A random sample when there are more peers than a list holds, so
        # successive rounds spread different contacts.
        others = list(self.connected.values())
        if len(others) > MAX_CONTACTS:
            others = self._rng.sample(others, min(len(others), 2 * MAX_CONTACTS))
        contacts = []
        for other in others:
            if other.id == peer.id or not other.is_connected:
                continue
            eps = _shareable(self._listening(other), peer.address)
            if eps:
                contacts.append((other.id, eps))
                if len(contacts) == MAX_CONTACTS:
                    break
        self._gossip_seq = max(self._gossip_seq + 1, time.time_ns())
        payload = encode_gossip(
            self.svc.identity,
            self.svc.config.network,
            self._gossip_seq,
            _shareable(self.svc.endpoints, peer.address),
            contacts,
        )
        try:
            self.svc.send_control(peer, ControlKind.GOSSIP, payload)
        except CrustError as exc:
            logger.debug("gossip to %s not sent: %s", peer.id.short, exc)

    def _on_gossip(self, peer: Peer, payload: bytes) -> None:
        now = asyncio.get_running_loop().time()
        msg = self._gossip_rx.receive(peer.id, payload, now)  # ValueError: misbehaving
        if msg is None:
            return
        advertised = resolve_unspecified(msg.endpoints, peer.address[0])
        news = bool(advertised) and self._advertised.get(peer.id) != advertised
        self._advertised[peer.id] = advertised
        if peer.incoming and advertised:
            self._remember(peer, advertised)
        if news and peer.incoming and self.svc.config.gossip:
            self._gossip_soon()  # shareable now
        if not self.bootstrapper.wants_more():
            return  # the dialler would skip them all
        charge = self.svc.charge_to(peer)
        for pid, eps in msg.contacts:
            usable = tuple(e for e in eps if e[0] not in ("0.0.0.0", "::"))
            if pid != self.svc.id and pid not in self.connected and usable:
                # Addresses the gossiping peer chose: it pays for the dial.
                self.bootstrapper.offer(Candidate("gossip", usable, pid, charge))

    def _gossip_soon(self) -> None:
        """Schedule one gossip round to every peer shortly (coalesced)."""
        if self._soon is not None or not self._started:
            return
        loop = asyncio.get_running_loop()
        delay = max(_SOON_DELAY, self._last_soon + _SOON_EVERY - loop.time())
        self._soon = loop.call_later(delay, self._soon_round)

    def _soon_round(self) -> None:
        self._soon = None
        self._last_soon = asyncio.get_running_loop().time()
        for peer in self.svc.peers:
            self._send_gossip(peer)

    async def _gossip_loop(self) -> None:
        interval = self.svc.config.gossip_interval
        while True:
            await asyncio.sleep(interval)
            for peer in self.svc.peers:
                self._send_gossip(peer)

    # -- cache ------------------------------------------------------------------------------

    def _remember(self, peer: Peer, endpoints: list[Address]) -> None:
        if self.cache is None:
            return
        nat = {}
        if peer.incoming:
            nat["observed"] = f"{peer.address[0]}:{peer.address[1]}"
        eps = list(dict.fromkeys([*endpoints, *self._listening(peer)]))[:8]
        self._pending_cache[peer.id] = CacheEntry(
            peer.id,
            tuple(eps),
            "tcp" if peer.path == "direct-tcp" else "udp",
            time.time(),
            nat,
        )

    def _on_candidate_failed(self, cand: Candidate) -> None:
        if cand.source == "cache" and cand.peer_id is not None:
            self._failed_cache.add(cand.peer_id)

    async def _cache_loop(self) -> None:
        while True:
            await asyncio.sleep(_CACHE_FLUSH)
            await self._flush_cache()

    async def _flush_cache(self) -> None:
        if self._writing is not None:
            # A write cancelled by close() still runs in its thread: wait for
            # it, so the file is complete when close() returns.
            await asyncio.shield(self._writing)
        if self.cache is None or not (self._pending_cache or self._failed_cache):
            return
        entries = list(self._pending_cache.values())
        self._pending_cache.clear()
        # A peer that failed and then connected (another endpoint, later)
        # is not a failure.
        failed = self._failed_cache - {e.peer_id for e in entries}
        self._failed_cache.clear()
        cache = self.cache

        def write() -> bool:
            ok = cache.record(entries)
            return cache.record_failures(failed) and ok

        loop = asyncio.get_running_loop()
        self._writing = loop.run_in_executor(None, write)
        try:
            await asyncio.shield(self._writing)
        finally:
            if self._writing.done():
                self._writing = None
