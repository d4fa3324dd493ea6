"""Happy Eyeballs punching (issue 16 item 7, design note 0063): the sans-IO
race (crust.nat.eyeballs) and, on loopback with IPv4 and IPv6, a
dual-stack connect by id that prefers IPv6 and one that falls back to
IPv4 when IPv6 punches go unanswered."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from crust import ConnectError, Identity, Service, ServiceConfig
from crust.nat.eyeballs import HEAD_START_US, IPV4, IPV6, Race, family_key, preferred

T = TypeVar("T")
HS = HEAD_START_US


# -- the sans-IO race -----------------------------------------------------------


def test_preferred_puts_ipv6_first_and_needs_both_sides() -> None:
    assert preferred({IPV4, IPV6}, {IPV6, IPV4}) == [IPV6, IPV4]
    assert preferred({IPV4, IPV6}, {IPV4}) == [IPV4]
    assert preferred({IPV6}, {IPV4}) == []


def test_ipv6_starts_at_once_and_ipv4_after_the_head_start() -> None:
    r = Race([IPV6, IPV4], now=1000)
    assert r.due(1000) == [IPV6]
    assert r.timer() == 1000 + HS
    assert r.due(1000 + HS - 1) == []
    assert r.due(1000 + HS) == [IPV4]
    assert r.timer() is None and r.due(10**9) == []


def test_a_win_before_the_head_start_means_ipv4_never_starts() -> None:
    r = Race([IPV6, IPV4], now=0)
    r.due(0)
    assert r.won(IPV6, 120_000) == []  # nothing else started: nothing to cancel
    assert r.timer() is None and r.due(HS) == []
    assert r.why().endswith("IPv6 started at once, punched in 0.12 s, won; "
                            "IPv4 not tried (IPv6 won first)")  # fmt: skip


def test_ipv4_wins_when_ipv6_stays_silent_and_ipv6_is_cancelled() -> None:
    r = Race([IPV6, IPV4], now=0)
    r.due(0)
    r.due(HS)
    assert r.won(IPV4, HS + 40_000) == [IPV6]
    # The cancelled loser's failure does not count as an error of its own.
    r.failed(IPV6, HS + 41_000, "IPv4 won the race")
    assert r.errors == {} and not r.lost
    assert "IPv6 started at once, abandoned; IPv4 started after 250 ms, punched in 0.04 s, won" in (
        r.why()
    )
    # A late success of the loser is dropped, not a second winner.
    assert r.won(IPV6, HS + 50_000) == [IPV6] and r.winner == IPV4


def test_a_failed_ipv6_starts_ipv4_without_waiting() -> None:
    r = Race([IPV6, IPV4], now=0)
    r.due(0)
    r.failed(IPV6, 30_000, "unreachable")
    assert r.timer() == 30_000 and r.due(30_000) == [IPV4]
    r.failed(IPV4, 3_000_000, "no authenticated punch")
    assert r.lost and r.winner is None
    assert "IPv6 started at once, failed: unreachable" in r.why()
    assert "IPv4 started after 30 ms, failed: no authenticated punch" in r.why()


def test_one_family_is_a_race_of_one() -> None:
    r = Race([IPV4], now=0)
    assert r.due(0) == [IPV4] and r.timer() is None
    r.failed(IPV4, 1, "x")
    assert r.lost


def test_race_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        Race([], now=0)
    with pytest.raises(ValueError):
        Race([IPV6], now=0, head_start_us=-1)


def test_each_family_has_its_own_punch_key() -> None:
    key = bytes(range(32))
    assert family_key(key, IPV4) == key  # IPv4 as before the race existed
    k6 = family_key(key, IPV6)
    assert len(k6) == 32 and k6 != key and family_key(key, IPV6) == k6


# -- on loopback, both families -------------------------------------------------

QUIET = {k: False for k in ("gossip", "beacon") if k in ServiceConfig.__dataclass_fields__}


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    async def main() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


def _cfg(**kw: Any) -> ServiceConfig:
    return ServiceConfig(
        identity=Identity.generate(), backup_port=False, hosts=("127.0.0.1", "::1"),
        cache_size=0, tcp=False, relay="never", **QUIET, **kw,
    )  # fmt: skip


async def _leftovers(*svcs: Service) -> list[str]:
    """Punch sessions and races still alive a moment after the connect
    (the losers must be gone at once; winners linger 3 rounds)."""
    await asyncio.sleep(0.5)
    return [f"{s.id.short}: {k}" for s in svcs for k in [*s.traversal._jobs, *s.traversal._races]]


def test_dual_stack_connect_by_id_prefers_ipv6() -> None:
    async def main() -> None:
        async with Service(_cfg()) as m, Service(_cfg()) as a, Service(_cfg()) as b:
            for n in (a, b):
                n.maintain(await n.connect(("127.0.0.1", m.endpoints[0][1])))
            peer = await a.connect(b.id)
            assert peer.address[0] == "::1", peer.why
            assert "IPv6 started at once, punched in" in peer.why, peer.why
            assert "IPv4 not tried" in peer.why, peer.why
            assert await _leftovers(a, b) == []

    run(main())


def test_dual_stack_falls_back_to_ipv4_and_cancels_ipv6() -> None:
    async def main() -> None:
        async with Service(_cfg()) as m, Service(_cfg()) as a, Service(_cfg()) as b:
            for n in (a, b):
                n.maintain(await n.connect(("127.0.0.1", m.endpoints[0][1])))
            # B never hears A's IPv6 punches (as if a firewall dropped them):
            # A's IPv6 session can never see its punches echoed.
            deaf = b.traversal.on_punch

            def on_punch(listener: Any, data: bytes, addr: Any, now: int) -> None:
                if ":" not in addr[0]:
                    deaf(listener, data, addr, now)

            b.traversal.on_punch = on_punch  # type: ignore[method-assign]
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            peer = await a.connect(b.id)
            took = loop.time() - t0
            assert peer.address[0] == "127.0.0.1", peer.why
            assert "IPv6 started at once, abandoned" in peer.why, peer.why
            assert "IPv4 started after 2" in peer.why, peer.why
            assert HS / 1e6 <= took < 2.0, took
            # A cancelled its IPv6 session; B stopped punching on IPv6 once
            # A's handshake came in over IPv4.
            assert await _leftovers(a, b) == []

    run(main())


def test_a_lost_race_says_what_each_family_ran_into() -> None:
    """The target hears no punches at all (and there is no relay, no TCP):
    connect fails with both families' reasons, and nothing is left."""

    async def main() -> None:
        async with Service(_cfg()) as m, Service(_cfg()) as a, Service(_cfg()) as b:
            for n in (a, b):
                n.maintain(await n.connect(("127.0.0.1", m.endpoints[0][1])))
            b.traversal.on_punch = lambda *_: None  # type: ignore[method-assign]
            with pytest.raises(ConnectError) as err:
                await a.connect(b.id)
            why = str(err.value)
            assert "IPv6 started at once, failed: no authenticated punch" in why, why
            assert "IPv4 started after 2" in why, why  # 250 ms and a little
            assert why.count("failed: no authenticated punch") == 2, why
            # B's own sessions run out on their timeout (3 s): wait for them.
            await asyncio.sleep(0.5)
            assert not a.traversal._jobs and not a.traversal._races

    run(main())
