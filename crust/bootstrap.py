"""The bootstrap dialler: connects a starting node to the network.

Candidates come from the bootstrap cache, the configured contacts, the LAN
beacon and contact gossip (:mod:`crust.asyncio.discovery` feeds them in).
They are dialled concurrently, ``bootstrap_parallelism`` at a time, each
attempt bounded by ``bootstrap_attempt_timeout``; a connection counts once
the peer agrees to be bootstrapped off (a ``BOOTSTRAP`` control exchange).
The fallback candidates (the configured contacts, when the cache has
entries) go to the front of the queue one attempt timeout after the start,
or as soon as everything before them failed: a cache of nodes long gone
delays them by seconds, not by its length times the timeout.
Dialling stops while the node has ``bootstrap_peers`` connections, and
candidates that are blacklisted, ourselves, already connected or tried in
the last :data:`RETRY_AFTER` seconds are skipped. ``BootstrapFailed`` is
reported once when, ``bootstrap_timeout`` after the start (or as soon as
every candidate failed and nothing more can come), the node is connected
to nobody.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from crust.events import BootstrapConnect, BootstrapFailed
from crust.wire import Address

if TYPE_CHECKING:
    from crust.identity import PeerId
    from crust.node import Node
    from crust.peer import Peer

__all__ = ["RETRY_AFTER", "Bootstrapper", "Candidate"]

logger = logging.getLogger(__name__)

#: Seconds before the same peer id or address is dialled again.
RETRY_AFTER = 30.0
_QUEUE = 512
_TRIED = 4096


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node to try: where it was learned (``"cache"``, ``"contact"``,
    ``"beacon"``, ``"gossip"``), its endpoints, its id when known."""

    source: str
    endpoints: tuple[Address, ...]
    peer_id: PeerId | None = None
    #: Whoever named these endpoints pays for the dial (gossip, beacon):
    #: crust.reflection. None: we chose them (cache, contacts).
    charge: Callable[[int], bool] | None = field(default=None, compare=False, repr=False)


