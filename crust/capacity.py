"""Connection caps: how many authenticated connections a node keeps, in all
and per source (an IPv4 address or an IPv6 /64, ``crust.admission``), and
who gives way when it is full (design note 0043).

Who wins, in order: a maintained peer (``Service.maintain``) is never
evicted; nor is one this node dialled (the application, or discovery
within ``bootstrap_peers``, asked for it). Among incoming, unmaintained
peers the least recently used gives way to a newcomer, incoming or
outgoing. When nothing can give way, the new connection is refused
(``connect`` raises for an outgoing one): the caps hold whoever asked.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING

from crust.admission import source_key

if TYPE_CHECKING:
    from crust.peer import Peer

__all__ = ["make_room"]


def _victim(peers: Iterable[Peer], spare: set[int]) -> Peer | None:
    """The incoming, unmaintained peer not in spare that gives way first:
    one that did not join through us before one that did, then the least
    recently used."""
    candidates = [p for p in peers if p.incoming and not p.maintained and id(p) not in spare]
    return min(candidates, key=lambda p: (p.joined, p.last_used), default=None)


def make_room(
    peers: Collection[Peer], host: str, *, total: int, per_source: int
) -> tuple[bool, list[Peer]]:
    """For a new connection from ``host``, given the connected ``peers``:
    whether there is room once the returned peers are evicted. (False, [])
    when none can give way; nothing is evicted then."""
    if len(peers) < min(total, per_source):
        # Neither cap can be reached: the scan below would find room and no
        # one to evict. It costs a pass over every peer per new connection,
        # which made dialling 100,000 peers (caps raised to match)
        # quadratic: 80 % of the service's time at 5,000 peers (issue 22).
        return True, []
    live = [p for p in peers if p.is_connected]
    source = source_key(host)
    evict: list[Peer] = []
    chosen: set[int] = set()
    same = [p for p in live if source_key(p.address[0]) == source]
    if len(same) >= per_source:
        v = _victim(same, chosen)
        if v is None:
            return False, []
        evict.append(v)
        chosen.add(id(v))
    if len(live) - len(evict) >= total:
        v = _victim(live, chosen)
        if v is None:
            return False, []
        evict.append(v)
    return True, evict
