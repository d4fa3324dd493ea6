"""Exceptions raised by crust.

Every exception crust raises on purpose derives from :class:`CrustError`, so
``except CrustError`` catches them all. Errors that come from the C core
carry the core's negative ``CRUST_E*`` value in :attr:`CrustError.code`, and
their message ends with the core's own wording (``crust_strerror``).

Classes that describe a bad argument also derive from :class:`ValueError`,
so code written against the standard library's conventions keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConnectionClosed",
    "CrustError",
    "DatagramDropped",
    "EventsOverflow",
    "InvalidArgument",
    "MessageTooLarge",
    "NoKeys",
    "OutOfMemory",
    "ProtocolError",
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
