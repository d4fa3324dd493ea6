"""Pruning idle connections with one timer for all of them.

A connection neither maintained (``Service.maintain``) nor used for
``prune_after`` seconds is closed. Checking every peer once a second cost
time in proportion to the peers (issue 22: 3,000 idle connections took
4.6 % of a core with the decrypt-failure scan). Here each peer has one
entry in a heap keyed by the time it becomes prunable; one asyncio timer
is armed for the earliest. When an entry comes due the peer is checked
once: maintained or joined through us (``Peer.joined``, design note
0053), it is never prunable again and leaves the heap; used since (its
``last_used`` moved), the entry goes back with its new deadline;
otherwise it is pruned. So an idle unmaintained peer costs one heap
operation per ``prune_after``, a maintained one nothing after its first,
and a busy one no more (use only writes ``last_used``), whatever the
number of peers.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crust.peer import Peer

__all__ = ["Pruner"]


# Forgotten heap slots beyond twice the live ones (and this many) make the
# heap be rebuilt: linear work, paid for by the forgets that made it due.
_REBUILD_MIN = 64


class _Entry:
    """A peer's place in the heap; ``peer`` is None once it is forgotten."""

    __slots__ = ("peer",)

    def __init__(self, peer: Peer) -> None:
        self.peer: Peer | None = peer


class Pruner:
    """Calls ``prune(peer)`` for peers idle and unmaintained for ``after``
    seconds."""

    def __init__(self, after: float, prune: Callable[[Peer], None]) -> None:
        self._after = after
        self._prune = prune
        self._heap: list[tuple[float, int, _Entry]] = []
        self._entries: dict[int, _Entry] = {}
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def watch(self, peer: Peer) -> None:
        """Start watching a new peer."""
        entry = _Entry(peer)
        self._entries[id(peer)] = entry
        self._push(peer.last_used + self._after, entry)

    def forget(self, peer: Peer) -> None:
        """``peer`` is gone, or maintained: drop its entry (the peer itself
        is released now; its heap slot goes when it comes due, or when
        forgotten slots are the heap's majority: then the heap is rebuilt
        without them, so that 100,000 peers maintained at once do not each
        cost a pop later, in a heap that large)."""
        entry = self._entries.pop(id(peer), None)
        if entry is not None:
            entry.peer = None
            if len(self._heap) > 2 * len(self._entries) + _REBUILD_MIN:
                self._heap = [slot for slot in self._heap if slot[2].peer is not None]
                heapq.heapify(self._heap)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in self._entries.values():
            entry.peer = None
        self._entries.clear()
        self._heap.clear()

    def _push(self, deadline: float, entry: _Entry) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), entry))
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        # Slack of an eighth of the period, at most a second: the entries
        # due within it share one wakeup (pruning after a minute needs no
        # better).
        grain = min(1.0, self._after / 8)
        deadline = math.ceil(deadline / grain) * grain
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._due)
        self._timer_at = deadline

    def _due(self) -> None:
        self._timer = None
        now = time.monotonic()
        # self._heap, not a local: forget() may rebuild it.
        while self._heap and self._heap[0][0] <= now:
            _, _, entry = heapq.heappop(self._heap)
            peer = entry.peer
            if peer is None:
                continue
            if not peer.is_connected:
                self.forget(peer)
                continue
            due = peer.last_used + self._after
            if peer.maintained or peer.joined:
                # Never prunable again (neither flag is ever cleared): a
                # maintained peer, or one that joined through us and keeps
                # its link alive (a dead link ends by idle timeout). So it
                # leaves the heap: 100,000 idle maintained peers cost the
                # pruner nothing.
                self.forget(peer)
            elif due > now:
                heapq.heappush(self._heap, (due, next(self._seq), entry))
            else:
                self.forget(peer)
                self._prune(peer)
        if self._heap:
            self._arm(self._heap[0][0])
