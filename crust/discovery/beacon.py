"""The LAN beacon protocol (sans-IO): nodes of one network find each other
on the local link.

A node broadcasts a *query* (IPv4 broadcast and IPv6 multicast, by the
glue in :mod:`crust.asyncio.beacon`) when it starts and then every
``interval`` seconds; every node that hears it learns the sender and sends
a *reply* by unicast, so a newcomer learns the whole link within one round
trip, and the others learn it from its query. Every message::

    0   magic  b"CRB" + version 1
    4   type   1 = query (asks for replies), 3 = reply
    5   flags  0 (reserved; ignored)
    6   network tag: BLAKE2b-64 of the network name (the name stays private)
    14  node key: the sender's Ed25519 public key (its peer id)
    46  nonce: random in a query, echoed in the reply to it
    54  endpoint count + endpoints (crust.discovery.endpoints)
    ..  zero padding
    -64 Ed25519 signature by the node key over b"crust-beacon-v1" + all the
        bytes before it

Why it is safe to answer on a broadcast domain:

- Nothing unsigned is believed: a forged message cannot add an address for
  a peer id (and the handshake authenticates the peer again anyway). A
  replayed query only repeats what its signer announced.
- No amplification: a reply is never larger than the query it answers
  (endpoints are dropped to fit; no reply if none fit). Queries are padded
  to :data:`QUERY_SIZE` so real replies fit; replies go to the query's
  source only, rate-limited per source address and in total.
- Signature checks cost CPU, so they are budgeted per second; everything
  cheaper (size, magic, network tag) is checked first. Malformed, foreign
  and over-budget packets are dropped and counted in :attr:`Beacon.stats`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crust.discovery.endpoints import (
    Endpoint,
    decode_endpoints,
    encode_endpoints,
    resolve_unspecified,
)
from crust.events import LanPeerFound
from crust.identity import Identity, InvalidPeerId, PeerId

__all__ = [
    "DEFAULT_PORT",
    "MAX_ENDPOINTS",
    "QUERY_SIZE",
    "Beacon",
    "LanPeer",
    "network_tag",
    "parse_untrusted",
]

logger = logging.getLogger(__name__)

DEFAULT_PORT = 5483
MAGIC = b"CRB\x01"
QUERY = 1
REPLY = 3
HEADER = 54
SIG_LEN = 64
MAX_ENDPOINTS = 8
#: Every query is padded to this size, so a reply with up to eight IPv6
#: endpoints (54 + 1 + 8 * 19 + 64 = 271 bytes) still fits under it.
QUERY_SIZE = 288
MAX_PACKET = 1200
_DOMAIN = b"crust-beacon-v1"
#: How many senders the rate limiter and the peer table remember.
_TABLE = 1024


def network_tag(network: str) -> bytes:
    """The 8-byte tag a beacon carries instead of the network name."""
    return hashlib.blake2b(network.encode(), digest_size=8, person=b"crust-beacon").digest()


@dataclass(frozen=True, slots=True)
class Message:
    """A parsed, signature-checked beacon message."""

    kind: int
    tag: bytes
    peer_id: PeerId
    nonce: bytes
    endpoints: list[Endpoint]


@dataclass(slots=True)
class LanPeer:
    """A node the beacon heard: its endpoints and when (``now`` units)."""

    peer_id: PeerId
    endpoints: tuple[Endpoint, ...]
    last_seen: float


class _Bucket:
    """A token bucket: ``rate`` per second, at most ``burst`` saved up."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


