"""Retiring a duplicate connection without losing what is in flight on it.

Two nodes that dial each other at once (or reach each other over both TCP
and UDP) end up with two connections to one peer. Both sides keep the same
one (the rule in ``Service.on_established``) and retire the other, but each
decides when its own second handshake completes, and each may have sent
messages on the loser before it switched. Closing the loser at once loses
them: a closing connection discards what still arrives, and the close makes
the sender discard what it has not yet delivered (design note 0025).

So each side, once it no longer sends on the loser:

1. waits until everything it sent there is acknowledged (the peer has it);
2. sends ``RETIRE`` there (a control message): "nothing more from me";
3. closes it gracefully once it has sent its ``RETIRE`` and heard the
   peer's: then nothing is in flight either way.

Until then what arrives on it is delivered as the peer's. A peer that never
says ``RETIRE`` (an older version, or one whose copy is gone) is closed
after :data:`RETIRE_WAIT` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from crust import control
from crust.control import ControlKind
from crust.errors import CrustError
from crust.peer import Link, now_us

if TYPE_CHECKING:
    from crust.handshake import HandshakeResult
    from crust.peer import Peer

__all__ = ["RETIRE_WAIT", "Retirement", "Retirements"]

logger = logging.getLogger(__name__)

#: Seconds a retiring connection waits for the peer's RETIRE before it is
#: closed anyway.
RETIRE_WAIT = 10.0
_RETIRE = control.encode(ControlKind.RETIRE, b"")


class Retirement:
    """One duplicate connection on its way out."""

    __slots__ = ("heard", "link", "peer", "result", "sent", "timer")

    def __init__(self, link: Link, peer: Peer, result: HandshakeResult) -> None:
        self.link = link
        #: Whose messages still arrive on it, and its own handshake (keys).
        self.peer = peer
        self.result = result
        self.sent = False  # our RETIRE is queued
        self.heard = False  # the peer's RETIRE arrived
        self.timer: asyncio.TimerHandle | None = None


class Retirements:
    """The service's retiring connections; ``close(link)`` closes one
    gracefully and hands it back to the service, which forgets it once its
    transport reports it done."""

    def __init__(self, close: Callable[[Link], None]) -> None:
        self._close = close
        self._by_link: dict[int, Retirement] = {}
        # RETIREs heard on a connection we had not retired yet (the peer
        # decided first): at most one per live connection, dropped with it.
        self._heard_early: set[int] = set()

    def __len__(self) -> int:
        return len(self._by_link)

    def get(self, link: Link) -> Retirement | None:
        return self._by_link.get(id(link))

    def begin(self, link: Link, peer: Peer, result: HandshakeResult) -> None:
        """Stop using ``link`` for ``peer``: start the exchange above."""
        if id(link) in self._by_link:
            return
        r = Retirement(link, peer, result)
        r.heard = id(link) in self._heard_early
        self._heard_early.discard(id(link))
        self._by_link[id(link)] = r
        r.timer = asyncio.get_running_loop().call_later(RETIRE_WAIT, self._give_up, r)
        if link.conn.stats()["send_buffered"] == 0:
            self._send(r)
        # else: on_all_acked sends it once the peer has everything.

    def on_all_acked(self, link: Link) -> None:
        r = self._by_link.get(id(link))
        if r is not None and not r.sent:
            self._send(r)

    def retired_by_peer(self, link: Link) -> bool:
        """Whether the peer's RETIRE came on ``link`` before we retired it."""
        return id(link) in self._heard_early

    def on_retire(self, link: Link) -> None:
        """The peer's RETIRE arrived on ``link``."""
        r = self._by_link.get(id(link))
        if r is None:
            self._heard_early.add(id(link))
            return
        r.heard = True
        self._maybe_done(r)

    def forget(self, link: Link) -> Retirement | None:
        """``link`` closed (either side): nothing more to do for it."""
        self._heard_early.discard(id(link))
        r = self._by_link.pop(id(link), None)
        if r is not None and r.timer is not None:
            r.timer.cancel()
        return r

    def close_all(self) -> None:
        for r in list(self._by_link.values()):
            self._finish(r)
        self._heard_early.clear()

    # -- internals ------------------------------------------------------------------

    def _send(self, r: Retirement) -> None:
        r.sent = True
        try:
            r.link.conn.send(_RETIRE, 0, now=now_us(), control=True)
        except CrustError as exc:
            logger.debug("RETIRE not sent (%s): closing the duplicate", exc)
            self._finish(r)
            return
        r.link.kick()
        self._maybe_done(r)

    def _maybe_done(self, r: Retirement) -> None:
        if r.sent and r.heard:
            self._finish(r)

    def _give_up(self, r: Retirement) -> None:
        r.timer = None
        if id(r.link) in self._by_link:
            logger.debug("no RETIRE from %s in %.0f s: closing the duplicate", r.peer, RETIRE_WAIT)
            self._finish(r)

    def _finish(self, r: Retirement) -> None:
        self.forget(r.link)
        self._close(r.link)
