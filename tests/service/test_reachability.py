"""The reachability contract (issue 16 item 1, design note 0053): a node
that joined a contact (``Service.join``) stays reachable by its id
through it however long it waits, and rejoins the contact when it
restarts.

Against 8b6df56 the receiver only connected (the contact did not keep
it): with ``prune_after`` = 1 s it was pruned after ~1 s and a send by id
failed with ``UnknownPeer``; nothing redialled a restarted contact."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from crust import (
    ContactJoined,
    ContactLost,
    Identity,
    LostPeer,
    NewMessage,
    Service,
    ServiceConfig,
    UnknownPeer,
)
from crust.reach import MAX_RETRY

QUIET: dict[str, Any] = {
    "gossip": False,
    "beacon": False,
    "cache_size": 0,
    "hosts": ("127.0.0.1",),
}
PRUNE = 1.0


def _cfg(**kw: Any) -> ServiceConfig:
    return ServiceConfig(**{**QUIET, "identity": Identity.generate(), **kw})


async def _message(svc: Service, sender: Service, timeout: float = 10.0) -> bytes:
    async def wait() -> bytes:
        async for ev in svc.events():
            if isinstance(ev, NewMessage) and ev.peer.id == sender.id:
                return bytes(ev.data)
        raise AssertionError("service closed")

    return await asyncio.wait_for(wait(), timeout)


async def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    give_up = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < give_up, "timed out"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _events(svc: Service) -> AsyncIterator[list[Any]]:
    seen: list[Any] = []
    sub = svc.events(messages=False)  # subscribed now, not when the task runs

    async def collect() -> None:
        async for ev in sub:
            seen.append(ev)

    task = asyncio.create_task(collect())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_joined_peer_outlives_pruning_and_is_reached_by_id() -> None:
    async def main() -> None:
        async with (
            Service(_cfg(prune_after=PRUNE)) as contact,
            Service(_cfg()) as recv,
            Service(_cfg()) as idle,
            Service(_cfg()) as send,
        ):
            via = contact.endpoints[0]
            await recv.join(via)
            # A peer that only connected (and maintains its own side): the
            # contact prunes it, so the test can tell kept from not kept.
            other = await idle.connect(via)
            idle.maintain(other)
            t0 = time.monotonic()
            await asyncio.sleep(3.5 * PRUNE)
            kept = {p.id for p in contact.peers}
            assert recv.id in kept, f"the joined peer was pruned ({kept})"
            assert idle.id not in kept, "an idle peer that did not join was kept"
            await send.join(via)
            peer = await send.connect(recv.id, timeout=10)
            got = asyncio.ensure_future(_message(recv, send))
            await peer.send(b"late hello")
            assert await got == b"late hello"
            span = time.monotonic() - t0
            print(f"\nFIGURE joined peer reachable by id after {span:.1f} s "
                  f"= {span / PRUNE:.1f} prune intervals")  # fmt: skip

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_plain_connection_is_pruned_and_not_found_by_id() -> None:
    """What the contract changes: a receiver that only connects (as `crust
    recv` did) is gone after one prune interval, and a send fails."""

    async def main() -> None:
        async with (
            Service(_cfg(prune_after=PRUNE)) as contact,
            Service(_cfg()) as recv,
            Service(_cfg()) as send,
        ):
            via = contact.endpoints[0]
            recv.maintain(await recv.connect(via))
            await asyncio.sleep(2.5 * PRUNE)
            await send.join(via)
            with pytest.raises(UnknownPeer):
                await send.connect(recv.id, timeout=3)

    asyncio.run(asyncio.wait_for(main(), 60))


def test_the_receiver_rejoins_a_restarted_contact() -> None:
    async def main() -> None:
        ident = Identity.generate()
        async with Service(_cfg()) as recv, _events(recv) as seen:
            async with Service(_cfg(identity=ident)) as contact:
                via = contact.endpoints[0]
                await recv.join(via)
                await _until(lambda: any(isinstance(ev, ContactJoined) for ev in seen))
                assert not next(ev for ev in seen if isinstance(ev, ContactJoined)).rejoined
            t_down = time.monotonic()
            await asyncio.sleep(1.0)  # down for a second, as a restart is
            async with Service(_cfg(identity=ident, port=via[1])) as contact2:
                while not any(isinstance(ev, ContactJoined) and ev.rejoined for ev in seen):
                    assert time.monotonic() - t_down < 10, f"not rejoined: {seen}"
                    await asyncio.sleep(0.05)
                back = time.monotonic() - t_down
                joined = next(ev for ev in seen if isinstance(ev, ContactJoined) and ev.rejoined)
                assert joined.peer.id == ident.peer_id
                lost = [ev for ev in seen if isinstance(ev, ContactLost)]
                assert lost and lost[0].attempts == 0 and lost[0].address == via
                async with Service(_cfg()) as send:
                    await send.join(via)
                    peer = await send.connect(recv.id, timeout=10)
                    got = asyncio.ensure_future(_message(recv, send))
                    await peer.send(b"after the restart")
                    assert await got == b"after the restart"
                assert recv.id in {p.id for p in contact2.peers}
                print(f"\nFIGURE rejoined {back - 1.0:.2f} s after the contact came back "
                      f"({back:.2f} s after it went down)")  # fmt: skip
                assert back - 1.0 < 5.0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_redials_back_off_and_stop_with_the_service() -> None:
    async def main() -> None:
        async with Service(_cfg(connect_timeout=1.0)) as recv, _events(recv) as seen:
            async with Service(_cfg()) as contact:
                await recv.join(contact.endpoints[0])
            # Nobody comes back: the delays grow, up to MAX_RETRY.
            await asyncio.sleep(6.0)
            lost = [ev for ev in seen if isinstance(ev, ContactLost)]
            assert len(lost) >= 3, lost
            delays = [ev.retry_in for ev in lost[1:]]
            assert delays == sorted(delays) or delays[-1] > delays[0]
            assert all(d <= MAX_RETRY * 1.2 for d in delays)
            assert len(lost) < 12, "redials did not back off"
            assert not any(isinstance(ev, LostPeer) and ev.peer.id == recv.id for ev in seen)
        assert all(k.task is None or k.task.done() for k in recv.contacts._kept.values())

    asyncio.run(asyncio.wait_for(main(), 60))


def test_reachable_for_many_prune_and_idle_intervals() -> None:
    """Hours, scaled down: every interval that could end the link is
    short (prune 0.5 s, keepalive 0.3 s, idle timeout 1 s), and the joined
    peer is still there after 30 prune intervals and 15 idle timeouts,
    never lost, and reached by id at the end."""
    timers: dict[str, Any] = {"prune_after": 0.5, "keepalive": 0.3, "idle_timeout": 1.0}

    async def main() -> None:
        async with (
            Service(_cfg(**timers)) as contact,
            Service(_cfg(**timers)) as recv,
            _events(recv) as seen,
        ):
            via = contact.endpoints[0]
            await recv.join(via)
            await asyncio.sleep(15.0)
            assert not [ev for ev in seen if isinstance(ev, (LostPeer, ContactLost))], seen
            assert recv.id in {p.id for p in contact.peers}
            async with Service(_cfg(**timers)) as send:
                await send.join(via)
                peer = await send.connect(recv.id, timeout=10)
                got = asyncio.ensure_future(_message(recv, send))
                await peer.send(b"still here")
                assert await got == b"still here"

    asyncio.run(asyncio.wait_for(main(), 60))


def test_an_impostor_at_the_contacts_address_is_not_joined() -> None:
    """The address is not the contact: another identity listening there
    after the contact went away is not registered with."""

    async def main() -> None:
        async with Service(_cfg(connect_timeout=2.0)) as recv, _events(recv) as seen:
            async with Service(_cfg()) as contact:
                via = contact.endpoints[0]
                await recv.join(via)
            async with Service(_cfg(port=via[1])) as impostor:
                await _until(
                    lambda: any(isinstance(ev, ContactLost) and ev.attempts >= 1 for ev in seen),
                    timeout=10,
                )
                await asyncio.sleep(0.5)
                assert not any(isinstance(ev, ContactJoined) and ev.rejoined for ev in seen)
                assert all(p.id != recv.id or not p.joined for p in impostor.peers)
                failed = next(ev for ev in seen if isinstance(ev, ContactLost) and ev.attempts)
                print(f"\nimpostor refused: {failed.reason}")

    asyncio.run(asyncio.wait_for(main(), 60))


def test_a_contact_that_keeps_dropping_us_is_redialled_less_and_less() -> None:
    """Two receivers, a contact with room for one: each rejoin evicts the
    other (joined peers give way, design note 0053), who rejoins and
    evicts the first... The backoff carries over from one loss to the next
    while the links last less than STABLE, so the churn slows down instead
    of running at the first retry's pace (~4 Hz)."""

    async def main() -> None:
        async with (
            Service(_cfg(max_connections=1)) as contact,
            Service(_cfg()) as a,
            Service(_cfg()) as b,
            _events(a) as seen_a,
            _events(b) as seen_b,
        ):
            via = contact.endpoints[0]
            await a.join(via)
            with contextlib.suppress(ConnectionError):
                await b.join(via)
            await asyncio.sleep(8.0)
            rejoins = sum(
                1
                for ev in seen_a + seen_b
                if isinstance(ev, ContactJoined) and ev.rejoined
            )
            lost = [ev for ev in seen_a + seen_b if isinstance(ev, ContactLost) and not ev.attempts]
            print(f"\nFIGURE two receivers, room for one, 8 s: {rejoins} rejoins, "
                  f"first delays {[round(ev.retry_in, 2) for ev in lost][:8]}")  # fmt: skip
            assert rejoins <= 10, rejoins
            assert len(contact.peers) <= 1

    asyncio.run(asyncio.wait_for(main(), 60))