def parse_untrusted(data: bytes) -> Message:
    """Parse and verify one beacon datagram; ValueError (saying why) for
    anything malformed or badly signed. Never raises anything else."""
    if not HEADER + 1 + SIG_LEN <= len(data) <= MAX_PACKET:
        raise ValueError(f"size {len(data)} out of range")
    if data[:4] != MAGIC:
        raise ValueError("bad magic")
    kind = data[4]
    if kind not in (QUERY, REPLY):
        raise ValueError(f"unknown type {kind}")
    body_end = len(data) - SIG_LEN
    endpoints, pos = decode_endpoints(data[:body_end], HEADER, MAX_ENDPOINTS)
    if any(data[pos:body_end]):
        raise ValueError("non-zero padding")
    try:
        peer_id = PeerId(bytes(data[14:46]))
    except InvalidPeerId as exc:
        raise ValueError(f"bad node key: {exc}") from None
    if not peer_id.verify(_DOMAIN + bytes(data[:body_end]), bytes(data[body_end:])):
        raise ValueError("bad signature")
    return Message(kind, bytes(data[6:14]), peer_id, bytes(data[46:54]), endpoints)


def _tag_of(data: bytes) -> bytes | None:
    """The network tag, when the datagram is long enough to have one."""
    return bytes(data[6:14]) if len(data) >= 14 and data[:4] == MAGIC else None


