"""Event fan-out: every ``Service.events()`` call is its own subscription.

A subscription sees every event published from the moment it was made, in
order, until the service closes; then it ends (``StopAsyncIteration``)
once it has yielded what it still holds. Reading one is cancellation-safe:
a cancelled ``anext()`` takes nothing off it. An event no subscription has
yielded is not lost: events published while nobody subscribed, and those a
subscription still held when it was closed without yielding them, wait for
the next subscription (the newest ``backlog`` of them).

Messages are special (docs/design/0028-receive-back-pressure.md): a
received application message stays charged to its connection's
flow-control window until the application has it, so what a node holds
for a slow application is bounded by the peers' receive budgets and
senders wait instead. A message published to the subscriptions that take
messages (``events(messages=True)``, the default) is credited back once
each of them has yielded it or was closed; one that none of them yielded
goes back to its peer, for the next reader. A subscription that stops
reading therefore holds the peers' windows and they stop sending:
back-pressure, not loss. Other events are small but unbounded in number
over a long run, so a subscription holds at most ``backlog`` of them
unread; past that it is ended, and raises :class:`EventsOverflow` once it
has yielded what it holds: loud, never a silent gap.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import weakref
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from crust.errors import EventsOverflow

if TYPE_CHECKING:
    from crust.events import Event, NewMessage
    from crust.peer import Link, Peer

__all__ = ["EventHub", "Inbound", "Subscription"]


class Published:
    """One event on its way to the subscriptions: held by ``refs`` of them;
    ``seq`` is its place in the order of everything published."""

    __slots__ = ("event", "refs", "seq", "taken")

    def __init__(self, event: Event, seq: int) -> None:
        self.event: Event = event
        self.seq = seq
        self.refs = 1
        self.taken = False  # some subscription yielded it

    def done(self) -> None:
        """One holder handed the event to the application."""
        self.taken = True
        self.dropped()

    def dropped(self) -> None:
        """One holder let go of it (taken, or closed with it unread)."""
        self.refs -= 1
        if not self.refs:
            self._released()

    def _released(self) -> None:
        # Overridden by Inbound; plain events need nothing when taken, and
        # one nobody yielded is given back by the closing subscription.
        pass


class Inbound(Published):
    """One received application message on its way to the application. It
    stays charged to ``link``'s flow-control window (``charge`` bytes)
    until a reader has it; one that no holder yielded goes back to its
    peer to wait for the next reader."""

    __slots__ = ("charge", "link", "peer")
    event: NewMessage

    def __init__(self, event: NewMessage, charge: int, link: Link, peer: Peer, seq: int) -> None:
        # (Published.__init__ inlined: this runs once per message.)
        self.event = event
        self.seq = seq
        self.refs = 1
        self.taken = False
        self.charge = charge
        self.link = link
        self.peer = peer

    def _released(self) -> None:
        if self.taken:
            self.peer._credit(self)
        else:
            self.refs = 1
            self.peer._give_back(self)


class Subscription:
    """An async iterator over the service's events (``Service.events()``).

    ``async for ev in svc.events(): ...`` or ``await anext(sub)``; use it as
    an async context manager, or call :meth:`close`, to stop early (a
    subscription that is simply dropped is closed when it is collected).
    """

    def __init__(self, hub: EventHub, *, messages: bool, backlog: int) -> None:
        self._hub = hub
        #: Whether application messages (``NewMessage``) come here.
        self.messages = messages
        self._backlog = backlog
        self._queue: deque[Published] = deque()
        self._others = 0  # events other than messages queued
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False  # nothing more will be queued
        self._lost = False  # ended by an overflow (EventsOverflow at the end)

    def __repr__(self) -> str:
        state = "ended" if self._ended else "live"
        return f"<Subscription {state}, {len(self._queue)} queued>"

    # -- what the hub calls --------------------------------------------------

    def _push(self, item: Published, *, in_order: bool = False) -> bool:
        """Queue ``item`` (at its place by ``seq`` when ``in_order``: it was
        given back by another subscription). False if not queued."""
        if self._ended:
            return False
        if not isinstance(item, Inbound):
            if self._others >= self._backlog:
                self._lost = True  # what it holds is still yielded, then the error
                self._end()
                return False
            self._others += 1
        q = self._queue
        if in_order and q and q[-1].seq > item.seq:
            q.insert(bisect.bisect(q, item.seq, key=_seq), item)
        else:
            q.append(item)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        return True

    def _push_message(self, rec: Inbound) -> None:
        """:meth:`_push` for a message on a live subscription (once per
        message: kept short). In order by ``seq``: it may have been given
        back by another subscription."""
        q = self._queue
        if q and q[-1].seq > rec.seq:
            q.insert(bisect.bisect(q, rec.seq, key=_seq), rec)
        else:
            q.append(rec)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._hub._forget(self)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the iterator ----------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self._ended:
                if self._lost:
                    raise EventsOverflow(
                        f"this subscription fell {self._backlog} events behind and was ended "
                        "(the events after that were not delivered to it); read events "
                        "faster, or raise ServiceConfig.event_backlog"
                    )
                raise StopAsyncIteration
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            # Held by the hub while a reader waits: otherwise a task that
            # only waits here (and that nobody else references) would be
            # a cycle the garbage collector destroys while still pending.
            self._hub._waiting.add(self)
            try:
                await waiter
            finally:
                self._waiter = None
                self._hub._waiting.discard(self)
        return self._take()

    def get_nowait(self) -> Event | None:
        """The next queued event, or None when none is queued now."""
        return self._take() if self._queue else None

    def _take(self) -> Event:
        item = self._queue.popleft()
        if type(item) is Inbound:
            # Published.done and Inbound._released inlined: once per message.
            item.taken = True
            item.refs -= 1
            if not item.refs:
                item.peer._credit(item)
            return item.event
        self._others -= 1
        item.done()
        return item.event

    def close(self) -> None:
        """Stop. Nothing more is queued; what is queued unread waits for the
        next subscription (or, for messages, the next reader) unless another
        subscription yields it."""
        self._end()
        self._lost = False
        queue, self._queue = self._queue, deque()
        self._others = 0
        # Newest first: a message given back goes to the front of its
        # peer's line, before the ones given back after it.
        for item in reversed(queue):
            item.dropped()
            if not item.refs and not item.taken:
                self._hub._give_back(item)

    async def aclose(self) -> None:
        """:meth:`close`, for ``contextlib.aclosing`` and friends."""
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A dropped subscription must not keep holding the peers' windows,
        # nor the events it never yielded.
        if not self._ended or self._queue:
            self.close()


def _seq(item: Published) -> int:
    return item.seq


class EventHub:
    """The service's subscriptions, and what is published to them."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        # Weak: a subscription the application dropped without closing it
        # is collected (and closes itself) rather than held here forever.
        self._subs: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._waiting: set[Subscription] = set()  # a reader awaits each
        # The ones taking messages, for the per-message path (iterating a
        # WeakSet per message is slow); rebuilt when they change.
        self._msg_refs: tuple[weakref.ref[Subscription], ...] = ()
        self._message_subs = 0
        self._closed = False
        #: Numbers in publication order (``next(hub.seq)``); messages are
        #: numbered on arrival, to be merged with the events in order.
        self.seq = itertools.count(1)
        # Events no subscription yielded yet, for the next one (the newest
        # `backlog`): published while nobody subscribed, or given back.
        self._unseen: deque[Published] = deque(maxlen=backlog)

    @property
    def wants_messages(self) -> bool:
        """Whether some live subscription takes application messages."""
        return self._message_subs > 0

    def subscribe(self, *, messages: bool, waiting: Iterable[Inbound] = ()) -> Subscription:
        """A new subscription. It starts with the events nobody yielded yet
        and, when it takes messages, ``waiting``: messages no reader took
        (the service passes them when no other subscription takes them)."""
        sub = Subscription(self, messages=messages, backlog=self.backlog)
        if self._closed:
            sub._ended = True
            return sub
        first: list[Published] = list(self._unseen)
        self._unseen.clear()
        if messages:
            first.extend(waiting)
            first.sort(key=_seq)
        self._subs.add(sub)
        if messages:
            self._message_subs += 1
            self._msg_refs = (*self._msg_refs, weakref.ref(sub))
        for item in first:
            item.refs = 1  # this subscription's alone
            sub._push(item)
        return sub

    def publish(self, ev: Event) -> None:
        """Queue ``ev`` on every subscription (or keep it for the next)."""
        item = Published(ev, next(self.seq))
        subs = list(self._subs)
        if not subs:
            self._unseen.append(item)
            return
        item.refs = len(subs)
        for sub in subs:
            if not sub._push(item):
                item.refs -= 1
        if not item.refs:
            self._unseen.append(item)  # every subscription had just ended

    def publish_message(self, rec: Inbound) -> bool:
        """Queue an application message on every subscription that takes
        messages (in order, if it was given back); False if none does
        (the caller keeps it)."""
        refs = self._msg_refs
        if len(refs) == 1:  # the common case, kept cheap
            sub = refs[0]()
            if sub is None or sub._ended:
                return False
            rec.refs = 1
            sub._push_message(rec)
            return True
        subs = [s for r in refs if (s := r()) is not None and not s._ended]
        if not subs:
            return False
        rec.refs = len(subs)
        for sub in subs:
            sub._push_message(rec)
        return True

    def _give_back(self, item: Published) -> None:
        """An event a closed subscription held and no subscription yielded:
        to the live ones in its place, or kept for the next."""
        subs = list(self._subs)
        if not subs:
            self._unseen.append(item)
            if len(self._unseen) > 1 and self._unseen[-2].seq > item.seq:
                ordered = sorted(self._unseen, key=_seq)
                self._unseen.clear()
                self._unseen.extend(ordered)
            return
        item.refs = 0
        for sub in subs:
            if sub._push(item, in_order=True):
                item.refs += 1

    def _forget(self, sub: Subscription) -> None:
        # Called once per subscription (from its _end); it may already be
        # gone from the weak set when it is being collected.
        self._subs.discard(sub)
        if sub.messages:
            self._message_subs -= 1
            self._msg_refs = tuple(r for r in self._msg_refs if r() not in (None, sub))

    def close(self) -> None:
        """End every subscription (each still yields what it holds)."""
        self._closed = True
        for sub in list(self._subs):
            sub._end()
