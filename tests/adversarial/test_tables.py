"""Every table a stranger or a peer can add entries to has a bound
(issue 15, item 1). Each test drives one table far past its bound through
the call the network input reaches, and checks the bound and which
entries stay (the newest: an attacker's flood evicts its own entries).

Bounds proved elsewhere: the handshake responder's tables and the
misbehaving-source table (tests/adversarial/test_dos.py, ``assert_bounded``), the
endpoint's junk table (tests/adversarial/test_framing.py), connection caps
(test_connection_caps.py), the send buffer (tests/engine/test_engine_sim.py,
tests/engine/test_tcp_stream.py), unauthenticated TCP streams (test_tcp_preauth.py),
receive buffers (test_memory.py, tests/service/test_back_pressure.py), events and
held messages (tests/service/test_receive_api.py).
"""

from __future__ import annotations

import random

from crust import PeerId, bootstrap, handshake, wire
from crust.asyncio import relaying
from crust.bootstrap import Candidate
from crust.identity import Identity
from crust.nat import reflexive
from crust.node import _KNOWN_ADDRESSES

from .tools import node, run


def _ids(n: int) -> list[PeerId]:
    return [Identity.generate().peer_id for _ in range(n)]


def test_known_addresses_keep_the_most_recent() -> None:
    """connect(peer_id) remembers where each dialled peer was: gossip can
    make a node dial any number of ids over its life."""

    async def main() -> None:
        async with node() as (a, _):
            ids = _ids(_KNOWN_ADDRESSES + 500)
            for i, pid in enumerate(ids):
                a._remember_address(pid, ("192.0.2.1", 1000 + i % 60000))
            assert len(a._addresses) == _KNOWN_ADDRESSES
            assert ids[-1] in a._addresses and ids[0] not in a._addresses
            # Dialling one again makes it the most recent.
            a._remember_address(ids[600], ("192.0.2.2", 1))
            assert next(reversed(a._addresses)) == ids[600]

    run(main())


def test_reflexive_observations_are_bounded() -> None:
    """Every connected peer tells us the address it sees us at: lying
    peers add addresses and votes, within MAX_ADDRESSES and MAX_REPORTERS."""
    tracker = reflexive.ReflexiveTracker()
    liars = _ids(200)
    for i, pid in enumerate(liars):
        tracker.note("udp", (f"198.51.100.{i % 250}", 40000 + i), pid, i)
    assert len(tracker.observations()) == reflexive.MAX_ADDRESSES
    for i, pid in enumerate(liars):
        tracker.note("udp", ("203.0.113.5", 5483), pid, 1000 + i)
    top = tracker.observations()[0]
    assert top.address == ("203.0.113.5", 5483) and top.votes == reflexive.MAX_REPORTERS


def test_relay_offers_are_bounded() -> None:
    """A connected peer can announce relayed handshakes it never sends."""

    async def main() -> None:
        async with node() as (a, _):
            rel = a.traversal.relaying
            peer = object()  # the offer is only remembered here
            sessions = [random.randbytes(16) for _ in range(relaying._MAX_OFFERS + 300)]
            for s in sessions:
                rel.offer(s, a.id, peer)  # type: ignore[arg-type]
            assert len(rel._offers) == relaying._MAX_OFFERS
            assert rel.has_offer(sessions[-1]) and not rel.has_offer(sessions[0])

    run(main())


def test_handshake_failure_table_is_bounded() -> None:
    """Junk handshakes from many addresses between two drains (a drain
    follows each datagram in the service; a library user may drain less)."""
    me = Identity.generate()
    resp = handshake.Responder(me, "tables-test")
    tag = handshake.network_tag("tables-test")
    first = bytes([wire.LONG_HEADER_FLAGS | handshake.TYPE_INITIATION, handshake.VERSION])
    rng = random.Random(7)
    n = handshake._MAX_FAILED_SOURCES + 500
    for i in range(n):
        junk = first + tag + bytes(8) + rng.randbytes(handshake.INITIATION_SIZE - 14)
        resp.receive_datagram(junk, (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 9), i)
        assert resp.datagrams_to_send(i) == []
    failed = resp.take_failures()
    assert len(failed) == handshake._MAX_FAILED_SOURCES
    assert failed[-1] == ((f"10.0.{(n - 1) >> 8}.{(n - 1) & 255}", 9), 1)
    assert resp.take_failures() == []


def test_handshake_reply_queue_keeps_the_newest() -> None:
    """Replies wait in the responder until ``datagrams_to_send``: a flood
    between two drains (the driver drains after each datagram; a library
    user may drain less) keeps the newest replies, one per datagram, within
    3x, and counts the rest."""
    from crust.handshake.responder import _MAX_QUEUED_REPLIES

    me = Identity.generate()
    # Under load from the first initiation: every one gets a cookie reply.
    resp = handshake.Responder(me, "tables-test", cookie_policy=handshake.CookiePolicy(rate=1e-3))
    initiation = handshake.Initiator(
        Identity.generate(), "tables-test", remote=None, local_cid=b"\x01" * 8, now=0
    ).datagrams_to_send(0)[0]
    n = _MAX_QUEUED_REPLIES + 500
    addrs = [(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 9) for i in range(n)]
    for i, addr in enumerate(addrs):
        resp.receive_datagram(initiation, addr, i)
        assert len(resp._outbox) <= _MAX_QUEUED_REPLIES
    assert resp.stats["cookie_replies"] == n
    assert resp.stats["replies_dropped"] == n - _MAX_QUEUED_REPLIES
    replies = resp.datagrams_to_send(n)
    assert [a for _, a in replies] == addrs[-_MAX_QUEUED_REPLIES:]
    assert all(r[0] == 0xC4 and len(r) <= 3 * len(initiation) for r, _ in replies)
    assert resp.datagrams_to_send(n) == []
    # Drained after each datagram, as the driver does: one reply each, none lost.
    for i in range(3):
        addr = ("10.200.0.1", 100 + i)
        resp.receive_datagram(initiation, addr, n + i)
        [(reply, to)] = resp.datagrams_to_send(n + i)
        assert to == addr and reply[0] == 0xC4
    assert resp.stats["replies_dropped"] == n - _MAX_QUEUED_REPLIES


def test_bootstrap_candidates_are_bounded() -> None:
    """Gossip and beacons offer candidates faster than they are dialled:
    the queue keeps the newest 512, the record of attempts 4,096."""

    async def main() -> None:
        async with node() as (a, _):
            boot = a.discovery.bootstrapper
            cands = [
                Candidate("gossip", ((f"192.0.2.{i % 250}", 1000 + i),), pid)
                for i, pid in enumerate(_ids(bootstrap._QUEUE + 300))
            ]
            for c in cands:
                boot.offer(c)
            assert len(boot._queue) == bootstrap._QUEUE
            assert boot._queue[-1] is cands[-1] and cands[0] not in boot._queue

    run(main())
