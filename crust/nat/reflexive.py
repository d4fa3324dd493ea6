"""Reflexive addresses: where other peers see us, from handshake echoes.

Every handshake payload carries the address the sender saw the receiver's
packets come from (``HandshakeResult.observed_addr``). Behind a NAT that is
our public mapping. One peer's word is cheap to fake, so observations are
counted by distinct reporting peers and ranked by that count (then by
recency); the table is bounded, and each (transport, address) keeps at most
``MAX_REPORTERS`` reporters.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass

from crust.identity import PeerId
from crust.wire import Address as Addr

__all__ = ["Observation", "ReflexiveTracker"]

MAX_ADDRESSES = 64
MAX_REPORTERS = 32


@functools.lru_cache(maxsize=256)
def _normal_host(text: str) -> str | None:
    """The canonical text of an IP address, None for anything else or the
    unspecified address. Cached: every handshake reports one, and parsing
    was a noticeable share of a busy listener's time."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return None if ip.is_unspecified else str(ip)


@dataclass(frozen=True, slots=True)
class Observation:
    """An address (``transport``: "udp" or "tcp") as ``votes`` distinct
    peers reported it; ``last`` is the monotonic microsecond of the latest."""

    transport: str
    address: Addr
    votes: int
    last: int


class ReflexiveTracker:
    def __init__(self) -> None:
        self._seen: OrderedDict[tuple[str, Addr], tuple[set[PeerId], int]] = OrderedDict()

    def note(self, transport: str, address: Addr | None, reporter: PeerId, now: int) -> None:
        """Record that ``reporter`` saw us at ``address`` over ``transport``."""
        if address is None or transport not in ("udp", "tcp"):
            return
        host = _normal_host(address[0])
        if host is None or not 0 < address[1] < 65536:
            return
        key = (transport, (host, int(address[1])))
        reporters, _ = self._seen.pop(key, (set(), now))
        if len(reporters) < MAX_REPORTERS:
            reporters.add(reporter)
        self._seen[key] = (reporters, now)
        while len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)

    def observations(self, transport: str | None = None) -> list[Observation]:
        """Best first: most distinct reporters, then most recent."""
        out = [
            Observation(t, a, len(r), last)
            for (t, a), (r, last) in self._seen.items()
            if transport is None or t == transport
        ]
        out.sort(key=lambda o: (-o.votes, -o.last))
        return out

    def addresses(self, transport: str | None = None) -> list[Addr]:
        return [o.address for o in self.observations(transport)]
