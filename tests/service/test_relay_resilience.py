"""Relayed connections outlive their relay and upgrade in place; ``Peer.why``
explains every path (issue 16 item 4; design notes 0056, 0057).

Loopback, four services: two mutual peers M1 and M2, and A and B connected
to both, whose direct paths are blocked (they announce only an address
nobody listens on), so A's connection to B by id is relayed."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import struct
from collections.abc import AsyncIterator, Awaitable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, TypeVar

import pytest

from crust import Identity, LostPeer, NewMessage, Service, ServiceConfig
from crust.asyncio.relay_link import RelayLink
from crust.control import ControlKind
from crust.errors import ConfigError
from crust.nat import relay as relay_msg
from crust.peer import Peer

T = TypeVar("T")

QUIET = {k: False for k in ("gossip", "beacon") if k in ServiceConfig.__dataclass_fields__}


def figure(text: str) -> None:
    """A measured figure, printed for the report (pytest -s)."""
    print(f"FIGURE {text}")


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def _block_direct(svc: Service) -> None:
    """Announce only an address nobody listens on: punching and TCP fail."""
    svc.traversal.candidates = lambda toward: ([("127.0.0.1", 9)], 0)  # type: ignore[method-assign]


@asynccontextmanager
async def square(**kw: Any) -> AsyncIterator[tuple[Service, Service, Service, Service]]:
    """M1, M2, A, B: A and B connected to both Ms (maintained), not to each
    other, and unable to punch."""
    async with AsyncExitStack() as stack:
        nodes = []
        for _ in range(4):
            cfg = ServiceConfig(identity=Identity.generate(), backup_port=False, **QUIET, **kw)
            nodes.append(await stack.enter_async_context(Service(cfg)))
        m1, m2, a, b = nodes
        for n in (a, b):
            for m in (m1, m2):
                n.maintain(await n.connect(m.endpoints[0]))
            _block_direct(n)
            n.traversal.punch_timeout = 0.4
        yield m1, m2, a, b


def _frame(i: int) -> bytes:
    return struct.pack(">I", i) + os.urandom(1500)


class Stream:
    """Numbered messages from ``peer`` to ``rx``, checked there: order,
    exactly once, content; and any LostPeer between the two."""

    def __init__(self, peer: Peer, rx: Service, tx: Service, n: int) -> None:
        self.peer, self.rx, self.tx, self.n = peer, rx, tx, n
        self.sent = [_frame(i) for i in range(n)]
        self.got: list[bytes] = []
        self.lost: list[str] = []
        self.progress = asyncio.Event()

    async def receive(self) -> None:
        async for ev in self.rx.events():
            if isinstance(ev, NewMessage) and ev.peer.id == self.tx.id:
                self.got.append(ev.data)
                if len(self.got) == self.n:
                    return
            elif isinstance(ev, LostPeer) and ev.peer.id == self.tx.id:
                self.lost.append(ev.reason)

    async def watch_lost(self, svc: Service, other: Service) -> None:
        async for ev in svc.events(messages=False):
            if isinstance(ev, LostPeer) and ev.peer.id == other.id:
                self.lost.append(ev.reason)

    async def send(self, pause: float, marks: dict[int, asyncio.Event]) -> None:
        for i, m in enumerate(self.sent):
            await self.peer.send(m)
            if i in marks:
                marks[i].set()
            await asyncio.sleep(pause)

    def check(self) -> None:
        order = [struct.unpack(">I", g[:4])[0] for g in self.got]
        assert order == list(range(self.n)), "out of order, lost or repeated"
        digest = hashlib.sha256(b"".join(self.sent)).hexdigest()
        assert hashlib.sha256(b"".join(self.got)).hexdigest() == digest
        assert not self.lost, self.lost


async def _wait_for(cond: Any, timeout: float, step: float = 0.01) -> float:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    while not cond():
        if loop.time() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s")
        await asyncio.sleep(step)
    return loop.time() - t0


@pytest.mark.parametrize("how", ["closed", "session-closed", "session-forgotten"])
def test_relayed_connection_survives_losing_its_relay(how: str) -> None:
    """The relay goes away mid-stream (its service closes, or it ends the
    session): the connection moves to a session through the other mutual
    peer within 5 s; every message arrives once, in order; no LostPeer."""

    async def main() -> None:
        async with square() as (m1, m2, a, b):
            peer = await a.connect(b.id, timeout=8.0)
            assert peer.path == "relayed"
            first = peer._link
            assert isinstance(first, RelayLink)
            relay = m1 if first.via.id == m1.id else m2
            other = m2 if relay is m1 else m1
            stream = Stream(peer, b, a, 600)
            receiving = asyncio.create_task(stream.receive())
            watching = [
                asyncio.create_task(stream.watch_lost(a, b)),
                asyncio.create_task(stream.watch_lost(b, a)),
            ]
            halfway = asyncio.Event()
            sending = asyncio.create_task(stream.send(0.004, {150: halfway}))
            await halfway.wait()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            if how == "closed":
                await relay.close()
            elif how == "session-forgotten":
                # The relay drops its sessions without a word (as a full
                # table evicts one): the next datagram through it is
                # answered "unknown session", and the sender moves.
                other = None
                relay.traversal.relays._sessions.clear()
            else:
                # The relay ends the session (as on its idle expiry) and is
                # still there to introduce a new one: either M may carry it.
                other = None
                _close_sessions(relay)

            def moved() -> bool:
                link = peer._link
                return isinstance(link, RelayLink) and link is not first and link.received > 0

            took = await _wait_for(moved, 5.0)
            new = peer._link
            assert isinstance(new, RelayLink)
            back = next(p for p in b.peers if p.id == a.id)
            assert isinstance(back._link, RelayLink) and back._link.via.id == new.via.id
            if other is not None:
                assert new.via.id == other.id
            await sending
            await asyncio.wait_for(receiving, 30.0)
            figure(
                f"relay loss ({how}): re-routed in {took:.2f} s, "
                f"{stream.n - len(stream.got)} of {stream.n} messages lost"
            )
            assert loop.time() - t0 < 30.0
            stream.check()
            assert "re-routed" in peer.why and new.via.id.short in peer.why, peer.why
            assert "re-routed" in back.why, back.why
            assert peer.is_connected and back.is_connected
            for w in watching:
                w.cancel()

    run(main())


def _close_sessions(relay: Service) -> None:
    """Make ``relay`` end every relay session it carries, as when it
    expires an idle one, telling each side (RELAY CLOSE)."""
    table = relay.traversal.relays
    for session, s in list(table._sessions.items()):
        for pid in (s.a, s.b):
            p = relay._peers.get(pid)
            if p is not None:
                msg = relay_msg.encode(relay_msg.RelayOp.CLOSE, session, b"expired")
                relay.send_control(p, ControlKind.RELAY, msg)
        table.close(session, s.a)


def test_re_established_through_a_restarted_rendezvous() -> None:
    """The only mutual peer restarts (same address, new identity); A and B
    rejoin it (as a node that stays reachable does, issue 16 item 1; done
    by hand here): the connection goes on through it, nothing lost."""

    async def main() -> None:
        async with AsyncExitStack() as stack:
            nodes = []
            for _ in range(3):
                cfg = ServiceConfig(identity=Identity.generate(), backup_port=False, **QUIET)
                nodes.append(await stack.enter_async_context(Service(cfg)))
            m, a, b = nodes
            for n in (a, b):
                n.maintain(await n.connect(m.endpoints[0]))
                _block_direct(n)
                n.traversal.punch_timeout = 0.4
            peer = await a.connect(b.id, timeout=8.0)
            assert peer.path == "relayed"
            first = peer._link
            stream = Stream(peer, b, a, 600)
            receiving = asyncio.create_task(stream.receive())
            watching = [
                asyncio.create_task(stream.watch_lost(a, b)),
                asyncio.create_task(stream.watch_lost(b, a)),
            ]
            halfway = asyncio.Event()
            sending = asyncio.create_task(stream.send(0.004, {150: halfway}))
            await halfway.wait()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            host, port = m.endpoints[0][:2]
            await m.close()
            cfg = ServiceConfig(
                identity=Identity.generate(), backup_port=False, hosts=(host,), port=port, **QUIET
            )
            m2 = await stack.enter_async_context(Service(cfg))
            for n in (a, b):
                n.maintain(await n.connect((host, port)))

            def moved() -> bool:
                link = peer._link
                return isinstance(link, RelayLink) and link is not first and link.received > 0

            await _wait_for(moved, 5.0)
            took = loop.time() - t0
            assert peer._link.via.id == m2.id  # type: ignore[attr-defined]
            await sending
            await asyncio.wait_for(receiving, 30.0)
            figure(
                f"relay restart (rejoined): re-routed {took:.2f} s after the relay closed, "
                f"{stream.n - len(stream.got)} of {stream.n} messages lost"
            )
            stream.check()
            for w in watching:
                w.cancel()

    run(main())


def test_no_other_route_loses_the_peer_after_the_wait() -> None:
    """With no other mutual peer, the connection is lost once the wait is
    over (not at once), with the relay's loss as the reason."""

    from crust.asyncio.relaying import REROUTE_WAIT

    async def main() -> None:
        async with AsyncExitStack() as stack:
            nodes = []
            for _ in range(3):
                cfg = ServiceConfig(identity=Identity.generate(), backup_port=False, **QUIET)
                nodes.append(await stack.enter_async_context(Service(cfg)))
            m, a, b = nodes
            for n in (a, b):
                n.maintain(await n.connect(m.endpoints[0]))
                _block_direct(n)
                n.traversal.punch_timeout = 0.4
            peer = await a.connect(b.id, timeout=8.0)
            assert peer.path == "relayed"
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            await m.close()
            await _wait_for(lambda: not peer.is_connected, REROUTE_WAIT + 5.0, 0.05)
            took = loop.time() - t0
            assert REROUTE_WAIT - 1.0 <= took <= REROUTE_WAIT + 3.0, took
            assert peer.closed_reason is not None
            assert peer.closed_reason.startswith("the relaying peer disconnected")
            assert "no other route" in peer.closed_reason

    run(main(), timeout=40.0)


