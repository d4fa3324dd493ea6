"""Bootstrap, the bootstrap cache and contact gossip on real services over
loopback (the LAN beacon needs broadcast: tests/netlab/test_discovery_lab.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from crust import (
    BootstrapAccept,
    BootstrapConnect,
    BootstrapFailed,
    Event,
    Identity,
    NewPeer,
    Service,
    ServiceConfig,
)
from crust.control import ControlKind
from crust.discovery.cache import BootstrapCache, CacheEntry
from crust.discovery.gossip import encode_gossip
from crust.identity import PeerId

NET = "discovery-test"
E = TypeVar("E")


def _cfg(tmp: Path, name: str, **kw: Any) -> ServiceConfig:
    base: dict[str, Any] = {
        "network": NET,
        "identity": Identity.generate(),
        "backup_port": False,
        "cache_path": tmp / f"{name}.json",
        "bootstrap_timeout": 3.0,
        "bootstrap_attempt_timeout": 1.0,
    }
    base.update(kw)
    return ServiceConfig(**base)


class Recorder:
    """Collects a service's events in the background."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.events: list[tuple[float, Event]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for ev in self.svc.events():
            self.events.append((time.monotonic(), ev))
            self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [ev for _, ev in self.events if isinstance(ev, kind)]

    async def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"condition not met in {timeout} s: {self.events}")
            self._changed.clear()
            # Woken by events; polled too, for conditions that change
            # without one (counters, connection state).
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.05))
            except asyncio.TimeoutError:
                pass

    def connected_to(self, pid: PeerId) -> bool:
        return any(p.id == pid for p in self.svc.peers)


@asynccontextmanager
async def _node(stack: AsyncExitStack, cfg: ServiceConfig) -> AsyncIterator[Recorder]:
    svc = await stack.enter_async_context(Service(cfg))
    rec = Recorder(svc)
    yield rec


def _addr(svc: Service) -> str:
    host, port = svc.endpoints[0]
    return f"{host}:{port}"


async def _joined(st: AsyncExitStack, tmp: Path, name: str, via: Recorder, **kw: Any) -> Recorder:
    """A node whose one contact is ``via``, once it is connected to it."""
    node = await st.enter_async_context(
        _node(st, _cfg(tmp, name, contacts=(_addr(via.svc),), **kw))
    )
    await node.wait(lambda: node.connected_to(via.svc.id))
    return node


def test_contact_then_gossip_reaches_a_peer_two_hops_away(tmp_path: Path) -> None:
    """Chain b - c - d; x knows only b: it learns c from b's gossip and d
    from c's, and connects to both (learned ones enter its cache only once
    connected)."""

    async def main() -> float:
        async with AsyncExitStack() as st:
            # bootstrap_peers=1 keeps b, c and d from dialling what they
            # learn from each other: the chain stays a chain.
            one = {"bootstrap_peers": 1}
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b", **one)))
            c = await _joined(st, tmp_path, "c", b, **one)
            d = await _joined(st, tmp_path, "d", c, **one)
            await asyncio.sleep(0.3)  # gossip settles
            assert not b.connected_to(d.svc.id)
            t0 = time.monotonic()
            x = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "x", contacts=(_addr(b.svc),)))
            )
            await x.wait(lambda: len(x.of(BootstrapConnect)) == 3, timeout=10.0)
            reach = time.monotonic() - t0
            sources = {ev.peer.id: ev.source for ev in x.of(BootstrapConnect)}
            assert sources[b.svc.id] == "contact"
            assert sources[c.svc.id] == "gossip"
            assert sources[d.svc.id] == "gossip"
            assert x.of(BootstrapFailed) == []
            assert any(ev.peer.id == x.svc.id for ev in d.of(BootstrapAccept))
            disc = json.loads(json.dumps(x.svc.stats()["discovery"]))
            assert disc["beacon"] is None  # loopback only: nothing to beacon on
            assert disc["bootstrap"]["connected"] == 3
            assert disc["bootstrap"]["first_success"] < reach
            assert disc["gossip"]["accepted"] >= 2
            await x.svc.close()
            cached = {e.peer_id for e in BootstrapCache(tmp_path / "x.json").load()}
            assert cached == {b.svc.id, c.svc.id, d.svc.id}
            return reach

    reach = asyncio.run(main())
    print(f"gossip reach (two hops past the contact): {reach * 1000:.0f} ms")


def test_restart_reconnects_from_the_cache_alone(tmp_path: Path) -> None:
    async def main() -> float:
        async with AsyncExitStack() as st:
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b")))
            c = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "c", contacts=(_addr(b.svc),)))
            )
            await c.wait(lambda: c.connected_to(b.svc.id))
            ident = Identity.generate()
            async with Service(_cfg(tmp_path, "a", identity=ident, contacts=(_addr(b.svc),))) as a:
                ra = Recorder(a)
                await ra.wait(lambda: ra.connected_to(b.svc.id) and ra.connected_to(c.svc.id))
            entries = BootstrapCache(tmp_path / "a.json").load()
            assert {e.peer_id for e in entries} == {b.svc.id, c.svc.id}
            assert all(e.endpoints and e.transport in ("tcp", "udp") for e in entries)
            t0 = time.monotonic()
            async with Service(_cfg(tmp_path, "a", identity=ident, beacon=False)) as a2:
                ra2 = Recorder(a2)
                await ra2.wait(lambda: len(ra2.of(BootstrapConnect)) == 2)
                took = time.monotonic() - t0
                assert {ev.source for ev in ra2.of(BootstrapConnect)} == {"cache"}
            return took

    took = asyncio.run(main())
    print(f"bootstrap from cache (2 peers): {took * 1000:.0f} ms")


