"""The service's side of the DHT: publish our record, resolve others'.

Publishing (``ServiceConfig.dht`` and ``dht_publish``): once the DHT has a
routing table, the node stores its record (crust.dht.record) under its
identity key, again whenever its endpoints or contacts change (checked every
:data:`CHECK_EVERY` seconds) and at :data:`REFRESH` seconds at the latest,
well before the record's :data:`TTL` runs out; at a clean shutdown it
replaces it with an empty record (withdrawn). The record's sequence number
is the larger of one more than the last one used (kept in a file next to
the identity key when there is one) and the time in milliseconds, so it
grows across restarts.

Resolving: a lookup in the DHT, every item found verified
(:func:`crust.dht.record.verify`) against the id asked for, the highest
sequence number kept; cached until it expires (crust.dht.cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crust.config import parse_host_port
from crust.dht.cache import RecordCache
from crust.dht.node import DhtNode, DhtState
from crust.dht.record import (
    MAX_CONTACTS,
    MAX_ENDPOINTS,
    Contact,
    Record,
    RecordError,
    SignedItem,
    expanded_secret,
    network_salt,
    verify,
)
from crust.errors import RecordNotFound
from crust.identity import PeerId

if TYPE_CHECKING:
    from crust.node import Node

__all__ = ["CHECK_EVERY", "REFRESH", "TTL", "Directory", "RecordNotFound", "SeqStore"]

logger = logging.getLogger(__name__)

#: Seconds a published record holds, and how often it is put again at the
#: latest (BEP 44 nodes keep items about two hours).
TTL = 7200
REFRESH = 1200.0
#: Seconds between checks that the record still says the same.
CHECK_EVERY = 10.0
#: Seconds a lookup waits for more items after the first valid one.
_GRACE = 0.3
#: Seconds between lookups that found nothing, within one resolve.
_RETRY_AFTER = 0.5
#: Seconds the withdrawal may take at shutdown.
_WITHDRAW_WAIT = 2.0


class SeqStore:
    """The record sequence number, monotonic across restarts: one more than
    the last used, and at least the time in milliseconds (so a node without
    the file, or that lost it, still moves forward while its clock does)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._last = 0
        if path is not None:
            with contextlib.suppress(OSError, ValueError):
                self._last = int(path.read_text().strip())

    def next(self) -> int:
        seq = max(self._last + 1, time.time_ns() // 1_000_000)
        self._last = seq
        if self.path is not None:
            try:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(f"{seq}\n")
                os.replace(tmp, self.path)
            except OSError as exc:
                logger.warning("cannot keep the DHT sequence number in %s: %s", self.path, exc)
        return seq


class Directory:
    """Publication and resolution of endpoint records for one service."""

    def __init__(self, service: Node) -> None:
        self.svc = service
        cfg = service.config
        self.salt = network_salt(cfg.network)
        self.cache = RecordCache()
        #: Records rejected, by reason (RecordError.reason).
        self.rejected: Counter[str] = Counter()
        #: The record last published (None before the first).
        self.published: Record | None = None
        self.published_on = 0
        #: The last record the DHT confirmed it stored (None before).
        self.stored: Record | None = None
        #: Set by :meth:`close` when the DHT confirmed our withdrawal in time.
        self.withdrawal_confirmed = False
        host = next((h for h in cfg.hosts if ":" not in h), cfg.hosts[0])
        self.node = DhtNode(
            host,
            cfg.dht_port,
            tuple(parse_host_port(b) for b in cfg.dht_bootstrap),
            # A read-only node (BEP 43) asks, gets and puts but answers no
            # queries, so it stays out of others' routing tables: a crust
            # node comes and goes and often sits behind a NAT, and would
            # otherwise leave a dead entry that slows every lookup near it
            # (dht_settings can make it a full node).
            extra_settings={"dht_read_only": True, **cfg.dht_settings},
        )
        path = cfg.identity_path if cfg.identity is None else None
        if path is None and cfg.identity is None:
            from crust.identity import default_identity_path

            path = default_identity_path()
        self.seqs = SeqStore(path.with_name(path.name + ".dht-seq") if path else None)
        self._secret = expanded_secret(service.identity.seed)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def state(self) -> DhtState:
        return self.node.state

    async def start(self) -> None:
        await self.node.start()
        if self.svc.config.dht_publish:
            self._task = asyncio.create_task(self._publish_loop())

    async def close(self) -> None:
        """Withdraw our record (when we published one), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.published is not None and not self.published.withdrawn:
            empty = Record((), (), self.seqs.next(), int(time.time()), TTL)
            try:
                await asyncio.wait_for(self._put(empty), _WITHDRAW_WAIT)
                self.withdrawal_confirmed = True
            except asyncio.TimeoutError:
                # libtorrent confirms a put once every node asked answered
                # or timed out: ~15 s when one of the closest is silent. A
                # bounded close wins; the record then lives out its TTL.
                logger.info(
                    "DHT withdrawal not confirmed within %.0f s: the record expires by its TTL",
                    _WITHDRAW_WAIT,
                )
        await self.node.close()

    def changed(self) -> None:
        """Our endpoints or contacts may have changed: check soon."""
        self._changed.set()

    # -- publishing ------------------------------------------------------------

    def current(self) -> tuple[tuple[tuple[str, int], ...], tuple[Contact, ...]]:
        """What our record should say now: the endpoints we can be reached
        at (listening, port-mapped, reflexive, STUN) and home contacts."""
        cands, _direct = self.svc.traversal.candidates(None)
        endpoints = tuple(dict.fromkeys(cands))[:MAX_ENDPOINTS]
        # "Home" contacts: first the ones we joined (Service.join: they keep
        # us and we rejoin them), then other peers we keep a connection to
        # and reached at an address of theirs, so others can dial them too.
        found: dict[PeerId, Contact] = {}
        for pid, addr in self.svc.contacts.joined():
            found.setdefault(pid, Contact(pid, addr[:2]))
        for peer in self.svc.peers:
            if peer.maintained and self.svc.known_address(peer.id) == peer.address:
                found.setdefault(peer.id, Contact(peer.id, peer.address[:2]))
        return endpoints, tuple(list(found.values())[:MAX_CONTACTS])

    async def _publish_loop(self) -> None:
        while not self.state.nodes:
            await asyncio.sleep(0.1)
        while True:
            # Cleared before reading what the record should say, not after
            # the put: a change signalled while a put is under way (a
            # contact joined meanwhile) must start another round at once.
            self._changed.clear()
            endpoints, contacts = self.current()
            now = time.time()
            p = self.published
            if (
                p is None
                or p.endpoints != endpoints
                or p.contacts != contacts
                or now - self.published_on >= REFRESH
            ):
                record = Record(endpoints, contacts, self.seqs.next(), int(now), TTL)
                stored = await self._put(record)
                if stored:
                    self.published_on = int(now)
                    self.stored = record
                else:
                    # Nobody took it: try again at the next check.
                    self.published = None
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), CHECK_EVERY)

    async def _put(self, record: Record) -> int:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(n: int) -> None:
            if not fut.done():
                fut.set_result(n)

        self.published = record
        self.node.put(self._secret, bytes(self.svc.id), record.encode(), self.salt, done)
        n = await fut
        logger.info(
            "DHT record seq %d (%d endpoints, %d contacts) stored on %d nodes",
            record.seq, len(record.endpoints), len(record.contacts), n,
        )  # fmt: skip
        return n

    # -- resolving -------------------------------------------------------------

    def accept(self, peer_id: PeerId, item: SignedItem) -> Record | None:
        """``item`` verified as ``peer_id``'s record (cached), or None
        (counted in :attr:`rejected`)."""
        now = time.time()
        try:
            record = verify(
                item, peer_id=peer_id, salt=self.salt, now=now,
                seen_seq=self.cache.seen_seq(peer_id),
            )  # fmt: skip
        except RecordError as exc:
            self.rejected[exc.reason] += 1
            logger.info("DHT record for %s rejected: %s", peer_id.short, exc)
            return None
        self.cache.put(peer_id, record, now)
        return record

    async def resolve(
        self, peer_id: PeerId, timeout: float = 5.0, *, fresh: bool = False
    ) -> Record:
        """``peer_id``'s current record: from the cache while it holds
        (unless ``fresh``), else looked up. :class:`RecordNotFound` when
        there is none, or it was withdrawn."""
        if not fresh and (hit := self.cache.get(peer_id, time.time())) is not None:
            if hit.withdrawn:
                raise RecordNotFound(f"{peer_id.short} withdrew its DHT record")
            return hit
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        rejected_before = self.rejected.copy()
        # A lookup from an empty routing table finds nothing: wait for the
        # first nodes (the DHT was just started, as `crust resolve` does).
        while not self.state.nodes and loop.time() < deadline - 0.1:
            await asyncio.sleep(0.05)
        while True:
            best = await self._lookup(peer_id, deadline)
            # Nothing yet: the record may be on its way (just put), or the
            # routing table still filling. Look again while time remains.
            if best is not None or deadline - loop.time() < _RETRY_AFTER + 0.2:
                break
            await asyncio.sleep(_RETRY_AFTER)
        if best is None:
            why = tuple(sorted((self.rejected - rejected_before).elements()))
            detail = f" (rejected: {', '.join(why)})" if why else ""
            raise RecordNotFound(f"no DHT record for {peer_id.short}{detail}", why)
        if best.withdrawn:
            raise RecordNotFound(f"{peer_id.short} withdrew its DHT record")
        return best

    async def _lookup(self, peer_id: PeerId, deadline: float) -> Record | None:
        """One lookup: the newest valid record found, or None."""
        loop = asyncio.get_running_loop()
        best: list[Record] = []
        finished: asyncio.Future[None] = loop.create_future()
        first: asyncio.Future[None] = loop.create_future()

        def deliver(item: SignedItem | None, final: bool) -> None:
            if item is not None:
                record = self.accept(peer_id, item)
                if record is not None and (not best or record.seq > best[0].seq):
                    best[:] = [record]
                    if not first.done():
                        first.set_result(None)
            if final and not finished.done():
                finished.set_result(None)

        self.node.get(bytes(peer_id), self.salt, deliver)
        # The lookup's end, or a short grace after the first valid record
        # (a newer one found by then replaces it).
        await asyncio.wait(
            {first, finished},
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if first.done() and not finished.done():
            remaining = max(0.0, min(_GRACE, deadline - loop.time()))
            await asyncio.wait({finished}, timeout=remaining)
        return best[0] if best else None

    def stats(self) -> dict[str, Any]:
        s = self.state
        return {
            "running": s.running,
            "port": s.port,
            "nodes": s.nodes,
            "puts": s.puts,
            "gets": s.gets,
            "published_seq": self.published.seq if self.published else None,
            "cached": len(self.cache),
            "rejected": dict(self.rejected),
        }
