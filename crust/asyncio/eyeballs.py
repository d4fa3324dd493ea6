"""Runs a Happy Eyeballs punch race (crust.nat.eyeballs.Race): one punch
session per address family of one rendezvous, IPv6 first, IPv4 after the
head start; the first success wins and the others are cancelled at once,
so no losing session keeps sending and no second connection is dialled
(the requester dials the handshake over the winner only).

Kept apart from crust.asyncio.traversal, which owns the punch sessions
(``start`` makes one on a family's listener, ``stop`` cancels one and lets
it end); this module only decides and records. Design note 0063.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from crust.nat.eyeballs import HEAD_START_US, Race, family_name
from crust.peer import now_us

__all__ = ["PunchRace"]

logger = logging.getLogger(__name__)


class _Job(Protocol):
    """A punch session as the race sees it (crust.asyncio.traversal's
    ``_PunchJob``): named by what is used, so this module need not import
    the traversal that imports it."""

    @property
    def done(self) -> asyncio.Future[Any]: ...


_PunchJob = TypeVar("_PunchJob", bound=_Job)


class PunchRace(Generic[_PunchJob]):
    """The punch sessions of one rendezvous, raced across families.

    ``done`` resolves to the winning session's job, or fails with the
    reasons when every family failed. ``cancel`` ends whatever still runs
    (and the pending start of a later family)."""

    def __init__(
        self,
        families: Sequence[int],
        start: Callable[[int], _PunchJob | None],
        stop: Callable[[_PunchJob, str], None],
        head_start_us: int = HEAD_START_US,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.race = Race(families, now_us(), head_start_us)
        self.jobs: dict[int, _PunchJob] = {}
        self.done: asyncio.Future[_PunchJob] = self._loop.create_future()
        # Nobody may await a race that failed under a relayed connection.
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._start = start
        self._stop = stop
        self._timer: asyncio.TimerHandle | None = None
        self._step()

    def why(self) -> str:
        return self.race.why()

    def cancel(self, why: str) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for job in self.jobs.values():
            self._stop(job, why)
        if not self.done.done():
            self.done.set_exception(ConnectionError(why))

    def _step(self) -> None:
        self._timer = None
        if self.done.done():
            return
        now = now_us()
        for fam in self.race.due(now):
            job = self._start(fam)
            if job is None:
                self.race.failed(fam, now, "no punch session (no listener or over budget)")
                continue
            logger.debug("punch race: %s started", family_name(fam))
            self.jobs[fam] = job
            job.done.add_done_callback(functools.partial(self._on_job, fam))
        if self.race.lost:
            self.done.set_exception(ConnectionError(self.race.why()))
            return
        at = self.race.timer()
        if at is not None:
            if at <= now_us():
                # A family failed while starting: start the next one now.
                self._loop.call_soon(self._step)
                return
            self._timer = self._loop.call_later((at - now_us()) / 1e6, self._step)

    def _on_job(self, family: int, fut: asyncio.Future[Any]) -> None:
        now = now_us()
        job = self.jobs[family]
        if fut.cancelled() or fut.exception() is not None:
            why = "cancelled" if fut.cancelled() else str(fut.exception())
            self.race.failed(family, now, why)
            if self.done.done():
                return
            if self.race.lost:
                self.done.set_exception(ConnectionError(self.race.why()))
                return
            # The next family may be due now (nothing else runs).
            if self._timer is not None:
                self._timer.cancel()
            self._step()
            return
        for loser in self.race.won(family, now):
            self._stop(self.jobs[loser], f"{family_name(family)} won the race")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.done.done() and self.race.winner == family:
            logger.debug("punch race: %s", self.race.why())
            self.done.set_result(job)
