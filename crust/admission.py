"""Who gets in while nobody is authenticated yet: the key a source is
counted under, and the bounds on inbound TCP streams that have not
completed a handshake (issue 15, design note 0041).

A source is its IPv4 address, or the /64 of an IPv6 address: one host
gets a /64 from its provider and can use any address inside it, and it
has as many ports as it likes, so neither the port nor the low 64 bits
may buy anyone a second share.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = ["AcceptLogLimiter", "PreAuthTcp", "source_key"]


def source_key(host: str) -> str:
    """The unit per-source limits count: an IPv4 address, or the /64 of an
    IPv6 one (an IPv4-mapped IPv6 address counts as its IPv4 address).
    ``host`` is numeric, as the socket module gives it. Called for every
    initiation of a flood: no ``ipaddress`` objects (they cost more than
    the mac1 check)."""
    if ":" not in host:
        return host
    try:
        raw = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    except OSError:
        return host
    if raw[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, raw[12:])
    return socket.inet_ntop(socket.AF_INET6, raw[:8] + bytes(8)) + "/64"


_V4_MAPPED = bytes(10) + b"\xff\xff"


class _Closable(Protocol):
    def abort(self) -> None: ...


class PreAuthTcp:
    """Inbound TCP streams that have not completed a handshake: at most
    ``per_source`` per source (further ones are refused at once) and
    ``total`` in all (the oldest is closed to make room, so a flood from
    many addresses delays a legitimate handshake by at most its own round
    trip instead of locking it out). ``counts`` feeds ``stats()["tcp"]``."""

    def __init__(self, per_source: int, total: int) -> None:
        self.per_source = per_source
        self.total = total
        self._links: OrderedDict[_Closable, str] = OrderedDict()
        self._per: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._links)

    def admit(self, link: _Closable, host: str) -> bool:
        """Room for a new unauthenticated stream from ``host``? False:
        refuse it. True: it is tracked until :meth:`done`."""
        key = source_key(host)
        if self._per[key] >= self.per_source:
            self.counts["refused_per_source"] += 1
            return False
        while len(self._links) >= self.total:
            oldest = next(iter(self._links))
            self.done(oldest)
            self.counts["evicted"] += 1
            oldest.abort()
        self._links[link] = key
        self._per[key] += 1
        self.counts["accepted"] += 1
        return True

    def done(self, link: _Closable) -> None:
        """The stream authenticated, or closed: it no longer counts."""
        key = self._links.pop(link, None)
        if key is not None:
            self._per[key] -= 1
            if not self._per[key]:
                del self._per[key]


class AcceptLogLimiter(logging.Filter):
    """Rate-limits asyncio's "socket.accept() out of system resource"
    error. At the descriptor limit asyncio logs it with a traceback up to a
    hundred times per listener per wake-up, and each retry schedules more
    (4,000 a second measured, 144 MB of stderr in 80 s): one record per
    ``interval`` gets through, saying how many were suppressed; ``on_hit``
    counts every one (``stats()["tcp"]["accept_errors"]``)."""

    MESSAGE = "socket.accept() out of system resource"

    def __init__(self, on_hit: Callable[[], None], interval: float = 10.0) -> None:
        super().__init__()
        self._on_hit = on_hit
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.MESSAGE):
            return True
        self._on_hit()
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return False
        self._next = now + self._interval
        if self._suppressed:
            record.msg = f"{record.msg} ({self._suppressed} more suppressed)"
            self._suppressed = 0
        record.exc_info = None  # the same traceback each time says nothing new
        return True
