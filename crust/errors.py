"""Exceptions raised by crust.

Every exception crust raises on purpose derives from :class:`CrustError`, so
``except CrustError`` catches them all. Errors that come from the C core
carry the core's negative ``CRUST_E*`` value in :attr:`CrustError.code`, and
their message ends with the core's own wording (``crust_strerror``).

Classes also derive from the standard exception that fits (a bad argument
from :class:`ValueError`, a failed connect from :class:`ConnectionError`, a
timeout from :class:`TimeoutError`...), so code written against the standard
library's conventions keeps working.

Every class is defined here, whatever module raises it, so this module
imports nothing from crust and any module can import it without a cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Attempt",
    "BenchError",
    "ConfigError",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "CrustError",
    "DatagramDropped",
    "DhtUnavailable",
    "EventsOverflow",
    "HandshakeError",
    "HandshakeTimeout",
    "IdentityError",
    "InvalidArgument",
    "InvalidPeerId",
    "ListenerError",
    "MalformedPacket",
    "MalformedRelay",
    "MalformedRendezvous",
    "MessageTooLarge",
    "NoBootstrap",
    "NoKeys",
    "NoiseError",
    "OutOfMemory",
    "PeerLost",
    "ProtocolError",
    "RecordError",
    "RecordNotFound",
    "StunFailed",
    "TransferRefused",
    "UnknownPeer",
    "UpnpError",
    "WouldBlock",
]


class CrustError(Exception):
    """Base class of every error crust raises.

    ``code`` is the C core's ``CRUST_E*`` value when the error came from the
    core, else ``None``.
    """

    code: int | None = None


class ConfigError(CrustError, ValueError):
    """A configuration value is out of range or inconsistent.

    ``field`` names the offending ``Config`` field (also in the message).
    """

    field: str | None = None


class InvalidArgument(CrustError, ValueError):
    """An argument the core rejected (``CRUST_EINVAL``): a bad priority,
    key phase, AEAD id, or a call made in the wrong state."""


class WouldBlock(CrustError):
    """The send buffer is full (``CRUST_EWOULDBLOCK``).

    Nothing was queued; retry after the connection reports ``SEND_READY``.
    """


class MessageTooLarge(CrustError, ValueError):
    """The message is larger than ``Config.max_message_size``
    (``CRUST_EMSGSIZE``); it can never be sent on this connection."""


class ConnectionClosed(CrustError):
    """The connection is closing or closed (``CRUST_ECLOSED``)."""


class PeerLost(ConnectionClosed, ConnectionError):
    """The peer an operation needed was lost on the way (a ``LostPeer``
    event: it stopped answering, its address became unreachable, it closed).
    ``reason`` is the event's reason; ``sent`` the bytes the operation had
    handed to the connection by then (``crust send``)."""

    def __init__(self, message: str, reason: str, sent: int = 0) -> None:
        super().__init__(message)
        self.reason = reason
        self.sent = sent


class OutOfMemory(CrustError, MemoryError):
    """An allocation failed or a memory cap was hit (``CRUST_ENOMEM``)."""


class NoKeys(CrustError):
    """No packet keys are installed yet (``CRUST_ENOKEY``): finish the
    handshake and call ``Connection.set_keys`` first."""


class ProtocolError(CrustError):
    """The peer broke the protocol (``CRUST_EPROTO``); the connection is
    closed."""


class DatagramDropped(CrustError):
    """A datagram was refused: failed authentication, malformed, replayed,
    too old, or not for this connection (``CRUST_EDECRYPT`` ..
    ``CRUST_ENOTOURS``).

    ``Connection.receive_datagram`` returns these codes instead of raising;
    this class exists for callers that want to turn such a code into an
    exception.
    """


class EventsOverflow(CrustError):
    """An event subscription (``Service.events()``) fell more than
    ``ServiceConfig.event_backlog`` events behind and was ended; raised
    once it has yielded every event it still held. Messages are never lost
    this way: they wait for another reader."""


class ListenerError(CrustError, OSError):
    """A listener could not be started (port in use, address unavailable)."""


class UnknownPeer(CrustError, LookupError):
    """``connect`` was given a peer id with no known address, and no
    connected peer could introduce us to it."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One way :meth:`crust.Service.connect` tried and how it failed:
    ``how`` is ``"tcp"``, ``"udp"``, ``"rendezvous"``, ``"udp punch"``,
    ``"tcp punch"``, ``"relay"``...; ``error`` the exception it ended with."""

    how: str
    error: BaseException

    def __str__(self) -> str:
        return f"{self.how}: {self.error}"


class ConnectError(CrustError, ConnectionError):
    """:meth:`crust.Service.connect` failed (or the target is blacklisted).

    ``attempts`` holds each path tried and its own failure, in the order
    they failed (empty when nothing was tried); the message sums them up.
    """

    def __init__(self, message: str, attempts: tuple[Attempt, ...] = ()) -> None:
        super().__init__(message)
        self.attempts = attempts


class ConnectTimeout(ConnectError, TimeoutError):
    """:meth:`crust.Service.connect` ran out of time: every attempt timed
    out, or the overall deadline passed first."""


class InvalidPeerId(CrustError, ValueError):
    """A peer id string or key is not valid; the message says exactly why."""


class IdentityError(CrustError):
    """The identity file could not be read, written or understood.

    ``path`` is the file concerned (also in the message). A damaged file is
    never replaced automatically: the identity is the node's name, and
    losing it silently would turn the node into a stranger.
    """

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class HandshakeError(CrustError):
    """A handshake failed; the message says why and what to check."""


class HandshakeTimeout(HandshakeError, TimeoutError):
    """No valid answer came before the handshake's deadline."""


class MalformedPacket(CrustError, ValueError):
    """Untrusted bytes did not parse (raised by the ``*_untrusted`` parsers
    only; the Responder counts these and never lets them out)."""


class NoiseError(CrustError):
    """A Noise message was malformed, failed authentication, or came at the
    wrong moment; or the API was misused (the message says which)."""


class MalformedRelay(CrustError, ValueError):
    """A relay message that does not parse (it came from a peer)."""


class MalformedRendezvous(CrustError, ValueError):
    """A rendezvous message that does not parse (it came from a peer)."""


class StunFailed(CrustError):
    """A binding request got no usable answer from ``server``; ``reason``
    is "timeout" or the server's error."""

    def __init__(self, server: tuple[str, int], reason: str) -> None:
        super().__init__(f"STUN binding to {server[0]}:{server[1]} failed: {reason}")
        self.server = server
        self.reason = reason


class UpnpError(CrustError):
    """No usable UPnP gateway, or the gateway refused or did not answer."""


class BenchError(CrustError, RuntimeError):
    """A benchmark could not measure (a peer failed, stalled or lost data)."""


class TransferRefused(CrustError):
    """``crust send``/``crust recv``: the receiver (or its user) did not
    accept the file (``crust.transfer``)."""


class DhtUnavailable(CrustError):
    """The DHT cannot run here (libtorrent missing, or its port taken)."""


class NoBootstrap(DhtUnavailable):
    """No DHT bootstrap node is configured."""


class RecordError(CrustError):
    """A DHT record that must not be used; ``reason`` says why (one word:
    ``key``, ``salt``, ``size``, ``signature``, ``malformed``, ``replayed``,
    ``expired``, ``future``)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class RecordNotFound(CrustError):
    """No valid record for the peer in the DHT (none stored, or every one
    found was rejected: ``rejected`` says why)."""

    def __init__(self, message: str, rejected: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.rejected = rejected
