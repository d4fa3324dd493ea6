"""Rendezvous through a mutual peer, sans-IO: the messages, the punch key,
and the introducer's bookkeeping.

A wants to reach B by id; both are connected to M (e.g. a bootstrap node).
Over the control channel (``ControlKind.RENDEZVOUS``)::

    A -> M  REQUEST  peer=B, session, nonce_A, candidates_A, rtt_A
    M -> B  INTRODUCE peer=A, ... (same fields), relay = M offers to relay
    B -> M  REPLY    peer=A, session, nonce_B, candidates_B
    M -> A  REPLY    peer=B, ..., relay
    M -> A  ERROR    session, reason          (B unknown, refused, ...)

Then A and B punch (:mod:`crust.nat.punch`) and race the other paths. M
only forwards; it keeps a small bounded table of sessions in flight so a
reply goes back only to the peer that asked, and so it can open a relay
session (:mod:`crust.nat.relay`) for the pair.

The punch key is derived from the static-static X25519 secret of A and B
(each knows its own private key and the other's public key, from the peer
id) and both nonces: M forwards the nonces but cannot compute the key.

Message layout: ``op (1) | session (8) | peer Ed25519 key (32) | nonce (16)
| rtt_us (u32) | flags (1) | count (1) | candidates | reason``; flags bit 0:
M offers to relay, bits 1..4: how many of the candidates (the first ones)
are the sender's own listening addresses, bit 5: the sender's NAT is
symmetric; a candidate
being ``family (1: 4 or 6) | address (4 or 16) | port (2)`` and the reason
(ERROR only) at most 200 bytes of UTF-8.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import socket
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings as sodium

from crust.errors import MalformedRendezvous
from crust.identity import Identity, InvalidPeerId, PeerId
from crust.wire import Address as Addr

__all__ = [
    "Introducer",
    "MalformedRendezvous",
    "Op",
    "RendezvousMessage",
    "decode_untrusted",
    "encode",
    "punch_key",
]


SESSION_LEN = 8
NONCE_LEN = 16
MAX_CANDIDATES = 16
MAX_REASON = 200
MAX_LOCAL = 15
_FIXED = struct.Struct(">B8s32s16sIBB")
FLAG_RELAY = 0x01
FLAG_HARD = 0x20


class Op(enum.IntEnum):
    REQUEST = 1
    REPLY = 2
    ERROR = 3
    #: A request as M forwards it (``peer`` is then the requester).
    INTRODUCE = 4


@dataclass(frozen=True, slots=True)
class RendezvousMessage:
    """One rendezvous message. ``peer`` is the far side: the target in a
    request to M, the source in what M forwards."""

    op: Op
    session: bytes
    peer: PeerId
    nonce: bytes = bytes(NONCE_LEN)
    rtt_us: int = 0
    relay: bool = False
    candidates: tuple[Addr, ...] = ()
    reason: str = ""
    #: How many of ``candidates`` (the first ones) are the sender's own
    #: listening addresses, as opposed to reflexive or mapped ones.
    local: int = 0
    #: The sender's NAT maps per destination (symmetric): birthday punching.
    hard: bool = False

    def __post_init__(self) -> None:
        if len(self.session) != SESSION_LEN:
            raise ValueError(f"session id must be {SESSION_LEN} bytes, got {len(self.session)}")
        if len(self.nonce) != NONCE_LEN:
            raise ValueError(f"nonce must be {NONCE_LEN} bytes, got {len(self.nonce)}")
        if not 0 <= self.rtt_us < 1 << 32:
            raise ValueError(f"rtt_us must fit in 32 bits, got {self.rtt_us}")
        if not 0 <= self.local <= min(len(self.candidates), MAX_LOCAL):
            raise ValueError(f"local must be 0..{MAX_LOCAL} and <= candidates, got {self.local}")
        if len(self.candidates) > MAX_CANDIDATES:
            raise ValueError(f"at most {MAX_CANDIDATES} candidates, got {len(self.candidates)}")

    def forwarded(self, source: PeerId, *, relay: bool) -> RendezvousMessage:
        """What M sends on: the same message, naming its source instead."""
        return RendezvousMessage(
            Op.INTRODUCE if self.op is Op.REQUEST else self.op,
            self.session,
            source,
            self.nonce,
            self.rtt_us,
            relay,
            self.candidates,
            self.reason,
            self.local,
            self.hard,
        )


def _encode_addr(addr: Addr) -> bytes | None:
    try:
        ip = ipaddress.ip_address(addr[0])
        port = int(addr[1])
    except (ValueError, TypeError, IndexError):
        return None
    if not 0 < port <= 0xFFFF or ip.is_unspecified:
        return None
    return bytes((ip.version,)) + ip.packed + port.to_bytes(2, "big")


def encode(msg: RendezvousMessage) -> bytes:
    """Serialise ``msg``; candidates that are not IP literals are left out."""
    encoded = [_encode_addr(a) for a in msg.candidates]
    cands = [c for c in encoded if c is not None]
    local = sum(c is not None for c in encoded[: msg.local])
    reason = msg.reason.encode()[:MAX_REASON]
    flags = (FLAG_RELAY if msg.relay else 0) | (local << 1) | (FLAG_HARD if msg.hard else 0)
    head = _FIXED.pack(msg.op, msg.session, msg.peer.key, msg.nonce, msg.rtt_us, flags, len(cands))
    return head + b"".join(cands) + reason


def decode_untrusted(data: bytes) -> RendezvousMessage:
    """Parse a message from a peer; raises :class:`MalformedRendezvous` only."""
    data = bytes(data)
    if len(data) < _FIXED.size:
        raise MalformedRendezvous(f"rendezvous message of {len(data)} bytes is cut short")
    op, session, key, nonce, rtt_us, flags, count = _FIXED.unpack_from(data)
    try:
        kind = Op(op)
    except ValueError:
        raise MalformedRendezvous(f"unknown rendezvous op {op}") from None
    if count > MAX_CANDIDATES:
        raise MalformedRendezvous(f"{count} candidates, at most {MAX_CANDIDATES} allowed")
    try:
        peer = PeerId(key)
    except InvalidPeerId as e:
        raise MalformedRendezvous(f"rendezvous peer key: {e}") from None
    pos = _FIXED.size
    cands: list[Addr] = []
    for i in range(count):
        if pos >= len(data):
            raise MalformedRendezvous(f"candidate {i} missing")
        fam = data[pos]
        size = {4: 4, 6: 16}.get(fam)
        if size is None:
            raise MalformedRendezvous(f"candidate {i} has address family {fam}")
        if len(data) < pos + 1 + size + 2:
            raise MalformedRendezvous(f"candidate {i} cut short")
        raw = data[pos + 1 : pos + 1 + size]
        host = socket.inet_ntoa(raw) if fam == 4 else str(ipaddress.IPv6Address(raw))
        port = int.from_bytes(data[pos + 1 + size : pos + 3 + size], "big")
        if port == 0:
            raise MalformedRendezvous(f"candidate {i} has port 0")
        cands.append((host, port))
        pos += 3 + size
    rest = data[pos:]
    if len(rest) > MAX_REASON:
        raise MalformedRendezvous(f"reason of {len(rest)} bytes, at most {MAX_REASON}")
    reason = rest.decode("utf-8", "replace")
    local = (flags >> 1) & MAX_LOCAL
    if local > count:
        raise MalformedRendezvous(f"{local} local candidates of {count}")
    return RendezvousMessage(
        kind,
        session,
        peer,
        nonce,
        rtt_us,
        bool(flags & FLAG_RELAY),
        tuple(cands),
        reason,
        local,
        bool(flags & FLAG_HARD),
    )


def punch_key(
    identity: Identity, peer: PeerId, session: bytes, nonces: tuple[bytes, bytes]
) -> bytes:
    """The 32-byte punch MAC key both sides compute: BLAKE2b over the X25519
    secret of our static key and the peer's, keyed per session by both
    nonces (requester's first). The introducer cannot compute it."""
    shared = sodium.crypto_scalarmult(identity.x25519_private(), peer.x25519_public())
    if not any(shared):
        raise ValueError(f"peer {peer} has a low-order X25519 key")
    return hashlib.blake2b(
        b"crust punch" + session + nonces[0] + nonces[1],
        key=shared,
        digest_size=32,
    ).digest()


@dataclass(slots=True)
class _Pending:
    requester: PeerId
    target: PeerId
    expires: int
    relay: bool


class Introducer:
    """M's side: forwards requests and replies between two of its peers.

    ``on_message(source, msg, now)`` returns ``(to, message)`` pairs to send;
    ``is_connected(peer_id)`` (given at construction) says whether M has a
    live connection to a peer. ``relay_allowed(a, b)`` decides whether M
    offers to relay for the pair. Sessions in flight are kept at most
    ``ttl_us`` and ``max_pending`` of them (oldest dropped first).
    """

    def __init__(
        self,
        is_connected: Callable[[PeerId], bool],
        relay_allowed: Callable[[PeerId, PeerId], bool],
        *,
        ttl_us: int = 10_000_000,
        max_pending: int = 4096,
    ) -> None:
        self._connected = is_connected
        self._relay_allowed = relay_allowed
        self._ttl = ttl_us
        self._max = max_pending
        self._pending: OrderedDict[bytes, _Pending] = OrderedDict()
        #: Sessions whose reply went through, for the relay to open: (session, a, b).
        self.introduced: list[tuple[bytes, PeerId, PeerId]] = []
        self.forwarded = 0
        self.refused = 0

    def on_message(
        self, source: PeerId, msg: RendezvousMessage, now: int
    ) -> list[tuple[PeerId, RendezvousMessage]]:
        self._expire(now)
        connected = self._connected
        if msg.op is Op.REQUEST:
            target = msg.peer
            if target == source or not connected(target):
                self.refused += 1
                why = "that is you" if target == source else f"{target.short} is not connected here"
                return [(source, RendezvousMessage(Op.ERROR, msg.session, target, reason=why))]
            if msg.session in self._pending:
                self.refused += 1
                return []  # a retransmission or a clash: the first one stands
            relay = self._relay_allowed(source, target)
            self._pending[msg.session] = _Pending(source, target, now + self._ttl, relay)
            while len(self._pending) > self._max:
                self._pending.popitem(last=False)
            self.forwarded += 1
            return [(target, msg.forwarded(source, relay=relay))]
        if msg.op is Op.INTRODUCE:
            self.refused += 1
            return []  # only an introducer sends these
        pending = self._pending.get(msg.session)
        # Only the target of a request may answer it, and only to its requester.
        if pending is None or pending.target != source or pending.requester != msg.peer:
            self.refused += 1
            return []
        del self._pending[msg.session]
        if msg.op is Op.REPLY and pending.relay:
            self.introduced.append((msg.session, pending.requester, source))
        self.forwarded += 1
        return [(pending.requester, msg.forwarded(source, relay=pending.relay))]

    def _expire(self, now: int) -> None:
        while self._pending:
            session, p = next(iter(self._pending.items()))
            if p.expires > now:
                break
            del self._pending[session]
