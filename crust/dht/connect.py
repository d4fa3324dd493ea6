"""Connect by peer id through the peer's DHT record (no mutual peer).

``Service.connect(peer_id)`` comes here when no connected peer could
introduce us. The record (verified: crust.dht.record) lists where the peer
said it can be reached and which nodes keep a link to it. We dial every
endpoint at once, pinned to the peer id (so the Noise handshake, not the
record, decides who answered); the first handshake wins. When none answers
(the peer is behind a NAT that drops unsolicited packets), we connect to one
of its contacts, which is then a mutual peer, and go through today's
rendezvous: punching, else a relay (crust.asyncio.traversal).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from crust.asyncio.traversal import PeerNotFound
from crust.dht.directory import RecordNotFound
from crust.errors import Attempt, ConnectError
from crust.identity import PeerId

if TYPE_CHECKING:
    from crust.dht.record import Record
    from crust.node import Node
    from crust.peer import Address, Peer

__all__ = ["connect_by_record"]

logger = logging.getLogger(__name__)

# A direct dial to one endpoint may take this long at most: the record's
# reflexive addresses of a peer behind a filtering NAT never answer, and
# the contacts are still to try.
_DIRECT_WAIT = 3.0


async def connect_by_record(svc: Node, pid: PeerId, limit: float) -> Peer:
    """The peer, reached through its DHT record; :class:`PeerNotFound`
    without a usable record, :class:`ConnectError` when nothing it lists
    worked."""
    assert svc.dht is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    try:
        record = await svc.dht.resolve(pid, max(0.1, limit / 2))
    except RecordNotFound as exc:
        raise PeerNotFound(f"no mutual peer, and {exc}") from None
    try:
        return await _try_record(svc, pid, record, deadline)
    except ConnectError:
        # A cached record may be stale (the peer restarted elsewhere): one
        # fresh lookup, and another try if it says something newer.
        svc.dht.cache.forget(pid)
        left = deadline - loop.time()
        if left <= 0.2:
            raise
        try:
            newer = await svc.dht.resolve(pid, left / 2, fresh=True)
        except RecordNotFound:
            raise PeerNotFound(f"{pid.short}'s DHT record is gone") from None
        if newer.seq <= record.seq:
            raise
        return await _try_record(svc, pid, newer, deadline)


async def _try_record(svc: Node, pid: PeerId, record: Record, deadline: float) -> Peer:
    loop = asyncio.get_running_loop()
    attempts: list[Attempt] = []
    if record.endpoints:
        wait = min(_DIRECT_WAIT, max(0.1, deadline - loop.time()))
        try:
            return await _first(svc, pid, record.endpoints, wait)
        except ConnectError as exc:
            attempts.extend(exc.attempts)
    for contact in record.contacts:
        left = deadline - loop.time()
        if left <= 0.1:
            break
        if contact.peer_id in (svc.id, pid):
            continue
        try:
            await svc.dial(contact.address, peer_id=contact.peer_id, timeout=left)
            return await svc.traversal.connect(pid, max(0.1, deadline - loop.time()))
        except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
            attempts.append(Attempt(f"via contact {contact.peer_id.short}", exc))
    raise ConnectError(
        f"the DHT record of {pid.short} (seq {record.seq}) led nowhere: "
        + ("; ".join(map(str, attempts)) or "it lists no endpoint or contact"),
        tuple(attempts),
    )


async def _first(svc: Node, pid: PeerId, endpoints: tuple[Address, ...], wait: float) -> Peer:
    """Dial every endpoint at once, pinned to ``pid``; the first to finish
    its handshake wins and the others are cancelled."""
    tasks = {
        asyncio.create_task(svc.dial(addr, peer_id=pid, timeout=wait)): addr for addr in endpoints
    }
    attempts: list[Attempt] = []
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if (exc := t.exception()) is None:
                    return t.result()
                host, port = tasks[t]
                attempts.append(Attempt(f"record endpoint {host}:{port}", exc))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    raise ConnectError("no endpoint in the record answered", tuple(attempts))