def test_relayed_connection_retries_direct_with_backoff_and_upgrades() -> None:
    """Blocked at first: tries of the direct path back off (doubling from
    ``upgrade_retry`` to ``upgrade_retry_max``); once unblocked, the
    connection moves to the punched path in place, nothing lost."""

    async def main() -> None:
        kw = {"upgrade_retry": 0.3, "upgrade_retry_max": 1.2}
        async with square(**kw) as (_, _m2, a, b):
            saved = {n: type(n.traversal).candidates.__get__(n.traversal) for n in (a, b)}
            peer = await a.connect(b.id, timeout=8.0)
            assert peer.path == "relayed"
            link = peer._link
            assert isinstance(link, RelayLink)
            stream = Stream(peer, b, a, 800)
            receiving = asyncio.create_task(stream.receive())
            watching = asyncio.create_task(stream.watch_lost(a, b))
            sending = asyncio.create_task(stream.send(0.004, {}))
            loop = asyncio.get_running_loop()
            # 3.6 s blocked: tries at ~0.3, 0.9, 2.1, 3.3 s (waits 0.3, 0.6,
            # 1.2, 1.2); a fixed 0.3 s wait would have tried ~5 times.
            times: list[float] = []
            t_start = loop.time()
            while loop.time() - t_start < 3.6:
                if link.tries > len(times):
                    times.append(loop.time())
                await asyncio.sleep(0.01)
            tries = link.tries
            gaps = [round(y - x, 2) for x, y in itertools.pairwise(times)]
            assert 3 <= tries <= 4, (tries, gaps)
            assert 0.5 <= gaps[0] <= 0.9, gaps  # 0.6: doubled
            assert 1.0 <= gaps[1] <= 1.6, gaps  # 1.2: doubled, and the cap
            assert all(g <= 1.6 for g in gaps), gaps  # never past the cap
            assert peer.path == "relayed"
            t0 = loop.time()
            for n in (a, b):
                n.traversal.candidates = saved[n]  # type: ignore[method-assign]
            took = await _wait_for(lambda: peer.path != "relayed", 1.0 + 3.0)
            assert peer.path == "direct-udp"
            assert link.upgraded_to is peer._link
            await sending
            await asyncio.wait_for(receiving, 30.0)
            figure(
                f"upgrade: {tries} tries in 3.6 s blocked (waits {gaps}); "
                f"moved {took:.2f} s after unblocking, "
                f"{stream.n - len(stream.got)} of {stream.n} messages lost"
            )
            stream.check()
            assert "upgraded in place from relayed" in peer.why, peer.why
            back = next(p for p in b.peers if p.id == a.id)
            assert back.path == "direct-udp"
            assert "upgraded in place from relayed" in back.why, back.why
            del t0
            watching.cancel()

    run(main())


