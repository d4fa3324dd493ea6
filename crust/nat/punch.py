"""UDP hole punching, sans-IO: authenticated punch packets, their schedule,
and which address answered.

Two peers that learned each other's candidate addresses through a mutual
peer (:mod:`crust.nat.rendezvous`) each run one :class:`PunchSession` from
their listening UDP socket at about the same time. Each sends punch packets
to every candidate of the other, with retries, until a punch from the other
side arrives that proves ours arrived too; the address that punch came from
is the path. The normal handshake then runs over it.

Packet layout (a long header with the network's version and tag, so the C
endpoint hands it up to Python like a handshake packet)::

    0     1        2..5         6..13    14     15..18  19..22  23..38
    0xC6  version  network tag  session  flags  seq     echo    mac

    flags: bit 0 = sent by the responder (the side that did not ask);
    seq: the sender's counter (from 1); echo: the highest seq the sender
    has received from us (0: none yet), so a punch with echo > 0 proves that
    our packets reach the sender. mac = BLAKE2b-128(key, bytes 0..22).

The key comes from the rendezvous exchange (a static-static X25519 secret
and both sides' fresh nonces), which the mutual peer cannot compute: nobody
else can make a punch that counts, so nobody can steer the path elsewhere.
A replayed punch from a foreign address at worst adds an address whose
handshake (pinned to the peer's id) then fails.

Low TTL: NATs without a drop-unsolicited firewall deliver a packet that
arrives before we sent anything to the NAT box itself, which leaves a
conntrack entry that makes our own punch get a new public port (lab notes:
"simultaneous-start trap"). So the first punches go out with a small IP TTL:
they open our NAT's mapping and die before the far NAT. Full-TTL punches
start once ``low_ttl_us`` has passed.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import random
import struct
from dataclasses import dataclass

from crust.wire import DST_CID, LONG_HEADER_FLAGS
from crust.wire import Address as Addr

__all__ = [
    "PACKET_LEN",
    "TYPE_PUNCH",
    "PunchConfig",
    "PunchSession",
    "PunchState",
    "is_punch",
    "punch_session_id",
]

#: Long-header type of punch packets (handshake.py uses 1..5).
TYPE_PUNCH = 6
_FLAGS = LONG_HEADER_FLAGS | TYPE_PUNCH
_HEAD = struct.Struct(">BB4s8sBII")
_MAC_LEN = 16
PACKET_LEN = _HEAD.size + _MAC_LEN
_RESPONDER = 0x01
SESSION_LEN = 8
KEY_LEN = 32


def is_punch(data: bytes) -> bool:
    """Whether a datagram claims to be a punch packet (not yet verified)."""
    return len(data) == PACKET_LEN and data[0] == _FLAGS


def punch_session_id(data: bytes) -> bytes:
    """The session id of a datagram for which :func:`is_punch` is true."""
    return bytes(data[DST_CID])


@dataclass(frozen=True, slots=True)
class PunchConfig:
    """Timing of one punch session (microseconds).

    ``interval_us``: time between two rounds (one punch to every candidate),
    jittered by +-25% so two sides never settle into lockstep.
    ``low_ttl``/``low_ttl_us``: the IP TTL of punches sent during the first
    ``low_ttl_us`` (0 disables). ``timeout_us``: give up after this long.
    ``linger_rounds``: rounds still sent after success, so that the other
    side also sees a punch that echoes it. ``burst``: candidates punched per
    round, cycling through them (0: all of them every round); birthday
    probing of a symmetric NAT's ports uses it to bound the packet rate.
    """

    interval_us: int = 40_000
    low_ttl: int = 2
    low_ttl_us: int = 120_000
    timeout_us: int = 3_000_000
    linger_rounds: int = 3
    max_candidates: int = 16
    burst: int = 0

    def __post_init__(self) -> None:
        if not 1_000 <= self.interval_us <= 10_000_000:
            raise ValueError(f"PunchConfig.interval_us must be 1 ms..10 s, got {self.interval_us}")
        if not 1 <= self.low_ttl <= 255:
            raise ValueError(f"PunchConfig.low_ttl must be 1..255, got {self.low_ttl}")
        if self.low_ttl_us < 0 or self.timeout_us <= 0:
            raise ValueError(
                f"PunchConfig times must be positive, got low_ttl_us={self.low_ttl_us}, "
                f"timeout_us={self.timeout_us}"
            )
        if not 0 <= self.linger_rounds <= 100:
            raise ValueError(f"PunchConfig.linger_rounds must be 0..100, got {self.linger_rounds}")
        if not 1 <= self.max_candidates <= 65536:
            raise ValueError(
                f"PunchConfig.max_candidates must be 1..65536, got {self.max_candidates}"
            )
        if not 0 <= self.burst <= 2048:
            raise ValueError(f"PunchConfig.burst must be 0..2048, got {self.burst}")


class PunchState(enum.Enum):
    PUNCHING = "punching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PunchSession:
    """One side of one punch attempt.

    ``datagrams_to_send(now)`` returns ``(data, addr, ttl)`` triples (``ttl``
    None: the socket's default); feed received punches of this session to
    ``receive_datagram``. ``state`` ends SUCCEEDED with ``address`` (where
    the peer's proving punch came from) or FAILED with ``error``.
    """

    def __init__(
        self,
        *,
        key: bytes,
        session: bytes,
        responder: bool,
        candidates: list[Addr],
        prefix: bytes,
        now: int,
        config: PunchConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(key) != KEY_LEN:
            raise ValueError(f"punch key must be {KEY_LEN} bytes, got {len(key)}")
        if len(session) != SESSION_LEN:
            raise ValueError(f"punch session id must be {SESSION_LEN} bytes, got {len(session)}")
        if len(prefix) != 5:
            raise ValueError(f"long header prefix must be 5 bytes, got {len(prefix)}")
        self.config = config or PunchConfig()
        self.key = key
        self.session = session
        self.responder = responder
        # Order kept, duplicates dropped, bounded: candidates come from a peer.
        self.candidates: list[Addr] = list(dict.fromkeys(candidates))[: self.config.max_candidates]
        if not self.candidates:
            raise ValueError("a punch session needs at least one candidate address")
        self._prefix = prefix
        self._rng = rng or random.Random()
        self.started = now
        self.state = PunchState.PUNCHING
        self.address: Addr | None = None
        self.error: str | None = None
        #: When the proving punch arrived (for connect-time figures).
        self.succeeded_at: int | None = None
        self._seq = 0
        self._echo = 0  # highest seq heard from the peer
        self._heard_from: Addr | None = None
        self._next_round = now
        self._linger = 0
        self._cursor = 0
        self.rejected = 0
        self.sent = 0

    # -- sans-IO verbs -------------------------------------------------------

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr, int | None]]:
        if now < self._next_round:
            return []
        cfg = self.config
        if self.state is PunchState.PUNCHING:
            if now - self.started >= cfg.timeout_us:
                self._fail(
                    f"no authenticated punch from any of {len(self.candidates)} "
                    f"candidates within {cfg.timeout_us / 1e6:g} s"
                )
                return []
            targets = self.candidates
            if cfg.burst and cfg.burst < len(targets):
                start = self._cursor
                targets = [targets[(start + i) % len(targets)] for i in range(cfg.burst)]
                self._cursor = (start + cfg.burst) % len(self.candidates)
            low = cfg.low_ttl_us and now - self.started < cfg.low_ttl_us
            # Once the peer was heard, answer where it is, at full TTL.
            if self._heard_from is not None:
                targets, low = [self._heard_from], False
        elif self.state is PunchState.SUCCEEDED and self._linger > 0:
            self._linger -= 1
            assert self.address is not None
            targets, low = [self.address], False
        else:
            return []
        ttl = cfg.low_ttl if low else None
        out = [(self._packet(), addr, ttl) for addr in targets]
        self.sent += len(out)
        jitter = self._rng.uniform(0.75, 1.25)
        self._next_round = now + int(cfg.interval_us * jitter)
        return out

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> bool:
        """Feed one datagram of this session. Returns whether it was an
        authentic punch from the peer (anything else is counted in
        ``rejected`` and ignored)."""
        if not is_punch(data) or punch_session_id(data) != self.session:
            self.rejected += 1
            return False
        head = bytes(data[: _HEAD.size])
        mac = hashlib.blake2b(head, digest_size=_MAC_LEN, key=self.key).digest()
        if not hmac.compare_digest(mac, bytes(data[_HEAD.size :])):
            self.rejected += 1
            return False
        _, _, _, _, flags, seq, echo = _HEAD.unpack(head)
        # Our own packets reflected back (or sent to ourselves) do not count.
        if bool(flags & _RESPONDER) == self.responder or seq == 0 or echo > self._seq:
            self.rejected += 1
            return False
        self._echo = max(self._echo, seq)
        if self._heard_from is None:
            self._heard_from = addr
            self._next_round = now  # answer at once
        if echo and self.state is PunchState.PUNCHING:
            self.state = PunchState.SUCCEEDED
            self.address = addr
            self.succeeded_at = now
            self._linger = self.config.linger_rounds
            self._next_round = now
        return True

    def get_timer(self) -> int | None:
        if self.state is PunchState.PUNCHING:
            return min(self._next_round, self.started + self.config.timeout_us)
        if self.state is PunchState.SUCCEEDED and self._linger > 0:
            return self._next_round
        return None

    def handle_timer(self, now: int) -> None:
        if self.state is PunchState.PUNCHING and now - self.started >= self.config.timeout_us:
            self._fail(
                f"no authenticated punch from any of {len(self.candidates)} "
                f"candidates within {self.config.timeout_us / 1e6:g} s"
            )

    def cancel(self, why: str) -> None:
        if self.state is PunchState.PUNCHING:
            self._fail(why)
        self._linger = 0

    # -- internals -----------------------------------------------------------

    def _fail(self, why: str) -> None:
        self.state = PunchState.FAILED
        self.error = why

    def _packet(self) -> bytes:
        self._seq += 1
        head = _HEAD.pack(
            _FLAGS,
            self._prefix[0],
            self._prefix[1:5],
            self.session,
            _RESPONDER if self.responder else 0,
            self._seq,
            self._echo,
        )
        return head + hashlib.blake2b(head, digest_size=_MAC_LEN, key=self.key).digest()
