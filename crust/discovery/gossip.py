"""Contact gossip (sans-IO): connected peers tell each other which peers
they reach directly, so a node learns of nodes several hops away.

A gossip message is the payload of a ``ControlKind.GOSSIP`` control
message on an established connection::

    0   version 1
    1   network tag (8 bytes, as in the beacon)
    9   sender key (32): must be the peer at the other end
    41  sequence (8, big-endian): increases per message; older ones dropped
    49  the sender's own listening endpoints (count + endpoints, <= 8)
    ..  contact count (<= MAX_CONTACTS), then per contact:
        key (32) + endpoints (count + endpoints, <= 4)
    -64 Ed25519 signature by the sender over b"crust-gossip-v1" + the rest

The connection is already authenticated; the signature makes a list
attributable on its own (it can be logged, forwarded or cached as
evidence) and binds it to the network. Lists are bounded in entries and
bytes, receivers rate-limit each sender, and a learned contact is only a
hint: it enters the bootstrap cache after a connection to it succeeded.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from crust.discovery.beacon import network_tag
from crust.discovery.endpoints import Endpoint, decode_endpoints, encode_endpoints
from crust.identity import Identity, InvalidPeerId, PeerId

__all__ = [
    "MAX_CONTACTS",
    "MAX_GOSSIP_SIZE",
    "GossipMessage",
    "GossipReceiver",
    "encode_gossip",
    "parse_gossip_untrusted",
]

VERSION = 1
MAX_CONTACTS = 16
MAX_SELF_ENDPOINTS = 8
MAX_CONTACT_ENDPOINTS = 4
#: 49 + (1 + 8*19) + 1 + 16 * (32 + 1 + 4*19) + 64 = 2011 bytes at most.
MAX_GOSSIP_SIZE = 2048
_DOMAIN = b"crust-gossip-v1"
_SIG = 64


@dataclass(frozen=True, slots=True)
class GossipMessage:
    sender: PeerId
    sequence: int
    endpoints: list[Endpoint]
    contacts: list[tuple[PeerId, list[Endpoint]]]


@functools.lru_cache(maxsize=4096)
def _peer_id(key: bytes) -> PeerId:
    """PeerId(key), memoised: the same contacts arrive again and again, and
    checking a key (its X25519 form) costs more than parsing the rest."""
    return PeerId(key)


def encode_gossip(
    identity: Identity,
    network: str,
    sequence: int,
    endpoints: list[Endpoint],
    contacts: list[tuple[PeerId, list[Endpoint]]],
) -> bytes:
    """A signed gossip payload; extra endpoints and contacts are cut to the
    limits (callers pass the most useful first)."""
    body = bytearray([VERSION])
    body += network_tag(network)
    body += bytes(identity.peer_id)
    body += struct.pack(">Q", sequence)
    body += encode_endpoints(endpoints[:MAX_SELF_ENDPOINTS])
    chosen = [(p, eps[:MAX_CONTACT_ENDPOINTS]) for p, eps in contacts if eps][:MAX_CONTACTS]
    body.append(len(chosen))
    for pid, eps in chosen:
        body += bytes(pid)
        body += encode_endpoints(eps)
    return bytes(body) + identity.sign(_DOMAIN + bytes(body))


def parse_gossip_untrusted(payload: bytes, sender: PeerId, network: str) -> GossipMessage:
    """Parse and verify a gossip payload received from ``sender``;
    ValueError (saying why) for anything wrong, nothing else raised."""
    n = len(payload)
    if not 49 + 1 + 1 + _SIG <= n <= MAX_GOSSIP_SIZE:
        raise ValueError(f"gossip of {n} bytes is out of range")
    if payload[0] != VERSION:
        raise ValueError(f"unknown gossip version {payload[0]}")
    if bytes(payload[1:9]) != network_tag(network):
        raise ValueError("gossip for another network")
    if bytes(payload[9:41]) != bytes(sender):
        raise ValueError("gossip signed by someone other than the connected peer")
    body = bytes(payload[: n - _SIG])
    if not sender.verify(_DOMAIN + body, bytes(payload[n - _SIG :])):
        raise ValueError("bad gossip signature")
    (sequence,) = struct.unpack_from(">Q", body, 41)
    endpoints, pos = decode_endpoints(body, 49, MAX_SELF_ENDPOINTS)
    if pos >= len(body):
        raise ValueError("contact count missing")
    count = body[pos]
    if count > MAX_CONTACTS:
        raise ValueError(f"{count} contacts, more than {MAX_CONTACTS}")
    pos += 1
    contacts: list[tuple[PeerId, list[Endpoint]]] = []
    for _ in range(count):
        if pos + 32 > len(body):
            raise ValueError("truncated contact")
        try:
            pid = _peer_id(body[pos : pos + 32])
        except InvalidPeerId as exc:
            raise ValueError(f"bad contact key: {exc}") from None
        eps, pos = decode_endpoints(body, pos + 32, MAX_CONTACT_ENDPOINTS)
        contacts.append((pid, eps))
    if pos != len(body):
        raise ValueError(f"{len(body) - pos} trailing bytes")
    return GossipMessage(sender, sequence, endpoints, contacts)


class GossipReceiver:
    """Per-sender acceptance: at most ``burst`` messages, refilled at one
    per ``min_interval`` seconds, and only increasing sequence numbers.
    The table is bounded by the number of connected peers (call
    :meth:`forget` when one goes)."""

    def __init__(self, network: str, *, min_interval: float = 1.0, burst: int = 3) -> None:
        self.network = network
        self.min_interval = min_interval
        self.burst = burst
        self._state: dict[PeerId, tuple[float, float, int]] = {}  # tokens, stamp, last seq
        self.stats = {"accepted": 0, "rate_limited": 0, "stale": 0}

    def receive(self, sender: PeerId, payload: bytes, now: float) -> GossipMessage | None:
        """The verified message, or None when rate-limited or stale.
        Raises ValueError for a malformed or forged one (misbehaviour)."""
        tokens, stamp, last_seq = self._state.get(sender, (float(self.burst), now, -1))
        tokens = min(float(self.burst), tokens + (now - stamp) / self.min_interval)
        if tokens < 1.0:
            self._state[sender] = (tokens, now, last_seq)
            self.stats["rate_limited"] += 1
            return None
        msg = parse_gossip_untrusted(payload, sender, self.network)
        if msg.sequence <= last_seq:
            self._state[sender] = (tokens, now, last_seq)
            self.stats["stale"] += 1
            return None
        self._state[sender] = (tokens - 1.0, now, msg.sequence)
        self.stats["accepted"] += 1
        return msg

    def forget(self, sender: PeerId) -> None:
        self._state.pop(sender, None)
