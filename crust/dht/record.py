"""A node's endpoint record, as stored in the Mainline DHT (BEP 44), sans-IO.

A crust peer id is an Ed25519 public key, and BEP 44 stores small mutable
values signed by such a key. A node that opts in (``ServiceConfig.dht``)
stores, under its own key and a per-network salt, a record saying where it
can be reached:

- ``a``: endpoints, each 6 bytes (IPv4 + port) or 18 bytes (IPv6 + port):
  its listening, reflexive and port-mapped addresses;
- ``c``: "home" contacts, each a 32-byte peer id then an address: nodes
  that keep a connection to it and can introduce it (rendezvous);
- ``q``: crust's own sequence number, monotonic across restarts;
- ``t``: when it was made (Unix seconds) and ``x``: for how many seconds
  it holds;
- ``v``: the format version (1).

The BEP 44 value ``v`` is that dictionary's bencoding as a *string* (what
libtorrent's Python binding puts), and the signature covers BEP 44's
``salt``/``seq``/``v`` layout. BEP 44's own ``seq`` belongs to the DHT
(libtorrent puts one more than what it finds stored, so it restarts when the
DHT forgot the item); replay protection therefore rests on ``q``, which is
inside the signed value. An empty record (no endpoints, no contacts) is a
withdrawal.

:func:`verify` trusts nothing: it checks the key is the one asked for, the
salt, the size, the signature, the canonical encoding and every field, the
expiry, and that ``q`` is not lower than one already seen. A record only
says where to try: the Noise handshake still authenticates the peer.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions

from crust.dht import bencode
from crust.errors import RecordError
from crust.identity import Identity, InvalidPeerId, PeerId
from crust.wire import Address

__all__ = [
    "MAX_CONTACTS",
    "MAX_ENDPOINTS",
    "MAX_VALUE",
    "Contact",
    "Record",
    "RecordError",
    "SignedItem",
    "expanded_secret",
    "network_salt",
    "sign",
    "signed_buffer",
    "verify",
]


#: BEP 44: a value's bencoding is at most 1000 bytes.
MAX_VALUE = 1000
#: At most this many endpoints and contacts are published (and accepted):
#: they bound what a record can make a resolver dial.
MAX_ENDPOINTS = 16
MAX_CONTACTS = 8
#: A record holds at most a day; one from further in the future than this
#: (clock skew) is refused.
MAX_TTL = 86_400
MAX_SKEW = 300
FORMAT = 1


@dataclass(frozen=True)
class Contact:
    """A node that keeps a link to the record's owner and can introduce it."""

    peer_id: PeerId
    address: Address


@dataclass(frozen=True)
class Record:
    """What a record says (see the module docstring)."""

    endpoints: tuple[Address, ...]
    contacts: tuple[Contact, ...]
    seq: int
    issued: int
    ttl: int

    @property
    def expires(self) -> int:
        """Unix time after which the record is not used."""
        return self.issued + self.ttl

    @property
    def withdrawn(self) -> bool:
        """True for the empty record a node publishes when it shuts down."""
        return not self.endpoints and not self.contacts

    def encode(self) -> bytes:
        """The bencoded dictionary (the string BEP 44's ``v`` holds)."""
        if len(self.endpoints) > MAX_ENDPOINTS or len(self.contacts) > MAX_CONTACTS:
            raise ValueError("too many endpoints or contacts")
        d: dict[bytes, bencode.Value] = {
            b"a": [_pack(a) for a in self.endpoints],
            b"c": [bytes(c.peer_id) + _pack(c.address) for c in self.contacts],
            b"q": self.seq,
            b"t": self.issued,
            b"v": FORMAT,
            b"x": self.ttl,
        }
        return bencode.encode(d)

    def value(self) -> bytes:
        """BEP 44's ``v``: the encoding above, bencoded as a string."""
        inner = self.encode()
        return b"%d:%s" % (len(inner), inner)


@dataclass(frozen=True)
class SignedItem:
    """A BEP 44 mutable item as it came from the DHT (every field the
    network's)."""

    key: bytes
    salt: bytes
    seq: int
    value: bytes  # the bencoded v
    signature: bytes


def network_salt(network: str) -> bytes:
    """The BEP 44 salt of a network's records: nodes of different crust
    networks (or other applications using the same key) never see each
    other's records."""
    return b"crust1" + hashlib.blake2b(network.encode(), digest_size=16).digest()


def expanded_secret(seed: bytes) -> bytes:
    """The 64-byte "expanded" Ed25519 secret libtorrent signs with: SHA-512
    of the 32-byte seed, the scalar half clamped (RFC 8032 5.1.5)."""
    h = bytearray(hashlib.sha512(bytes(seed)).digest())
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


def signed_buffer(salt: bytes, seq: int, value: bytes) -> bytes:
    """What BEP 44 signs: ``4:salt<len>:<salt>3:seqi<seq>e1:v<v>`` (the
    salt part only when there is one)."""
    head = b"4:salt%d:%s" % (len(salt), salt) if salt else b""
    return head + b"3:seqi%de1:v" % seq + value