class Beacon:
    """One node's beacon: feed it datagrams and timer ticks, send what it
    returns. ``now`` is in seconds on any monotonic clock.

    ``datagrams_to_send`` yields ``(data, None)`` for a query the glue must
    broadcast on every interface, ``(data, address)`` for a unicast reply.
    ``next_event`` yields :class:`~crust.events.LanPeerFound` for each node
    newly heard (or heard again after expiring, or with new endpoints).
    """

    def __init__(
        self,
        identity: Identity,
        network: str,
        *,
        now: float,
        endpoints: list[Endpoint] | None = None,
        interval: float = 5.0,
        expiry: float | None = None,
        reply_rate: float = 2.0,
        total_reply_rate: float = 50.0,
        verify_rate: float = 500.0,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 s, got {interval}")
        self.identity = identity
        self.tag = network_tag(network)
        self.interval = interval
        #: A node not heard for this long is dropped from :meth:`peers`.
        self.expiry = expiry if expiry is not None else 3.5 * interval
        self._rng = rng
        self._jitter = random.Random(rng(8))
        self._endpoints: list[Endpoint] = []
        self.set_endpoints(endpoints or [])
        self._reply_rate = reply_rate
        self._per_source: OrderedDict[str, _Bucket] = OrderedDict()
        self._total = _Bucket(total_reply_rate, total_reply_rate, now)
        self._verify = _Bucket(verify_rate, verify_rate, now)
        self._peers: OrderedDict[PeerId, LanPeer] = OrderedDict()
        self._out: list[tuple[bytes, tuple[str, int] | None]] = []
        self._events: list[LanPeerFound] = []
        # A few quick queries at the start (a broadcast can be lost, and an
        # interface may still be coming up), then the steady interval.
        self._schedule = [0.0, 0.3, 1.0]
        self._next_query: float | None = now
        self._started = now
        self.stats: dict[str, int] = {
            "rx": 0,
            "malformed": 0,
            "foreign": 0,
            "own": 0,
            "rate_limited": 0,
            "queries_sent": 0,
            "replies_sent": 0,
            "replies_too_big": 0,
        }

    # -- configuration --------------------------------------------------------

    def set_endpoints(self, endpoints: list[Endpoint]) -> None:
        """The listening endpoints to announce (at most eight)."""
        eps = list(dict.fromkeys(endpoints))[:MAX_ENDPOINTS]
        encode_endpoints(eps)  # validates now rather than at send time
        self._endpoints = eps

    # -- sans-IO interface ---------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """Handle one datagram from ``addr`` (any port, any family)."""
        self.stats["rx"] += 1
        tag = _tag_of(data)
        if tag is None or not HEADER + 1 + SIG_LEN <= len(data) <= MAX_PACKET:
            self.stats["malformed"] += 1
            return
        if tag != self.tag:
            self.stats["foreign"] += 1
            return
        if bytes(data[14:46]) == bytes(self.identity.peer_id):
            self.stats["own"] += 1  # our own multicast looped back
            return
        if not self._verify.take(now):
            self.stats["rate_limited"] += 1
            return
        try:
            msg = parse_untrusted(data)
        except ValueError as exc:
            logger.debug("beacon from %s dropped: %s", addr[0], exc)
            self.stats["malformed"] += 1
            return
        self._learn(msg, addr[0], now)
        if msg.kind == QUERY:
            self._answer(msg, len(data), addr, now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int] | None]]:
        """Datagrams to send now: ``(data, None)`` is a broadcast query."""
        if self._next_query is not None and now >= self._next_query:
            self.send_query(now)
        out, self._out = self._out, []
        return out

    def send_query(self, now: float) -> None:
        """Queue a query now and restart the interval (e.g. after the
        listening endpoints changed)."""
        self._out.append((self._build(QUERY, self._rng(8), self._endpoints, QUERY_SIZE), None))
        self.stats["queries_sent"] += 1
        if self._schedule:
            self._schedule.pop(0)
        if self._schedule:
            self._next_query = self._started + self._schedule[0]
        else:
            # +-10 % jitter keeps nodes started together from querying in step.
            self._next_query = now + self.interval * self._jitter.uniform(0.9, 1.1)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` (then :meth:`datagrams_to_send`) is due."""
        return self._next_query

    def handle_timer(self, now: float) -> None:
        if self._next_query is not None and now >= self._next_query:
            self.send_query(now)
        self._expire(now)

    def next_event(self) -> LanPeerFound | None:
        return self._events.pop(0) if self._events else None

    def lan_peer(self, peer_id: PeerId) -> LanPeer | None:
        """What the beacon last heard from ``peer_id`` (expired or not)."""
        return self._peers.get(peer_id)

    def peers(self, now: float) -> list[LanPeer]:
        """Nodes heard within ``expiry``, most recently heard last."""
        self._expire(now)
        return list(self._peers.values())

    # -- internals -------------------------------------------------------------------

    def _build(self, kind: int, nonce: bytes, endpoints: list[Endpoint], pad_to: int) -> bytes:
        body = (
            MAGIC
            + bytes((kind, 0))
            + self.tag
            + bytes(self.identity.peer_id)
            + nonce
            + encode_endpoints(endpoints)
        )
        body += bytes(max(0, pad_to - SIG_LEN - len(body)))
        return body + self.identity.sign(_DOMAIN + body)

    def _learn(self, msg: Message, source: str, now: float) -> None:
        endpoints = tuple(resolve_unspecified(msg.endpoints, source))
        known = self._peers.pop(msg.peer_id, None)
        self._peers[msg.peer_id] = LanPeer(msg.peer_id, endpoints, now)
        if known is None or known.endpoints != endpoints:
            self._events.append(LanPeerFound(msg.peer_id, endpoints))
        while len(self._peers) > _TABLE:
            self._peers.popitem(last=False)

    def _answer(self, query: Message, query_len: int, addr: tuple[str, int], now: float) -> None:
        bucket = self._per_source.pop(addr[0], None) or _Bucket(
            self._reply_rate, 2 * self._reply_rate, now
        )
        self._per_source[addr[0]] = bucket
        while len(self._per_source) > _TABLE:
            self._per_source.popitem(last=False)
        if not bucket.take(now) or not self._total.take(now):
            self.stats["rate_limited"] += 1
            return
        endpoints = list(self._endpoints)
        reply = self._build(REPLY, query.nonce, endpoints, 0)
        while len(reply) > query_len and endpoints:
            endpoints.pop()
            reply = self._build(REPLY, query.nonce, endpoints, 0)
        if len(reply) > query_len:
            self.stats["replies_too_big"] += 1
            return
        self._out.append((reply, addr))
        self.stats["replies_sent"] += 1

    def _expire(self, now: float) -> None:
        while self._peers:
            oldest = next(iter(self._peers.values()))
            if now - oldest.last_seen <= self.expiry:
                break
            del self._peers[oldest.peer_id]
