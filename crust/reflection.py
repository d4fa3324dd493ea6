"""Sending to addresses nobody verified, budgeted per requester (issue 15,
design note 0046). Sans-IO: the caller passes the clock.

Peers can make a node send to addresses they chose: a rendezvous
introduction names the candidates to punch, a punch request too, gossip and
LAN beacons name addresses to dial. None of those addresses has answered
anything yet, so each such send could be aimed at a third party: the node
would be a reflector, and every byte it sends for a small request an
amplification. So each of those sends is charged to the *requester* (the
source address whose message caused it), which earns credit only by
sending to us: ``ratio`` (3) times the bytes received from it. Ids are free,
so the requester is its IP address (an IPv6 /64, like
:func:`crust.admission.source_key`), never its peer id or port.

Callers credit what they received (payload bytes: the IP and UDP headers
the requester also paid for are not credited, so the budget errs low) and
charge what they are about to send (on-wire bytes, headers included), and
skip the send when :meth:`SendBudget.spend` says no.

Bounds: at most ``max_sources`` requesters are remembered (least recently
used dropped first; a dropped requester loses its credit, which only errs
low), an entry untouched for ``idle_us`` is forgotten, and one requester's
credit never exceeds ``max_credit`` bytes, so a long-lived chatty peer
cannot store up a large burst.

Sends that need no budget: to an authenticated peer's own address, and the
traversals this node asked for through a rendezvous peer it chose, or that
reach it through such a peer (crust.asyncio.traversal decides which).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from crust.admission import source_key

__all__ = [
    "IP_UDP_OVERHEAD",
    "SendBudget",
    "syn_cost",
    "udp_cost",
]

#: IP + UDP headers of a datagram: IPv4 20 + 8, IPv6 40 + 8.
IP_UDP_OVERHEAD = {4: 28, 6: 48}
#: A TCP SYN on the wire with Linux's options (MSS, SACK, timestamps, window
#: scale): IPv4 60 bytes, IPv6 80.
_SYN = {4: 60, 6: 80}


def _version(host: str) -> int:
    return 6 if ":" in host else 4


def udp_cost(host: str, payload: int) -> int:
    """On-wire bytes of a datagram of ``payload`` bytes to ``host``."""
    return payload + IP_UDP_OVERHEAD[_version(host)]


def syn_cost(host: str, syns: int = 1) -> int:
    """On-wire bytes of ``syns`` TCP SYNs to ``host``."""
    return syns * _SYN[_version(host)]


@dataclass(slots=True)
class _Entry:
    credit: int
    seen: int


class SendBudget:
    """Credit per requester source, in bytes.

    ``received(host, n, now)`` adds ``ratio * n``; ``spend(host, n, now)``
    takes ``n`` if that much is there and says whether it did.
    """

    def __init__(
        self,
        *,
        ratio: int = 3,
        max_sources: int = 4096,
        max_credit: int = 1 << 20,
        idle_us: int = 600_000_000,
    ) -> None:
        if ratio < 0 or max_sources < 1 or max_credit < 0 or idle_us <= 0:
            raise ValueError("SendBudget: ratio, max_credit >= 0; max_sources, idle_us > 0")
        self.ratio = ratio
        self.max_sources = max_sources
        self.max_credit = max_credit
        self.idle_us = idle_us
        self._table: OrderedDict[str, _Entry] = OrderedDict()
        #: Bytes sent on credit, and bytes not sent for want of it.
        self.stats: dict[str, int] = {"spent": 0, "refused": 0, "refusals": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._table)

    def received(self, host: str, nbytes: int, now: int) -> None:
        """``nbytes`` arrived from ``host`` (numeric)."""
        if nbytes <= 0:
            return
        e = self._entry(source_key(host), now)
        e.credit = min(self.max_credit, e.credit + self.ratio * nbytes)

    def spend(self, host: str, nbytes: int, now: int) -> bool:
        """Charge ``nbytes`` about to be sent because ``host`` asked;
        False (nothing charged): do not send them."""
        e = self._entry(source_key(host), now)
        if e.credit < nbytes:
            self.stats["refused"] += nbytes
            self.stats["refusals"] += 1
            return False
        e.credit -= nbytes
        self.stats["spent"] += nbytes
        return True

    def credit(self, host: str, now: int) -> int:
        """What ``host`` may still have sent on its behalf."""
        self._expire(now)
        e = self._table.get(source_key(host))
        return 0 if e is None else e.credit

    def _entry(self, key: str, now: int) -> _Entry:
        self._expire(now)
        e = self._table.pop(key, None)
        if e is None:
            e = _Entry(0, now)
        e.seen = now
        self._table[key] = e
        while len(self._table) > self.max_sources:
            self._table.popitem(last=False)
            self.stats["evicted"] += 1
        return e

    def _expire(self, now: int) -> None:
        while self._table:
            oldest = next(iter(self._table.values()))
            if now - oldest.seen < self.idle_us:
                break
            self._table.popitem(last=False)
