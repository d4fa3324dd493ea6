"""Relaying through a mutual peer, sans-IO: the policy, the relay's session
table with its bandwidth cap, and the message codec.

When no direct path works, A and B send their packets (handshake packets,
then engine packets: ciphertext under keys only A and B hold) to M inside
control messages (``ControlKind.RELAY``); M forwards each to the other side
of the session. M never decrypts: end-to-end encryption is the engine's.
The relayed connection is an ordinary crust connection, so when a direct
path is punched later the same connection moves to it (no message lost or
repeated: the engine's reliability covers datagrams dropped on the way).

Message layout: ``op (1) | session (8) | body``. ``DATA``: body is one
datagram (at most ``MAX_DATAGRAM`` bytes). ``CLOSE``: body is a UTF-8
reason (at most 200 bytes); M sends it when it ends or refuses a session.

Sessions exist at M only for pairs it introduced (:mod:`crust.nat.rendezvous`)
under its policy; each has a token bucket (``RelayPolicy.cap``) and an idle
expiry, and their number is bounded. Over the cap, datagrams are dropped,
which the endpoints' congestion control reads as a slower path.
"""

from __future__ import annotations

import enum
import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from crust.errors import MalformedRelay
from crust.identity import PeerId

__all__ = [
    "MAX_DATAGRAM",
    "MalformedRelay",
    "RelayOp",
    "RelayPolicy",
    "RelayTable",
    "TokenBucket",
    "decode_untrusted",
    "encode",
]

SESSION_LEN = 8
#: Largest relayed datagram: the engine's largest UDP packet fits.
MAX_DATAGRAM = 1500
MAX_REASON = 200
_HEAD = struct.Struct(">B8s")


class RelayOp(enum.IntEnum):
    DATA = 1
    CLOSE = 2


def encode(op: RelayOp, session: bytes, body: bytes) -> bytes:
    if len(session) != SESSION_LEN:
        raise ValueError(f"relay session id must be {SESSION_LEN} bytes, got {len(session)}")
    limit = MAX_DATAGRAM if op is RelayOp.DATA else MAX_REASON
    if len(body) > limit:
        raise ValueError(f"relay {op.name} body of {len(body)} bytes exceeds {limit}")
    return _HEAD.pack(op, session) + body


def decode_untrusted(data: bytes) -> tuple[RelayOp, bytes, bytes]:
    """``(op, session, body)``; raises :class:`MalformedRelay` only."""
    if len(data) < _HEAD.size:
        raise MalformedRelay(f"relay message of {len(data)} bytes is cut short")
    op, session = _HEAD.unpack_from(data)
    try:
        kind = RelayOp(op)
    except ValueError:
        raise MalformedRelay(f"unknown relay op {op}") from None
    body = bytes(data[_HEAD.size :])
    limit = MAX_DATAGRAM if kind is RelayOp.DATA else MAX_REASON
    if len(body) > limit:
        raise MalformedRelay(f"relay {kind.name} body of {len(body)} bytes exceeds {limit}")
    return kind, session, body


@dataclass(frozen=True, slots=True)
class RelayPolicy:
    """Whether this node relays for others, and how much.

    ``mode``: ``"never"`` or ``"allowed"``. ``cap``: bytes per second per
    session (0: no cap); ``burst``: the bucket's depth in bytes.
    ``max_sessions`` bounds the table; ``idle_us`` ends silent sessions.
    """

    mode: str = "allowed"
    cap: int = 0
    burst: int = 256 << 10
    max_sessions: int = 256
    idle_us: int = 120_000_000

    def __post_init__(self) -> None:
        if self.mode not in ("never", "allowed"):
            raise ValueError(f"relay mode must be 'never' or 'allowed', got {self.mode!r}")
        if self.cap < 0:
            raise ValueError(f"relay cap must be >= 0 bytes/s (0: none), got {self.cap}")
        if self.burst < MAX_DATAGRAM:
            raise ValueError(f"relay burst must be >= {MAX_DATAGRAM} bytes, got {self.burst}")
        if self.max_sessions < 1 or self.idle_us <= 0:
            raise ValueError(
                f"relay max_sessions and idle_us must be positive, got "
                f"{self.max_sessions}, {self.idle_us}"
            )

    @property
    def allowed(self) -> bool:
        return self.mode == "allowed"


@dataclass(slots=True)
class TokenBucket:
    """``rate`` bytes per second, at most ``burst`` saved up (rate 0: no limit)."""

    rate: int
    burst: int
    tokens: float = field(default=0.0)
    stamp: int = 0

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self, size: int, now: int) -> bool:
        if not self.rate:
            return True
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate / 1e6)
            self.stamp = now
        if self.tokens < size:
            return False
        self.tokens -= size
        return True


@dataclass(slots=True)
class _Session:
    a: PeerId
    b: PeerId
    bucket: TokenBucket
    last: int
    forwarded: int = 0
    dropped: int = 0


class RelayTable:
    """M's sessions: ``open`` one for an introduced pair, ``forward`` each
    DATA message to the other side (or None: dropped, counted)."""

    def __init__(self, policy: RelayPolicy) -> None:
        self.policy = policy
        self._sessions: OrderedDict[bytes, _Session] = OrderedDict()
        self.forwarded_bytes = 0
        self.dropped_cap = 0
        self.dropped_unknown = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session: object) -> bool:
        return session in self._sessions

    def open(self, session: bytes, a: PeerId, b: PeerId, now: int) -> bool:
        if not self.policy.allowed:
            return False
        self.expire(now)
        if session in self._sessions:
            return False
        while len(self._sessions) >= self.policy.max_sessions:
            self._sessions.popitem(last=False)  # the least recently used
        bucket = TokenBucket(self.policy.cap, self.policy.burst)
        bucket.stamp = now
        self._sessions[session] = _Session(a, b, bucket, now)
        return True

    def forward(self, source: PeerId, session: bytes, size: int, now: int) -> PeerId | None:
        """Where a DATA message of ``size`` bytes from ``source`` goes."""
        s = self._sessions.get(session)
        if s is None or source not in (s.a, s.b):
            self.dropped_unknown += 1
            return None
        if not s.bucket.take(size, now):
            s.dropped += 1
            self.dropped_cap += 1
            return None
        s.last = now
        s.forwarded += size
        self.forwarded_bytes += size
        self._sessions.move_to_end(session)
        return s.b if source == s.a else s.a

    def close_peer(self, peer: PeerId) -> list[tuple[bytes, PeerId]]:
        """``peer`` left: end its sessions. Returns ``(session, other side)``
        pairs to tell."""
        gone = [(k, s) for k, s in self._sessions.items() if peer in (s.a, s.b)]
        for k, _ in gone:
            del self._sessions[k]
        return [(k, s.b if s.a == peer else s.a) for k, s in gone]

    def close(self, session: bytes, source: PeerId) -> PeerId | None:
        """One side ended the session; returns the other side to tell."""
        s = self._sessions.get(session)
        if s is None or source not in (s.a, s.b):
            return None
        del self._sessions[session]
        return s.b if source == s.a else s.a

    def expire(self, now: int) -> None:
        idle = self.policy.idle_us
        for k in [k for k, s in self._sessions.items() if now - s.last > idle]:
            del self._sessions[k]