class Bootstrapper:
    """Dials candidates for one service. ``request(peer)`` asks a connected
    peer to bootstrap us and returns whether it accepted."""

    def __init__(
        self,
        service: Node,
        request: Callable[[Peer], Awaitable[bool]],
        connected: Mapping[PeerId, Peer],
        on_failed: Callable[[Candidate], None] | None = None,
    ) -> None:
        self.svc = service
        self._request = request
        self._on_failed = on_failed
        self._fallback: list[Candidate] = []
        self._fallback_timer: asyncio.TimerHandle | None = None
        # Kept up to date by the caller: a dict lookup, where scanning
        # svc.peers per candidate made a 100-node mesh 4x slower to build.
        self._connected = connected
        cfg = service.config
        self._sem = asyncio.Semaphore(cfg.bootstrap_parallelism)
        self._queue: deque[Candidate] = deque(maxlen=_QUEUE)
        self._wake = asyncio.Event()
        self._tried: dict[object, float] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._expect_more = False
        self._reported = False
        self.started_at = 0.0
        self.tried = 0
        self.connected = 0
        self.errors: list[str] = []
        #: Candidates not dialled, by reason ("blacklisted", "tried recently"...).
        self.skipped: dict[str, int] = {}
        #: Seconds from start to the first accepted bootstrap connection.
        self.first_success: float | None = None

    def start(
        self,
        initial: list[Candidate],
        *,
        expect_more: bool,
        fallback: list[Candidate] | None = None,
    ) -> None:
        """Start dialling ``initial``, then ``fallback`` (see the module
        doc); ``expect_more``: the beacon may still bring candidates (so an
        early exhaustion is not yet a failure)."""
        self.started_at = time.monotonic()
        self._expect_more = expect_more
        for c in initial:
            self.offer(c)
        self._fallback = list(fallback or ())
        anything = bool(initial or self._fallback)
        if self._fallback:
            if initial:
                self._fallback_timer = asyncio.get_running_loop().call_later(
                    self.svc.config.bootstrap_attempt_timeout, self._offer_fallback
                )
            else:
                self._offer_fallback()
        if not anything and not expect_more:
            logger.info("bootstrap: no cache entries, contacts or beacon: nothing to try")
            self._reported = True
        else:
            loop = asyncio.get_running_loop()
            self._deadline = loop.call_later(self.svc.config.bootstrap_timeout, self._check_failed)
        self._runner = asyncio.create_task(self._run())

    def offer(self, cand: Candidate) -> None:
        """Queue a candidate (the oldest queued one is dropped when full)."""
        if cand.endpoints:
            self._queue.append(cand)
            self._wake.set()

    async def close(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        if self._fallback_timer is not None:
            self._fallback_timer.cancel()
        tasks = [t for t in (self._runner, *self._inflight) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- internals ------------------------------------------------------------------------

    def wants_more(self) -> bool:
        """Whether the node has fewer connections than ``bootstrap_peers``."""
        return len(self._connected) < self.svc.config.bootstrap_peers

    def _skip(self, cand: Candidate, now: float) -> str | None:
        svc = self.svc
        pid = cand.peer_id
        if pid is not None:
            if pid == svc.id:
                return "ourselves"
            if svc.is_blacklisted_id(pid):
                return "blacklisted"
            if pid in self._connected:
                return "already connected"
        if all(svc.is_blacklisted_address(a) for a in cand.endpoints):
            return "blacklisted address"
        keys: list[object] = [pid] if pid is not None else list(cand.endpoints)
        if all(now - self._tried.get(k, -RETRY_AFTER) < RETRY_AFTER for k in keys):
            return "tried recently"
        return None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            cand = self._queue.popleft()
            now = time.monotonic()
            why = None if self.wants_more() else "enough peers"
            why = why or self._skip(cand, now)
            if why is not None:
                logger.debug("bootstrap: skip %s candidate %s: %s", cand.source, cand, why)
                self.skipped[why] = self.skipped.get(why, 0) + 1
                continue
            for k in (cand.peer_id, *cand.endpoints):
                if k is not None:
                    self._tried[k] = now
            while len(self._tried) > _TRIED:
                self._tried.pop(next(iter(self._tried)))
            await self._sem.acquire()
            self.tried += 1
            task = asyncio.create_task(self._attempt(cand))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _attempt(self, cand: Candidate) -> None:
        timeout = self.svc.config.bootstrap_attempt_timeout
        try:
            try:
                peer, why = await asyncio.wait_for(self._dial(cand, timeout), timeout)
            except asyncio.TimeoutError:
                peer, why = None, f"no connection and answer within {timeout} s"
            if peer is None:
                self._failed(cand, why)
                return
            self.svc.maintain(peer)
            self.connected += 1
            if self.first_success is None:
                self.first_success = time.monotonic() - self.started_at
            logger.info("bootstrap: connected to %s (%s)", peer.id.short, cand.source)
            self.svc.emit(BootstrapConnect(peer, cand.source))
        finally:
            self._sem.release()
            if not self._queue and not self._inflight - {asyncio.current_task()}:
                self._maybe_exhausted()

    async def _dial(self, cand: Candidate, timeout: float) -> tuple[Peer | None, str]:
        """Connect to the candidate's endpoints in turn and ask it to
        bootstrap us; the caller bounds the whole of it by ``timeout``.
        Returns the accepting peer, or None and why not."""
        peer = None
        why = "no endpoint that is not blacklisted"
        for addr in await self._resolve(cand.endpoints):
            if self.svc.is_blacklisted_address(addr):
                continue
            try:
                peer = await self.svc.dial(
                    addr, peer_id=cand.peer_id, timeout=timeout, charge=cand.charge
                )
                break
            except (ConnectionError, OSError, ValueError) as exc:
                why = str(exc)
        if peer is None:
            return None, why
        if cand.source == "contact":
            peer.chosen = True  # configured: as good as the application's own
        if not await self._request(peer):
            return None, "refused to be bootstrapped off"
        return peer, ""

    async def _resolve(self, endpoints: tuple[Address, ...]) -> list[Address]:
        """Endpoints with host names (configured contacts may have them)
        replaced by their addresses, without blocking the event loop."""
        out: list[Address] = []
        loop = asyncio.get_running_loop()
        for host, port in endpoints:
            try:
                ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                pass
            else:
                out.append((host, port))
                continue
            try:
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                logger.info("bootstrap: cannot resolve %s: %s", host, exc)
                continue
            for *_, sockaddr in infos:
                addr = (str(sockaddr[0]), int(sockaddr[1]))
                if addr not in out:
                    out.append(addr)
        return out

    def _failed(self, cand: Candidate, why: str) -> None:
        logger.info("bootstrap: %s candidate %s failed: %s", cand.source, cand.endpoints, why)
        if len(self.errors) < 16:
            host, port = cand.endpoints[0]
            self.errors.append(f"{cand.source} {host}:{port}: {why}")
        if self._on_failed is not None:
            self._on_failed(cand)

    def _offer_fallback(self) -> None:
        """The fallback candidates, ahead of what is still queued."""
        if self._fallback_timer is not None:
            self._fallback_timer.cancel()
            self._fallback_timer = None
        fallback, self._fallback = self._fallback, []
        for c in reversed(fallback):
            if c.endpoints:
                self._queue.appendleft(c)
        if fallback:
            self._wake.set()

    def _maybe_exhausted(self) -> None:
        if self._fallback:
            self._offer_fallback()
        elif not self._expect_more:
            self._check_failed()

    def _check_failed(self) -> None:
        if self._reported or self.connected or self.svc.peers:
            return
        self._reported = True
        reason = "; ".join(self.errors) or "no node found"
        logger.warning("bootstrap failed after %d candidates: %s", self.tried, reason)
        self.svc.emit(BootstrapFailed(self.tried, reason))
