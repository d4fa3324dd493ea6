"""crust.pruning: idle unmaintained peers are pruned by one timer, used or
maintained ones are kept, forgotten ones are released."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from typing import Any

from crust.pruning import Pruner


class FakePeer:
    def __init__(self) -> None:
        self.last_used = time.monotonic()
        self.maintained = False
        self.joined = False
        self.is_connected = True


def test_prunes_idle_keeps_used_and_maintained() -> None:
    async def main() -> None:
        pruned: list[Any] = []
        pruner = Pruner(0.1, pruned.append)
        idle, used, kept = FakePeer(), FakePeer(), FakePeer()
        kept.maintained = True
        for p in (idle, used, kept):
            pruner.watch(p)  # type: ignore[arg-type]
        for _ in range(6):
            await asyncio.sleep(0.05)
            used.last_used = time.monotonic()
        assert pruned == [idle]
        # Maintained is for good (nothing clears it): the kept peer left
        # the heap when it came due, so it costs the pruner nothing more.
        assert len(pruner) == 1
        used_since = time.monotonic()
        await asyncio.sleep(0.35)  # used idles now: pruned; kept never
        assert pruned[0] is idle and list(map(id, pruned[1:])) == [id(used)]
        assert time.monotonic() - used_since >= 0.1
        assert len(pruner) == 0
        pruner.close()

    asyncio.run(main())


def test_a_forgotten_peer_is_released_at_once() -> None:
    async def main() -> None:
        pruner = Pruner(60.0, lambda p: None)
        peer = FakePeer()
        ref = weakref.ref(peer)
        pruner.watch(peer)  # type: ignore[arg-type]
        pruner.forget(peer)  # type: ignore[arg-type]
        del peer
        gc.collect()
        assert ref() is None and len(pruner) == 0
        pruner.close()

    asyncio.run(main())


def test_forgotten_slots_do_not_outnumber_live_ones() -> None:
    """Maintaining 10,000 peers at once (a node that keeps every peer it
    is handed) leaves no heap of dead slots to pop one by one later; the
    peers still watched are pruned as before."""

    async def main() -> None:
        pruned: list[Any] = []
        pruner = Pruner(0.2, pruned.append)
        peers = [FakePeer() for _ in range(10_000)]
        for p in peers:
            pruner.watch(p)  # type: ignore[arg-type]
        for p in peers[10:]:
            pruner.forget(p)  # type: ignore[arg-type]
        assert len(pruner) == 10
        # _REBUILD_MIN (64) and twice the live slots bound the dead ones.
        assert len(pruner._heap) <= 3 * len(pruner) + 64
        await asyncio.sleep(0.5)
        assert sorted(map(id, pruned)) == sorted(map(id, peers[:10]))
        pruner.close()

    asyncio.run(main())
