"""Happy Eyeballs for hole punching (RFC 8305 style), sans-IO.

When both sides of a rendezvous have candidates in both address families,
the requester punches on IPv6 first and starts IPv4 only after a head
start (or at once when IPv6 fails); the first family whose punch succeeds
wins and the others are cancelled. IPv6 is preferred because it usually
needs no NAT (the punch only opens two stateful firewalls, and the path
survives NAT rebinding), the way RFC 8305 prefers it for client
connections.

The head start, :data:`HEAD_START_US` (250 ms, RFC 8305's recommended
"Connection Attempt Delay"), must exceed the punch's own low-TTL phase
(``PunchConfig.low_ttl_us``, 120 ms: no punch of ours can reach the peer
before it ends) plus a round trip; with a shorter one both families would
always be running before either could succeed and IPv6 would win only by
chance. What it costs when IPv6 is broken: that much longer to connect.

:class:`Race` only decides *when* each family starts and who won; the
caller runs the punch sessions (crust.asyncio.eyeballs). Design note:
docs/design/0063-happy-eyeballs-punching.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = ["HEAD_START_US", "IPV4", "IPV6", "Race", "family_key", "family_name", "preferred"]

IPV4 = 4
IPV6 = 6
#: Microseconds IPv6 punches alone before IPv4 joins.
HEAD_START_US = 250_000


def family_name(family: int) -> str:
    return "IPv6" if family == IPV6 else "IPv4"


def preferred(ours: Iterable[int], theirs: Iterable[int]) -> list[int]:
    """The families both sides can punch on, most preferred (IPv6) first."""
    both = set(ours) & set(theirs)
    return sorted(both, reverse=True)


def family_key(key: bytes, family: int) -> bytes:
    """The punch key of one family's session. IPv4 keeps the rendezvous
    key; IPv6 gets one derived from it, so that a punch of one family's
    session (same session id) never counts in the other's: a punch seen on
    the IPv4 path and replayed at our IPv6 socket is just a bad MAC."""
    if family == IPV4:
        return key
    return hashlib.blake2b(b"crust punch ipv6", key=key, digest_size=len(key)).digest()


class Race:
    """When each family's punch starts, and which one won.

    ``families``: most preferred first. The first starts at once; each next
    one ``head_start_us`` after the previous started, or as soon as every
    started one has failed. The first success wins (``won`` returns the
    attempts to cancel); when all failed, ``lost`` is true. ``why`` says
    what happened.
    """

    def __init__(
        self, families: Sequence[int], now: int, head_start_us: int = HEAD_START_US
    ) -> None:
        if not families:
            raise ValueError("a race needs at least one family")
        if head_start_us < 0:
            raise ValueError(f"head_start_us must be >= 0, got {head_start_us}")
        self.order = list(families)
        self.head_start_us = head_start_us
        self.begun = now
        self.started: dict[int, int] = {}
        self.errors: dict[int, str] = {}
        self.winner: int | None = None
        self.won_at: int | None = None
        self._next = 0
        self._next_at = now

    def due(self, now: int) -> list[int]:
        """The families whose punch starts now."""
        out: list[int] = []
        while self.winner is None and self._next < len(self.order) and now >= self._next_at:
            fam = self.order[self._next]
            self._next += 1
            self.started[fam] = now
            self._next_at = now + self.head_start_us
            out.append(fam)
        return out

    def timer(self) -> int | None:
        """When the next family is due (None: none is)."""
        if self.winner is not None or self._next >= len(self.order):
            return None
        return self._next_at

    def failed(self, family: int, now: int, why: str) -> None:
        """``family``'s punch failed (``lost`` tells whether that was the
        last hope)."""
        if family not in self.started or family in self.errors or self.winner is not None:
            return  # unknown, already failed, or a loser we cancelled
        self.errors[family] = why
        if all(f in self.errors for f in self.started):
            # Nothing running: the next family need not wait its turn.
            self._next_at = now

    @property
    def lost(self) -> bool:
        return (
            self.winner is None
            and self._next >= len(self.order)
            and all(f in self.errors for f in self.started)
        )

    def won(self, family: int, now: int) -> list[int]:
        """``family``'s punch succeeded: the started families to cancel
        (empty when another had already won; then ``family`` is a loser
        too and the caller drops it)."""
        if self.winner is not None:
            return [] if family == self.winner else [family]
        self.winner = family
        self.won_at = now
        return [f for f in self.started if f != family and f not in self.errors]

    def why(self) -> str:
        """What happened, for ``Peer.why``."""
        parts: list[str] = []
        for fam in self.order:
            name = family_name(fam)
            if fam not in self.started:
                if self.winner is not None:
                    parts.append(f"{name} not tried ({family_name(self.winner)} won first)")
                continue
            after = (self.started[fam] - self.begun) / 1e3
            start = "started at once" if after < 1 else f"started after {after:.0f} ms"
            if fam == self.winner:
                assert self.won_at is not None
                took = (self.won_at - self.started[fam]) / 1e6
                parts.append(f"{name} {start}, punched in {took:.2f} s, won")
            elif fam in self.errors:
                parts.append(f"{name} {start}, failed: {self.errors[fam]}")
            else:
                parts.append(f"{name} {start}, abandoned")
        head = f"Happy Eyeballs, IPv6 first, {self.head_start_us / 1e3:.0f} ms head start"
        return f"{head}: {'; '.join(parts)}"