def test_nothing_answers_gives_bootstrap_failed(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncExitStack() as st:
            # A port nobody listens on (bound, then closed).
            probe = await st.enter_async_context(_node(st, _cfg(tmp_path, "p")))
            dead = _addr(probe.svc)
            await probe.svc.close()
            t0 = time.monotonic()
            a = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "a", contacts=(dead,), bootstrap_timeout=5.0))
            )
            await a.wait(lambda: bool(a.of(BootstrapFailed)), timeout=8.0)
            [failed] = a.of(BootstrapFailed)
            assert failed.tried == 1 and dead in failed.reason
            # Every candidate failed and no beacon runs: no need to wait 5 s.
            assert time.monotonic() - t0 < 4.0

    asyncio.run(main())


def test_accept_bootstrap_off_refuses_and_disconnects(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncExitStack() as st:
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b", accept_bootstrap=False)))
            a = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "a", contacts=(_addr(b.svc),)))
            )
            await a.wait(lambda: bool(a.of(BootstrapFailed)), timeout=8.0)
            assert "refused" in a.of(BootstrapFailed)[0].reason
            assert a.of(BootstrapConnect) == [] and b.of(BootstrapAccept) == []
            await b.wait(lambda: not b.svc.peers)
            # An ordinary connect is still welcome.
            peer = await a.svc.connect(b.svc.endpoints[0])
            assert peer.id == b.svc.id

    asyncio.run(main())


def test_blacklisted_candidates_are_skipped(tmp_path: Path) -> None:
    """a learns c from b's gossip, but c's id is blacklisted: never dialled;
    a contact in a blacklisted network is not dialled either."""

    async def main() -> None:
        async with AsyncExitStack() as st:
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b")))
            c = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "c", contacts=(_addr(b.svc),)))
            )
            await c.wait(lambda: c.connected_to(b.svc.id))
            a = await st.enter_async_context(
                _node(
                    st,
                    _cfg(
                        tmp_path,
                        "a",
                        contacts=(_addr(b.svc), "127.0.0.2:9"),
                        blacklist=(str(c.svc.id), "127.0.0.2/32"),
                    ),
                )
            )
            await a.wait(lambda: bool(a.of(BootstrapConnect)))
            await asyncio.sleep(0.5)  # b's gossip, naming c, has arrived
            assert a.svc.discovery.bootstrapper.tried == 1
            skipped = a.svc.discovery.bootstrapper.skipped
            assert skipped.get("blacklisted", 0) >= 1
            assert skipped.get("blacklisted address") == 1
            assert not a.connected_to(c.svc.id)
            assert [ev.peer.id for ev in a.of(BootstrapConnect)] == [b.svc.id]

    asyncio.run(main())


def test_learned_contacts_enter_the_cache_only_after_connecting(tmp_path: Path) -> None:
    """b gossips (validly signed) a contact that does not answer: x tries
    it, fails, and never caches it."""

    async def main() -> None:
        async with AsyncExitStack() as st:
            b_ident = Identity.generate()
            b = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "b", identity=b_ident, gossip=False))
            )
            x = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "x", contacts=(_addr(b.svc),)))
            )
            await x.wait(lambda: bool(x.of(BootstrapConnect)))
            ghost = Identity.generate().peer_id
            await b.wait(lambda: bool(b.svc.peers))
            payload = encode_gossip(
                b_ident, NET, time.time_ns(), list(b.svc.endpoints), [(ghost, [("127.0.0.1", 9)])]
            )
            b.svc.send_control(b.svc.peers[0], ControlKind.GOSSIP, payload)
            await x.wait(lambda: x.svc.discovery.bootstrapper.tried >= 2)
            await x.wait(lambda: not x.svc.discovery.bootstrapper._inflight)
            await x.svc.close()
            cached = {e.peer_id for e in BootstrapCache(tmp_path / "x.json").load()}
            assert cached == {b.svc.id}

    asyncio.run(main())


def test_incoming_peer_is_cached_with_its_listening_endpoint(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncExitStack() as st:
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b")))
            a = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "a", contacts=(_addr(b.svc),)))
            )
            await b.wait(lambda: bool(b.of(BootstrapAccept)))
            await b.wait(lambda: bool(b.of(NewPeer)))
            await asyncio.sleep(0.2)  # a's gossip (its listening endpoints)
            await b.svc.close()
            [entry] = BootstrapCache(tmp_path / "b.json").load()
            assert entry.peer_id == a.svc.id
            assert a.svc.endpoints[0] in entry.endpoints
            assert "observed" in entry.nat

    asyncio.run(main())


