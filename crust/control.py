"""The service's own messages between connected peers.

Gossip, rendezvous and relay need to talk to a peer over the connection the
application already has, without the application seeing it. Such a message
travels as an engine message flagged *control* (``CRUST_SEND_CONTROL``):
same encryption, ordering and flow control as data, but it arrives as
``EV_CONTROL`` and is dispatched here by its first byte, the
:class:`ControlKind`. The rest is the kind's own payload, parsed by its
handler; payloads come from other peers, so handlers parse defensively.
"""

from __future__ import annotations

import enum

__all__ = ["MAX_CONTROL_PAYLOAD", "ControlKind", "decode", "encode"]

#: Control messages are small protocol messages, never bulk data: a peer
#: sending more is misbehaving, and the bound keeps a handler's work cheap.
MAX_CONTROL_PAYLOAD = 64 * 1024


class ControlKind(enum.IntEnum):
    """What a control message is for (its first byte on the wire)."""

    GOSSIP = 1
    RENDEZVOUS = 2
    RELAY = 3
    PUNCH = 4
    #: A bootstrapping node asks to be bootstrapped off; the answer says
    #: whether we accept (crust.asyncio.discovery).
    BOOTSTRAP = 5
    #: "Nothing more from me on this connection": the close of a duplicate
    #: connection (crust.retirement). Empty payload.
    RETIRE = 6


def encode(kind: int, payload: bytes) -> bytes:
    """The control message for ``payload`` of ``kind``."""
    if not 0 < kind < 256:
        raise ValueError(f"control kind must be 1..255, got {kind}")
    if len(payload) > MAX_CONTROL_PAYLOAD:
        raise ValueError(
            f"control payload is {len(payload)} bytes; the limit is {MAX_CONTROL_PAYLOAD}"
        )
    return bytes((kind,)) + payload


def decode(message: bytes) -> tuple[int, bytes]:
    """(kind, payload) of a received control message; ValueError if empty
    or oversized."""
    if not message:
        raise ValueError("empty control message")
    if len(message) - 1 > MAX_CONTROL_PAYLOAD:
        raise ValueError(f"control payload of {len(message) - 1} bytes exceeds the limit")
    return message[0], message[1:]
