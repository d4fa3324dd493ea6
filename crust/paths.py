"""Fixed vocabularies, as types: how a connection travels
(:attr:`crust.Peer.path`) and why it ended (:attr:`crust.LostPeer.kind`).

The path names are a ``Literal`` so a type checker catches a misspelt
comparison (``peer.path == "punched_udp"``); the close reasons an enum of
str, whose values are the words ``LostPeer.reason`` starts with.
"""

from __future__ import annotations

import enum
from typing import Literal, get_args

__all__ = ["PATHS", "CloseReason", "PathName"]

PathName = Literal["direct-tcp", "direct-udp", "punched-udp", "punched-tcp", "relayed"]
"""``direct-*``: dialled at an address the peer listens on; ``punched-*``:
through a hole punched in a NAT after a rendezvous; ``relayed``: through
the peer that introduced us (end-to-end encrypted)."""

#: Every path name, in the order above.
PATHS: tuple[PathName, ...] = get_args(PathName)


class CloseReason(str, enum.Enum):
    """Why a connection ended: ``LostPeer.kind`` (``LostPeer.reason``
    holds the same words, plus details for a transport failure)."""

    CLOSED_BY_US = "closed by us"
    CLOSED_BY_PEER = "closed by the peer"
    IDLE_TIMEOUT = "idle timeout: nothing heard from the peer"
    PEER_UNREACHABLE = "peer unreachable: probes unanswered after an ICMP error"
    """An ICMP unreachable for the peer's address, then a probe left
    unanswered (~1 s): the peer's process or host is gone."""
    PEER_LOST = "peer stopped answering: data unacknowledged"
    """Messages in flight and nothing heard for ``ServiceConfig.lost_timeout``."""
    PROTOCOL_VIOLATION = "protocol violation"
    DUPLICATE = "duplicate connection replaced"
    BLACKLISTED = "blacklisted"
    PRUNED = "pruned: neither maintained nor used"
    SHUTDOWN = "service shut down"
    DISCONNECTED = "disconnected by us"
    TCP_CLOSED = "TCP connection closed"
    RELAY_CLOSED = "relay closed"
    RELAY_LOST = "the relaying peer disconnected"
    CONNECTION_LIMIT = "connection limit: made room for another peer"
    """Closed to make room (``ServiceConfig.max_connections``)."""
    OTHER = "closed"
    """An engine close code this version does not name."""

    # Shown as its words, not as ``CloseReason.BLACKLISTED``.
    __str__ = str.__str__
    __format__ = str.__format__  # type: ignore[assignment]

    @classmethod
    def of(cls, reason: str) -> CloseReason:
        """The kind of a ``LostPeer.reason`` (its words, or their start
        when details follow)."""
        for member in cls:
            if reason == member.value or reason.startswith(member.value + " "):
                return member
            if reason.startswith(member.value + ":") or reason.startswith(member.value + "("):
                return member
        return cls.OTHER