def test_periodic_gossip_spreads_later_connections(tmp_path: Path) -> None:
    """x is connected to b only; e connects to b afterwards. x learns of e
    from b's next gossip round (not from the one sent at connection)."""

    async def main() -> None:
        async with AsyncExitStack() as st:
            fast = {"gossip_interval": 0.3}
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b", **fast)))
            x = await _joined(st, tmp_path, "x", b, **fast)
            e = await _joined(st, tmp_path, "e", b, bootstrap_peers=1)
            learned = lambda: [ev for ev in x.of(BootstrapConnect) if ev.peer.id == e.svc.id]  # noqa: E731
            await x.wait(lambda: bool(learned()), timeout=5.0)
            assert [ev.source for ev in learned()] == ["gossip"]

    asyncio.run(main())


def test_a_new_contact_is_passed_on_at_once_not_at_the_next_round(tmp_path: Path) -> None:
    """b learns where x listens only after e joined (x's gossip comes late,
    as when x and e join b at the same moment): b passes x on to e within
    a second, not at its next gossip round (60 s away here)."""

    async def main() -> None:
        async with AsyncExitStack() as st:
            slow = {"gossip_interval": 60.0}
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b", **slow)))
            # x does not gossip by itself (the test sends its one message)
            # and dials nobody after b.
            quiet = {"gossip": False, "bootstrap_peers": 1}
            x = await _joined(st, tmp_path, "x", b, **quiet)
            e = await _joined(st, tmp_path, "e", b, **slow)
            await asyncio.sleep(0.5)
            assert not e.connected_to(x.svc.id)  # b could not tell e of x yet
            b_at_x = next(p for p in x.svc.peers if p.id == b.svc.id)
            payload = encode_gossip(x.svc.identity, NET, 1, x.svc.endpoints, [])
            x.svc.send_control(b_at_x, ControlKind.GOSSIP, payload)
            t0 = time.monotonic()
            found = lambda: [ev for ev in e.of(BootstrapConnect) if ev.peer.id == x.svc.id]  # noqa: E731
            await e.wait(lambda: bool(found()), timeout=5.0)
            assert time.monotonic() - t0 < 2.0
            assert [ev.source for ev in found()] == ["gossip"]

    asyncio.run(main())


def test_a_stale_cache_does_not_hold_up_the_contacts(tmp_path: Path) -> None:
    """40 cached peers that never answer (UDP ports that swallow
    everything, no TCP listener): the contact is dialled after one attempt
    timeout, not after the 40 attempts (5 rounds of 8 at 1 s each), and
    each dead entry counts a failure in the cache."""
    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(40)]
    try:
        for s in sinks:
            s.bind(("127.0.0.1", 0))
        dead = [Identity.generate().peer_id for _ in sinks]
        path = tmp_path / "a.json"
        BootstrapCache(path).record(
            CacheEntry(pid, (s.getsockname(),), "udp", time.time() - i)
            for i, (pid, s) in enumerate(zip(dead, sinks, strict=True))
        )

        async def main() -> float:
            async with AsyncExitStack() as st:
                b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b")))
                t0 = time.monotonic()
                a = await st.enter_async_context(
                    _node(st, _cfg(tmp_path, "a", contacts=(_addr(b.svc),)))
                )
                await a.wait(lambda: bool(a.of(BootstrapConnect)), timeout=10.0)
                took = time.monotonic() - t0
                assert [ev.source for ev in a.of(BootstrapConnect)] == ["contact"]
            return took

        took = asyncio.run(main())
        assert took < 3.0, took  # 1 s attempt timeout, then the contact
        failures = {e.peer_id: e.failures for e in BootstrapCache(path).load()}
        tried = [pid for pid in dead if failures.get(pid) == 1]
        assert len(tried) >= 8  # at least the first round, counted
        assert all(failures.get(pid, 0) <= 1 for pid in dead)
    finally:
        for s in sinks:
            s.close()


def test_contact_given_by_host_name(tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncExitStack() as st:
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b")))
            port = b.svc.endpoints[0][1]
            a = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "a", contacts=(f"localhost:{port}",)))
            )
            await a.wait(lambda: bool(a.of(BootstrapConnect)))
            assert a.of(BootstrapConnect)[0].peer.id == b.svc.id

    asyncio.run(main())


def test_corrupt_cache_does_not_stop_a_node(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"\x00garbage{")

    async def main() -> None:
        async with AsyncExitStack() as st:
            b = await st.enter_async_context(_node(st, _cfg(tmp_path, "b")))
            a = await st.enter_async_context(
                _node(st, _cfg(tmp_path, "a", contacts=(_addr(b.svc),)))
            )
            await a.wait(lambda: bool(a.of(BootstrapConnect)))
            await a.svc.close()
        assert (tmp_path / "a.json.corrupt").read_bytes() == b"\x00garbage{"
        assert [e.peer_id for e in BootstrapCache(tmp_path / "a.json").load()] == [b.svc.id]

    asyncio.run(main())