def test_why_explains_every_path() -> None:
    from crust.asyncio.traversal import _why

    async def main() -> None:
        async with square() as (m1, m2, a, b):
            # Direct: dialled by address, both sides.
            pm = next(p for p in a.peers if p.id == m1.id)
            assert pm.why.startswith(f"{pm.path}: we dialled "), pm.why
            back = next(p for p in m1.peers if p.id == a.id)
            assert back.why.startswith(f"{back.path}: the peer dialled us from "), back.why
            # Relayed (the direct attempts blocked): through whom, and what
            # the other attempts ran into.
            peer = await a.connect(b.id, timeout=8.0)
            assert peer.path == "relayed"
            via = peer._link.via.id.short  # type: ignore[attr-defined]
            assert peer.why.startswith(f"relayed through {via}, which introduced us"), peer.why
            assert "udp punch:" in peer.why, peer.why
            back = next(p for p in b.peers if p.id == a.id)
            assert back.why.startswith(f"relayed through {via}"), back.why
            await a.disconnect(peer)
            await _wait_for(lambda: all(p.id != a.id for p in b.peers), 5.0)

        # By id with real candidates: on loopback B's own address answers.
        async with square() as (m1, m2, a, b):
            for n in (a, b):
                del n.traversal.candidates  # the real ones again
            peer = await a.connect(b.id, timeout=8.0)
            assert peer.path == "direct-udp", peer.why
            assert peer.why.startswith(
                f"direct-udp to {peer.address[0]}:{peer.address[1]}, an address the peer "
                "listens on, learned through "
            ), peer.why
            assert "abandoned, udp punch won" in peer.why, peer.why
            # A punched path (on loopback nothing needs punching, so its
            # label is set here): where, and through whom the rendezvous ran.
            peer._link.path = "punched-udp"
            why = _why(peer, next(p for p in a.peers if p.id == m2.id), ["relay: abandoned"])
            assert why == (
                f"punched-udp at {peer.address[0]}:{peer.address[1]}, punched after a "
                f"rendezvous through {m2.id.short}; relay: abandoned"
            )

    run(main())