def sign(identity: Identity, salt: bytes, seq: int, value: bytes) -> bytes:
    """BEP 44's signature of ``value`` at ``seq`` (libtorrent computes the
    same bytes when it puts; tests and tools use this one)."""
    return identity.sign(signed_buffer(salt, seq, value))


def _pack(addr: Address) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    return ip.packed + int(addr[1]).to_bytes(2, "big")


def _unpack(raw: bytes) -> Address:
    if len(raw) not in (6, 18):
        raise RecordError("malformed", f"an address is 6 or 18 bytes, got {len(raw)}")
    port = int.from_bytes(raw[-2:], "big")
    if port == 0:
        raise RecordError("malformed", "port 0")
    ip = ipaddress.ip_address(raw[:-2])
    if ip.is_unspecified or ip.is_multicast:
        raise RecordError("malformed", f"address {ip} cannot be dialled")
    return str(ip), port


def _field_int(d: dict[bytes, bencode.Value], key: bytes, lo: int, hi: int) -> int:
    v = d.get(key)
    if not isinstance(v, int) or not lo <= v <= hi:
        raise RecordError("malformed", f"field {key.decode()} must be an integer in {lo}..{hi}")
    return v


def _field_list(d: dict[bytes, bencode.Value], key: bytes, most: int) -> list[bytes]:
    v = d.get(key)
    if not isinstance(v, list) or not all(isinstance(x, bytes) for x in v):
        raise RecordError("malformed", f"field {key.decode()} must be a list of strings")
    if len(v) > most:
        raise RecordError("malformed", f"field {key.decode()} has more than {most} entries")
    return [x for x in v if isinstance(x, bytes)]


def decode_value(value: bytes) -> Record:
    """The record a BEP 44 ``v`` holds (no signature check: see
    :func:`verify`); :class:`RecordError` ``malformed`` otherwise."""
    try:
        outer = bencode.decode(value)
        if not isinstance(outer, bytes):
            raise RecordError("malformed", "v is not a string")
        d = bencode.decode(outer)
    except bencode.BencodeError as exc:
        raise RecordError("malformed", str(exc)) from None
    if not isinstance(d, dict):
        raise RecordError("malformed", "not a dictionary")
    if set(d) != {b"a", b"c", b"q", b"t", b"v", b"x"}:
        raise RecordError("malformed", f"fields {sorted(k.decode('latin-1') for k in d)}")
    if d[b"v"] != FORMAT:
        raise RecordError("malformed", f"format {d[b'v']!r}, this crust reads {FORMAT}")
    endpoints = tuple(_unpack(a) for a in _field_list(d, b"a", MAX_ENDPOINTS))
    if len(set(endpoints)) != len(endpoints):
        raise RecordError("malformed", "an endpoint is listed twice")
    contacts: list[Contact] = []
    for raw in _field_list(d, b"c", MAX_CONTACTS):
        try:
            pid = PeerId(raw[:32])
        except InvalidPeerId as exc:
            raise RecordError("malformed", f"contact id: {exc}") from None
        contacts.append(Contact(pid, _unpack(raw[32:])))
    return Record(
        endpoints=endpoints,
        contacts=tuple(contacts),
        seq=_field_int(d, b"q", 0, (1 << 63) - 1),
        issued=_field_int(d, b"t", 0, (1 << 40)),
        ttl=_field_int(d, b"x", 1, MAX_TTL),
    )


def verify(
    item: SignedItem,
    *,
    peer_id: PeerId,
    salt: bytes,
    now: float,
    seen_seq: int | None = None,
) -> Record:
    """The record in ``item`` if it is ``peer_id``'s, for ``salt``, within
    size, correctly signed, well formed, current, and not older than
    ``seen_seq`` (the highest ``q`` already accepted for this peer); else
    :class:`RecordError` saying which check failed. Checked in order of
    cost, the signature before the content is parsed."""
    if bytes(item.key) != bytes(peer_id):
        raise RecordError("key", f"item is for key {bytes(item.key).hex()[:16]}…, not {peer_id}")
    if bytes(item.salt) != salt:
        raise RecordError("salt", "item stored under another salt (another network?)")
    if len(item.value) > MAX_VALUE:
        raise RecordError("size", f"value is {len(item.value)} bytes, BEP 44 allows {MAX_VALUE}")
    if not 0 <= item.seq < 1 << 63:
        raise RecordError("malformed", f"BEP 44 seq {item.seq} out of range")
    if len(item.signature) != 64:
        raise RecordError("signature", f"signature is {len(item.signature)} bytes")
    try:
        sodium.crypto_sign_open(
            bytes(item.signature) + signed_buffer(salt, item.seq, bytes(item.value)),
            bytes(peer_id),
        )
    except nacl.exceptions.CryptoError:
        raise RecordError("signature", "not signed by the peer's key") from None
    record = decode_value(bytes(item.value))
    if record.issued > now + MAX_SKEW:
        raise RecordError("future", f"issued {record.issued - now:.0f} s in the future")
    if record.expires < now:
        raise RecordError("expired", f"expired {now - record.expires:.0f} s ago")
    if seen_seq is not None and record.seq < seen_seq:
        raise RecordError("replayed", f"sequence {record.seq} is older than {seen_seq} seen")
    return record