def test_upgrade_retry_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="upgrade_retry"):
        ServiceConfig(upgrade_retry=0.0)
    with pytest.raises(ConfigError, match="upgrade_retry_max"):
        ServiceConfig(upgrade_retry=10.0, upgrade_retry_max=5.0)
    cfg = ServiceConfig(upgrade_retry=1.0, upgrade_retry_max=60.0)
    assert (cfg.upgrade_retry, cfg.upgrade_retry_max) == (1.0, 60.0)


@pytest.mark.parametrize("orphaned", [False, True], ids=["healthy", "orphaned"])
def test_an_introducer_cannot_take_over_a_relayed_connection(orphaned: bool) -> None:
    """Attack: a peer of the target (here M-other, on the wire) introduces
    the requester to it for a relay session of its own and sends datagrams
    on it (junk, and a genuine datagram of the connection replayed), to have
    the target move the connection through it. Nothing it sends moves the
    connection: a healthy one is never moved, an orphaned one only by a
    datagram that is new and authentic under the connection's keys."""
    from crust.nat.rendezvous import Op, RendezvousMessage, encode

    async def main() -> None:
        async with square() as (m1, m2, a, b):
            peer = await a.connect(b.id, timeout=8.0)
            relay = m1 if peer._link.via.id == m1.id else m2  # type: ignore[attr-defined]
            attacker = m2 if relay is m1 else m1
            back = next(p for p in b.peers if p.id == a.id)
            link = back._link
            assert isinstance(link, RelayLink)
            seen: list[bytes] = []
            real = link.receive_datagram

            def record(data: bytes) -> None:
                # The first one is withheld (as a relay could): new and
                # authentic when the attacker sends it.
                seen.append(bytes(data))
                if len(seen) > 1 or orphaned:
                    real(data)

            link.receive_datagram = record  # type: ignore[method-assign]
            await peer.send(b"x" * 100)
            await _wait_for(lambda: bool(seen), 5.0)
            if orphaned:
                # B alone thinks its relay is gone (A is not told, so the
                # real requester does not move the connection meanwhile).
                b.traversal.relaying._unknown = lambda *args: None  # type: ignore[method-assign]
                b.traversal.relaying._orphan(link, "relay closed: test")
            to_b = next(p for p in attacker.peers if p.id == b.id)
            session = os.urandom(8)
            intro = RendezvousMessage(
                Op.INTRODUCE, session, a.id, os.urandom(16), 0, True, (("127.0.0.1", 9),)
            )
            attacker.send_control(to_b, ControlKind.RENDEZVOUS, encode(intro))
            await asyncio.sleep(0.2)
            assert b.traversal.relaying.has_offer(session) or not orphaned
            sent = 0
            # Healthy: the withheld datagram first (authentic, never seen by
            # B). Orphaned: junk and replays only (a fresh authentic datagram
            # there is the requester's move, which only a relay that
            # carried it could hold back: design note 0056).
            for body in [*seen[:1], bytes([0x40]) + os.urandom(60), seen[-1], *seen]:
                msg = relay_msg.encode(relay_msg.RelayOp.DATA, session, body[:1500])
                attacker.send_control(to_b, ControlKind.RELAY, msg)
                sent += 1
            await asyncio.sleep(0.5)
            moved = back._link is not link
            figure(
                f"introducer takeover ({'orphaned' if orphaned else 'healthy'}): "
                f"{sent} forged/replayed datagrams, connection moved: {moved}"
            )
            assert not moved
            assert back.is_connected
            assert b.traversal.relaying.rerouted == 0

    run(main())
