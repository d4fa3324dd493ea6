"""crust's handshake: Noise XX or IK over datagrams, sans-IO.

An :class:`Initiator` (one per outgoing connection) and a :class:`Responder`
(one per listener) exchange "long header" packets until both hold a
:class:`HandshakeResult`: the authenticated peer id, the connection ids and
the packet keys for ``crust._core.Connection.set_keys``. Nothing here reads
a clock or touches a socket: ``now`` (monotonic microseconds, as in the
engine) and the peer address are passed in, datagrams are returned.

Patterns. XX (1.5 round trips) when the initiator does not know who is at
the address; IK (one round trip) when it knows the responder's PeerId. The
Noise static key is the X25519 form of the Ed25519 identity, and every
payload carries the sender's Ed25519 key, which must map to the Noise
static: that binds the peer id (docs/design/0007-handshake.md).

Packet layout (all integers big-endian)::

    0      1        2..5         6..13  14..21  22..n-33     n-32..n-17  n-16..n-1
    flags  version  network tag  dcid   scid    Noise msg    mac1        mac2

    flags = 0xC0 | type: 1 initiation (XX), 5 initiation (IK), 2 response,
            3 finish (XX message 3), 4 cookie reply
    network tag = BLAKE2b(network name)[:4]; dcid = zeros in an initiation
    mac1 = BLAKE2b-128(key=mac1_key, everything before mac1)
    mac2 = BLAKE2b-128(key=cookie, everything before mac2), or zeros
    mac1_key = BLAKE2b-256("crust mac1" || u16 len || network name
                           [|| responder Ed25519 key, in IK handshakes])

    cookie reply: flags, version, tag, dcid = the initiation's scid,
                  scid = zeros, nonce (24), XChaCha20-Poly1305(cookie) (32);
                  key = BLAKE2b-256("crust cookie" || same inputs as mac1_key),
                  AAD = the initiation's mac1.

The Noise prologue is ``b"crust/1" || u16 len || network name || the
initiation's first 22 bytes``, so a node of another network, protocol
version or pattern fails, and the initiation header cannot be altered.

Payload (inside Noise): TLV entries ``type (1) | length (2) | value``:
1 Ed25519 identity key (32), 2 connection id (8), 3 max_message_size (u64),
4 recv_window (u64), 5 observed address of the receiver (IPv4 or IPv6
address, then port: 6 or 18 bytes). Type 0 ends the payload: all that
follows is padding. Unknown types are skipped (room to extend); a repeated
or malformed entry rejects the payload. Identity, cid and both parameters
are required. The XX initiation carries padding only (it is not encrypted).

Denial of service:

- A datagram that is malformed, of another version or network, fails mac1 or
  fails Noise is dropped silently and counted in ``Responder.stats``; junk
  costs one keyed hash, no DH, and leaves no state.
- Initiations are padded to ``INITIATION_SIZE`` (512) bytes and shorter ones
  are dropped, so nothing sent to an unverified address (response: ~240
  bytes, cookie reply: 78) exceeds 3x what arrived from it. 512 rather than
  QUIC's 1200 keeps the handshake working on paths that only carry the
  engine's 548-byte floor.
- Above ``CookiePolicy.rate`` initiations per second, an initiation without a
  valid mac2 gets a cookie reply (no DH, no state); the initiator retries
  with mac2 keyed by that cookie, which proves it receives at its address.
  Cookie-verified sources are then rate limited each, a source being an
  IPv4 address or an IPv6 /64 (``crust.admission.source_key``), never a
  port: a host has 65,535 of those (1,024 ports solving cookies got ~2,000
  DH/s when the limit was per port).
- In-progress handshakes live in a bounded table with expiry; a repeated
  initiation gets the stored response again, with no new DH, but only at
  the address the initiation first came from (copies from elsewhere are
  replays: silence).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import nacl.bindings as sodium
import nacl.exceptions

from crust import _core, _sodium, noise
from crust.admission import source_key
from crust.errors import HandshakeError, HandshakeTimeout, MalformedPacket
from crust.identity import Identity, InvalidPeerId, PeerId
from crust.noise import NoiseError, Pattern
from crust.wire import CID_LEN, DST_CID, HEADER_LEN, LONG_HEADER_FLAGS, SRC_CID, TAG, long_header
from crust.wire import Address as Addr

__all__ = [
    "INITIATION_SIZE",
    "VERSION",
    "Addr",
    "CookiePolicy",
    "HandshakeError",
    "HandshakeResult",
    "HandshakeTimeout",
    "Initiator",
    "InitiatorState",
    "MalformedPacket",
    "PacketKeys",
    "Payload",
    "Responder",
    "TransportParams",
    "decode_payload_untrusted",
    "encode_payload",
    "long_header_prefix",
    "network_tag",
]

logger = logging.getLogger(__name__)


VERSION = 1
MAC_LEN = 16
#: Every initiation is padded to at least this many bytes (see module doc).
INITIATION_SIZE = 512
AMPLIFICATION_LIMIT = 3

TYPE_INITIATION = 1
TYPE_RESPONSE = 2
TYPE_FINISH = 3
TYPE_COOKIE_REPLY = 4
TYPE_INITIATION_IK = 5

_ZERO_CID = bytes(CID_LEN)
_ZERO_MAC = bytes(MAC_LEN)
_COOKIE_NONCE_LEN = 24
_COOKIE_REPLY_LEN = HEADER_LEN + _COOKIE_NONCE_LEN + MAC_LEN + 16
# Smallest packet that can hold a header, an ephemeral key and both macs.
_MIN_PACKET = HEADER_LEN + noise.DHLEN + 2 * MAC_LEN

# Initiator timing: the first retransmission after 500 ms, doubling to 4 s;
# the handshake fails after timeout_us (10 s by default). After an XX
# initiator sends its finish it repeats it (same schedule) until confirm(),
# for at least _FINISH_LINGER_US.
_FIRST_RETRANSMIT_US = 500_000
_MAX_RETRANSMIT_US = 4_000_000
_DEFAULT_TIMEOUT_US = 10_000_000
_FINISH_LINGER_US = 3_000_000

_ENGINE_DEFAULTS = _core.Config()


# ---- network-derived values ----------------------------------------------------


def network_tag(network: str) -> bytes:
    """The 4-byte tag that marks a network's packets (BLAKE2b of the name)."""
    return hashlib.blake2b(network.encode()).digest()[:4]


def long_header_prefix(network: str) -> bytes:
    """Bytes 1..5 of every handshake packet of ``network`` (version and
    network tag): an Endpoint given this drops, in C, every long-header
    datagram that could not be one of ours."""
    _network_bytes(network)  # validates
    return bytes((VERSION,)) + network_tag(network)


def _network_bytes(network: str) -> bytes:
    if not isinstance(network, str):
        raise TypeError(f"network name must be a str, got {type(network).__name__}")
    name = network.encode()
    if not 1 <= len(name) <= 255:
        raise ValueError(f"network name must be 1..255 bytes of UTF-8, got {len(name)}")
    return name


def _labelled_key(label: bytes, name: bytes, responder: PeerId | None) -> bytes:
    material = label + len(name).to_bytes(2, "big") + name
    if responder is not None:
        material += responder.key
    return hashlib.blake2b(material, digest_size=32).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=MAC_LEN, key=key).digest()


def _header(ptype: int, tag: bytes, dcid: bytes, scid: bytes) -> bytes:
    return long_header(ptype, VERSION, tag, dcid, scid)


def _with_macs(body: bytes, mac1_key: bytes, cookie: bytes | None) -> bytes:
    with_mac1 = body + _mac(mac1_key, body)
    return with_mac1 + (_mac(cookie, with_mac1) if cookie is not None else _ZERO_MAC)


def _prologue(name: bytes, initiation_header: bytes) -> bytes:
    return b"crust/1" + len(name).to_bytes(2, "big") + name + initiation_header


# ---- payloads ------------------------------------------------------------------

_T_PADDING = 0
_T_IDENTITY = 1
_T_CID = 2
_T_MAX_MESSAGE_SIZE = 3
_T_RECV_WINDOW = 4
_T_OBSERVED_ADDR = 5
_T_AEADS = 6
_MAX_PARAM = (1 << 62) - 1
_MAX_AEADS = 16

#: Packet ciphers by name, in the order crust prefers them: AEGIS-128L and
#: AES-256-GCM (both only with AES-NI, see crust._sodium) are far faster
#: than ChaCha20-Poly1305 there; ChaCha20-Poly1305 is everywhere.
CIPHERS: dict[str, int] = {
    "aegis128l": _core.AEAD_AEGIS128L,
    "aes256gcm": _core.AEAD_AES256_GCM,
    "chacha20poly1305": _core.AEAD_CHACHA20_POLY1305,
}
#: What a peer that announces no cipher list speaks.
_LEGACY_AEADS = (_core.AEAD_CHACHA20_POLY1305,)


def cipher_names(aeads: tuple[int, ...]) -> str:
    """``aeads`` for people: names where known, ids otherwise."""
    names = {aead: name for name, aead in CIPHERS.items()}
    return ", ".join(names.get(a, f"#{a}") for a in aeads)


def default_aeads() -> tuple[int, ...]:
    """The ciphers this machine can run, most preferred first."""
    return tuple(a for a in CIPHERS.values() if a in _sodium.registered)


def aeads_from_names(names: tuple[str, ...] | list[str]) -> tuple[int, ...]:
    """Cipher ids for ``names`` (keys of :data:`CIPHERS`), in that order.
    ValueError names an unknown or (on this machine) unavailable one."""
    out: list[int] = []
    for name in names:
        aead = CIPHERS.get(name)
        if aead is None:
            raise ValueError(f"unknown cipher {name!r}; choose from {', '.join(CIPHERS)}")
        if aead not in _sodium.registered:
            raise ValueError(f"cipher {name!r} is not available on this machine (no AES-NI?)")
        if aead not in out:
            out.append(aead)
    if not out:
        raise ValueError("at least one cipher is needed")
    return tuple(out)


@dataclass(frozen=True)
class TransportParams:
    """What a peer announces about its engine (defaults: the engine's).

    ``aeads`` lists the packet ciphers it accepts, most preferred first;
    the connection uses the first of the initiator's list that the
    responder also accepts (:func:`choose_aead`). The lists travel inside
    the Noise handshake, so the transcript hash binds them: an attacker
    who edits one to force a weaker choice breaks the handshake."""

    max_message_size: int = _ENGINE_DEFAULTS.max_message_size
    recv_window: int = _ENGINE_DEFAULTS.recv_window
    aeads: tuple[int, ...] = field(default_factory=default_aeads)

    def __post_init__(self) -> None:
        for name in ("max_message_size", "recv_window"):
            value = getattr(self, name)
            if not 1 <= value <= _MAX_PARAM:
                raise ValueError(f"TransportParams.{name} must be in 1..2^62-1, got {value}")
        if not 1 <= len(self.aeads) <= _MAX_AEADS or len(set(self.aeads)) != len(self.aeads):
            raise ValueError(
                f"TransportParams.aeads must list 1..{_MAX_AEADS} distinct ids, got {self.aeads}"
            )
        if not all(0 < a < 256 for a in self.aeads):
            raise ValueError(f"TransportParams.aeads ids must be 1..255, got {self.aeads}")


def choose_aead(initiator: TransportParams, responder: TransportParams) -> int | None:
    """The cipher both sides use: the initiator's most preferred one that
    the responder accepts and this machine runs (each side computes the
    same answer from the same two lists). None when they share none."""
    accepted = set(responder.aeads)
    for aead in initiator.aeads:
        if aead in accepted and _core.aead_available(aead):
            return aead
    return None


@dataclass(frozen=True)
class Payload:
    """What each side says about itself inside the Noise handshake."""

    identity: PeerId
    cid: bytes
    params: TransportParams
    #: Where the sender saw the receiver's packets come from (NAT traversal).
    observed_addr: Addr | None = None


def _tlv(ptype: int, value: bytes) -> bytes:
    return bytes((ptype,)) + len(value).to_bytes(2, "big") + value


def _encode_addr(addr: Addr | None) -> bytes | None:
    if addr is None:
        return None
    try:
        port = int(addr[1])
        try:
            # The common case, without ipaddress's pure-Python parser.
            packed = socket.inet_pton(socket.AF_INET, addr[0])
        except (OSError, TypeError):
            packed = ipaddress.ip_address(addr[0]).packed
    except (ValueError, TypeError, IndexError):
        return None  # not an IP literal (e.g. a test name): nothing to echo
    if not 0 <= port <= 0xFFFF:
        return None
    return packed + port.to_bytes(2, "big")


def encode_payload(payload: Payload, pad_to: int = 0) -> bytes:
    """Serialise ``payload``, padded with zeros to at least ``pad_to`` bytes."""
    out = (
        _tlv(_T_IDENTITY, payload.identity.key)
        + _tlv(_T_CID, payload.cid)
        + _tlv(_T_MAX_MESSAGE_SIZE, payload.params.max_message_size.to_bytes(8, "big"))
        + _tlv(_T_RECV_WINDOW, payload.params.recv_window.to_bytes(8, "big"))
        + _tlv(_T_AEADS, bytes(payload.params.aeads))
    )
    addr = _encode_addr(payload.observed_addr)
    if addr is not None:
        out += _tlv(_T_OBSERVED_ADDR, addr)
    if len(out) < pad_to:
        out += bytes(pad_to - len(out))  # starts with type 0: padding
    return out


def decode_payload_untrusted(data: bytes) -> Payload:
    """Parse a payload received from the network. Raises
    :class:`MalformedPacket` (only) on anything it does not accept."""
    fields: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        ptype = data[pos]
        if ptype == _T_PADDING:
            break
        if end - pos < 3:
            raise MalformedPacket(f"payload entry header cut short at byte {pos}")
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        pos += 3
        if end - pos < length:
            raise MalformedPacket(f"payload entry {ptype} claims {length} bytes, {end - pos} left")
        if ptype in fields:
            raise MalformedPacket(f"payload entry {ptype} repeated")
        fields[ptype] = bytes(data[pos : pos + length])
        pos += length
    want = {_T_IDENTITY: 32, _T_CID: CID_LEN, _T_MAX_MESSAGE_SIZE: 8, _T_RECV_WINDOW: 8}
    for ptype, size in want.items():
        value = fields.get(ptype)
        if value is None:
            raise MalformedPacket(f"payload lacks required entry {ptype}")
        if len(value) != size:
            raise MalformedPacket(f"payload entry {ptype} is {len(value)} bytes, expected {size}")
    try:
        identity = PeerId(fields[_T_IDENTITY])
    except InvalidPeerId as exc:
        raise MalformedPacket(f"payload identity: {exc}") from None
    max_msg = int.from_bytes(fields[_T_MAX_MESSAGE_SIZE], "big")
    window = int.from_bytes(fields[_T_RECV_WINDOW], "big")
    if not (1 <= max_msg <= _MAX_PARAM and 1 <= window <= _MAX_PARAM):
        raise MalformedPacket(f"transport parameters out of range ({max_msg}, {window})")
    observed: Addr | None = None
    raw_addr = fields.get(_T_OBSERVED_ADDR)
    if raw_addr is not None:
        if len(raw_addr) not in (6, 18):
            raise MalformedPacket(f"observed address is {len(raw_addr)} bytes, expected 6 or 18")
        host = (
            socket.inet_ntoa(raw_addr[:4])
            if len(raw_addr) == 6
            else str(ipaddress.IPv6Address(raw_addr[:16]))
        )
        observed = (host, int.from_bytes(raw_addr[-2:], "big"))
    raw_aeads = fields.get(_T_AEADS)
    aeads = _LEGACY_AEADS if raw_aeads is None else tuple(raw_aeads)
    try:
        params = TransportParams(max_msg, window, aeads)
    except ValueError as exc:
        raise MalformedPacket(str(exc)) from None
    return Payload(identity, fields[_T_CID], params, observed)


def _bound_identity(payload: Payload, hs: noise.HandshakeState) -> bool:
    """The payload's Ed25519 key is the one behind the Noise static key."""
    rs = hs.remote_static
    return rs is not None and hmac.compare_digest(payload.identity.x25519_public(), rs)


# ---- key schedule --------------------------------------------------------------


def _expand(secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869) with HMAC-BLAKE2b."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = noise.hmac_hash(secret, block + label + bytes((counter,)))
        out += block
        counter += 1
    return out[:length]


def _next_secret(secret: bytes) -> bytes:
    return _expand(secret, b"crust/1 key update", noise.HASHLEN)


@dataclass(frozen=True)
class PacketKeys:
    """Packet keys of one generation, for ``Connection.set_keys(phase, aead,
    tx_key, tx_iv, rx_key, rx_iv)``.

    Generation 0 comes from the handshake; :meth:`next` gives generation
    n + 1, identically on both sides (a one-way ratchet: old keys cannot be
    recomputed from new ones). ``phase`` is the engine's key-phase slot.
    Secrets are kept out of ``repr``.
    """

    generation: int
    tx_key: bytes = field(repr=False)
    tx_iv: bytes = field(repr=False)
    rx_key: bytes = field(repr=False)
    rx_iv: bytes = field(repr=False)
    tx_secret: bytes = field(repr=False)
    rx_secret: bytes = field(repr=False)
    aead: int = _core.AEAD_CHACHA20_POLY1305

    @classmethod
    def from_secrets(
        cls,
        generation: int,
        tx_secret: bytes,
        rx_secret: bytes,
        aead: int = _core.AEAD_CHACHA20_POLY1305,
    ) -> PacketKeys:
        return cls(
            generation,
            _expand(tx_secret, b"crust/1 key", _core.KEY_LEN),
            _expand(tx_secret, b"crust/1 iv", _core.IV_LEN),
            _expand(rx_secret, b"crust/1 key", _core.KEY_LEN),
            _expand(rx_secret, b"crust/1 iv", _core.IV_LEN),
            tx_secret,
            rx_secret,
            aead,
        )

    @property
    def phase(self) -> int:
        return self.generation & 1

    def next(self) -> PacketKeys:
        return PacketKeys.from_secrets(
            self.generation + 1,
            _next_secret(self.tx_secret),
            _next_secret(self.rx_secret),
            self.aead,
        )


def _initial_keys(hs: noise.HandshakeState, initiator: bool, aead: int) -> PacketKeys:
    i2r, r2i = hs.split()
    h = hs.handshake_hash
    assert i2r.key is not None and r2i.key is not None
    # HKDF-Extract with the handshake hash as salt binds the keys to the
    # whole transcript; the labels keep the two directions apart.
    secret_i2r = _expand(noise.hmac_hash(h, i2r.key), b"crust/1 i2r", noise.HASHLEN)
    secret_r2i = _expand(noise.hmac_hash(h, r2i.key), b"crust/1 r2i", noise.HASHLEN)
    if initiator:
        return PacketKeys.from_secrets(0, secret_i2r, secret_r2i, aead)
    return PacketKeys.from_secrets(0, secret_r2i, secret_i2r, aead)


@dataclass(frozen=True)
class HandshakeResult:
    """A completed handshake, as either side sees it.

    ``peer_addr`` is where the peer's packets came from; ``observed_addr``
    where the peer saw ours come from (our public address behind a NAT).
    ``keys`` is generation 0; ``rekey()`` gives generation 1 and
    ``keys_for_generation(n)`` any later one (what the engine's
    ``EV_KEYS_NEEDED`` asks for).
    """

    peer_id: PeerId
    initiator: bool
    pattern: Pattern
    local_cid: bytes
    remote_cid: bytes
    keys: PacketKeys
    peer_params: TransportParams
    peer_addr: Addr
    observed_addr: Addr | None
    handshake_hash: bytes = field(repr=False)
    # The latest generation handed out, so that walking forward costs one
    # ratchet step per generation however long the connection lives.
    _latest: list[PacketKeys] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def tx_key(self) -> bytes:
        return self.keys.tx_key

    @property
    def tx_iv(self) -> bytes:
        return self.keys.tx_iv

    @property
    def rx_key(self) -> bytes:
        return self.keys.rx_key

    @property
    def rx_iv(self) -> bytes:
        return self.keys.rx_iv

    def rekey(self) -> PacketKeys:
        """The next generation's keys (the same on both sides)."""
        return self.keys_for_generation(1)

    def keys_for_generation(self, generation: int) -> PacketKeys:
        """Generation ``generation``'s keys (0 = ``keys``), the same on
        both sides."""
        if generation < 0:
            raise ValueError(f"key generation must be >= 0, got {generation}")
        keys = self._latest[0] if self._latest else self.keys
        if keys.generation > generation:
            keys = self.keys
        while keys.generation < generation:
            keys = keys.next()
        self._latest[:] = [keys]
        return keys


# ---- initiator -----------------------------------------------------------------


class InitiatorState(enum.Enum):
    WAITING = "waiting"  # initiation sent, no valid response yet
    FINISHING = "finishing"  # XX: keys ready; finish repeated until confirm()
    DONE = "done"
    FAILED = "failed"


class Initiator:
    """The connecting side of one handshake.

    Drive it like an aioquic connection: send what ``datagrams_to_send``
    returns to the peer, feed it every datagram for ``local_cid`` with
    ``receive_datagram``, and call ``handle_timer`` at ``get_timer()``.
    ``result`` is set once keys are ready, ``error`` if it failed.

    ``remote`` known: IK, one round trip. Unknown: XX; the result's peer id
    says who answered. ``addr`` (the peer's address) is echoed to the peer
    as its observed address in IK. After an XX handshake, call
    :meth:`confirm` when the first packet under the new keys arrives from
    the peer; until then the finish message is repeated, in case it was
    lost.
    """

    def __init__(
        self,
        identity: Identity,
        network: str,
        *,
        remote: PeerId | None,
        local_cid: bytes,
        params: TransportParams | None = None,
        now: int,
        addr: Addr | None = None,
        timeout_us: int = _DEFAULT_TIMEOUT_US,
    ) -> None:
        if len(local_cid) != CID_LEN:
            raise ValueError(f"local_cid must be {CID_LEN} bytes, got {len(local_cid)}")
        self._identity = identity
        self._network = network
        self._name = _network_bytes(network)
        self._tag = network_tag(network)
        self._remote = remote
        self.local_cid = bytes(local_cid)
        self._params = params if params is not None else TransportParams()
        self._addr = addr
        self.pattern: Pattern = "IK" if remote is not None else "XX"
        self.state = InitiatorState.WAITING
        self.result: HandshakeResult | None = None
        self.error: HandshakeError | None = None
        #: Datagrams received and why some were ignored.
        self.stats: dict[str, int] = dict.fromkeys(
            ("datagrams", "ignored", "mac1", "noise", "cookie_replies", "retransmits"), 0
        )
        self._mac1_key = _labelled_key(b"crust mac1", self._name, remote)
        self._cookie_key = _labelled_key(b"crust cookie", self._name, remote)
        self._cookie: bytes | None = None
        self._cookie_resent = False

        ptype = TYPE_INITIATION_IK if remote is not None else TYPE_INITIATION
        header = _header(ptype, self._tag, _ZERO_CID, self.local_cid)
        self._hs = noise.HandshakeState(
            self.pattern,
            True,
            _prologue(self._name, header),
            identity.x25519_private(),
            rs=remote.x25519_public() if remote is not None else None,
            s_pub=identity.x25519_public(),
        )
        # Pad inside the Noise payload so mac1 (and, in IK, the AEAD) covers
        # the padding too.
        overhead = HEADER_LEN + 2 * MAC_LEN + noise.DHLEN
        if remote is not None:
            overhead += noise.DHLEN + 2 * noise.TAGLEN
            payload = encode_payload(
                Payload(identity.peer_id, self.local_cid, self._params, addr),
                pad_to=INITIATION_SIZE - overhead,
            )
        else:
            payload = bytes(INITIATION_SIZE - overhead)
        self._initiation_body = header + self._hs.write_message(payload)
        self._initiation_mac1 = _mac(self._mac1_key, self._initiation_body)
        self._finish: bytes | None = None
        self._response: bytes | None = None

        self._started = now
        self._deadline = now + timeout_us
        self._finish_deadline = self._deadline
        self._timeout_us = timeout_us
        self._backoff = _FIRST_RETRANSMIT_US
        self._next_send: int | None = now + self._backoff
        self._sent_initiations = 1
        self._outbox: list[bytes] = [self._initiation()]

    # -- the aioquic-like interface -------------------------------------------------

    def datagrams_to_send(self, now: int) -> list[bytes]:
        out, self._outbox = self._outbox, []
        return out

    def get_timer(self) -> int | None:
        if self.state is InitiatorState.WAITING:
            assert self._next_send is not None
            return min(self._next_send, self._deadline)
        if self.state is InitiatorState.FINISHING:
            assert self._next_send is not None
            return min(self._next_send, self._finish_deadline)
        return None

    def handle_timer(self, now: int) -> None:
        if self.state is InitiatorState.WAITING:
            if now >= self._deadline:
                self._fail(HandshakeTimeout(self._timeout_message()))
            elif self._next_send is not None and now >= self._next_send:
                self._sent_initiations += 1
                self.stats["retransmits"] += 1
                self._cookie_resent = False
                self._outbox.append(self._initiation())
                self._schedule_retransmit(now)
        elif self.state is InitiatorState.FINISHING:
            if now >= self._finish_deadline:
                # Not an error: the keys are in use and data will tell.
                logger.debug("handshake %s: finish never confirmed", self.local_cid.hex())
                self.state = InitiatorState.DONE
            elif self._next_send is not None and now >= self._next_send:
                assert self._finish is not None
                self.stats["retransmits"] += 1
                self._outbox.append(self._finish)
                self._schedule_retransmit(now)

    def confirm(self) -> None:
        """The peer has used the new keys: it got our finish message."""
        if self.state is InitiatorState.FINISHING:
            self.state = InitiatorState.DONE

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        """Handle one datagram addressed to ``local_cid``. Anything that
        does not verify is counted and ignored: an attacker cannot abort the
        handshake by injecting packets."""
        self.stats["datagrams"] += 1
        data = bytes(data)
        if self.state not in (InitiatorState.WAITING, InitiatorState.FINISHING):
            self.stats["ignored"] += 1
            return
        if (
            len(data) < HEADER_LEN
            or data[0]
            not in (LONG_HEADER_FLAGS | TYPE_RESPONSE, LONG_HEADER_FLAGS | TYPE_COOKIE_REPLY)
            or data[1] != VERSION
            or data[TAG] != self._tag
            or data[DST_CID] != self.local_cid
        ):
            self.stats["ignored"] += 1
            return
        ptype = data[0] & 0x3F
        if ptype == TYPE_COOKIE_REPLY:
            if self.state is InitiatorState.WAITING:
                self._on_cookie_reply(data, now)
            else:
                self.stats["ignored"] += 1
        elif self.state is InitiatorState.FINISHING:
            # The responder repeats its response when it saw our initiation
            # again; it may have missed the finish too.
            if data == self._response and self._finish is not None:
                self._outbox.append(self._finish)
            else:
                self.stats["ignored"] += 1
        else:
            self._on_response(data, addr, now)

    # -- internals -------------------------------------------------------------------

    def _initiation(self) -> bytes:
        body = self._initiation_body + self._initiation_mac1
        return body + (_mac(self._cookie, body) if self._cookie is not None else _ZERO_MAC)

    def _schedule_retransmit(self, now: int) -> None:
        self._backoff = min(self._backoff * 2, _MAX_RETRANSMIT_US)
        self._next_send = now + self._backoff

    def _on_cookie_reply(self, data: bytes, now: int) -> None:
        if len(data) != _COOKIE_REPLY_LEN:
            self.stats["ignored"] += 1
            return
        nonce = data[HEADER_LEN : HEADER_LEN + _COOKIE_NONCE_LEN]
        try:
            cookie = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
                data[HEADER_LEN + _COOKIE_NONCE_LEN :],
                self._initiation_mac1,
                nonce,
                self._cookie_key,
            )
        except nacl.exceptions.CryptoError:
            self.stats["ignored"] += 1
            return
        self.stats["cookie_replies"] += 1
        if cookie != self._cookie:
            self._cookie = cookie
            # Retry at once (the responder is busy, not gone), but once per
            # retransmission interval: forged cookie replies from someone
            # on the path must not make us send a stream of initiations.
            if not self._cookie_resent:
                self._cookie_resent = True
                self._sent_initiations += 1
                self._outbox.append(self._initiation())

    def _on_response(self, data: bytes, addr: Addr, now: int) -> None:
        if len(data) < _MIN_PACKET:
            self.stats["ignored"] += 1
            return
        mac1_at = len(data) - 2 * MAC_LEN
        if not hmac.compare_digest(
            data[mac1_at : mac1_at + MAC_LEN], _mac(self._mac1_key, data[:mac1_at])
        ):
            self.stats["mac1"] += 1
            return
        try:
            raw = self._hs.read_message(data[HEADER_LEN:mac1_at])
        except NoiseError:
            self.stats["noise"] += 1
            return
        # From here the response is authentic Noise from whoever holds the
        # static key it names: a bad payload is a real failure, not noise.
        who = f"the node at {addr[0]}:{addr[1]}"
        try:
            payload = decode_payload_untrusted(raw)
        except MalformedPacket as exc:
            self._fail(HandshakeError(f"{who} sent an invalid handshake payload: {exc}"))
            return
        if not _bound_identity(payload, self._hs):
            self._fail(
                HandshakeError(
                    f"{who} claims identity {payload.identity} but its Noise key does not "
                    "belong to it: refusing the connection"
                )
            )
            return
        if self._remote is not None and payload.identity != self._remote:
            self._fail(
                HandshakeError(f"{who} is {payload.identity}, not the expected {self._remote}")
            )
            return
        remote_cid = data[SRC_CID]
        if payload.cid != remote_cid:
            self._fail(HandshakeError(f"{who} sent a connection id its header contradicts"))
            return
        aead = choose_aead(self._params, payload.params)
        if aead is None:
            self._fail(
                HandshakeError(
                    f"{who} accepts none of our packet ciphers (we offer "
                    f"{cipher_names(self._params.aeads)}, it accepts "
                    f"{cipher_names(payload.params.aeads)})"
                )
            )
            return
        if self.pattern == "XX":
            ours = Payload(self._identity.peer_id, self.local_cid, self._params, addr)
            try:
                msg3 = self._hs.write_message(encode_payload(ours))
            except NoiseError as exc:
                self._fail(HandshakeError(f"handshake with {who} failed: {exc}"))
                return
            self._finish = _with_macs(
                _header(TYPE_FINISH, self._tag, remote_cid, self.local_cid) + msg3,
                self._mac1_key,
                None,
            )
            self._response = data
            self._outbox.append(self._finish)
            self.state = InitiatorState.FINISHING
            self._backoff = _FIRST_RETRANSMIT_US
            self._next_send = now + self._backoff
            self._finish_deadline = max(self._deadline, now + _FINISH_LINGER_US)
        else:
            self.state = InitiatorState.DONE
            self._next_send = None
        self.result = HandshakeResult(
            peer_id=payload.identity,
            initiator=True,
            pattern=self.pattern,
            local_cid=self.local_cid,
            remote_cid=remote_cid,
            keys=_initial_keys(self._hs, initiator=True, aead=aead),
            peer_params=payload.params,
            peer_addr=addr,
            observed_addr=payload.observed_addr,
            handshake_hash=self._hs.handshake_hash,
        )
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "handshake %s (%s) with %s done in %.1f ms",
                self.local_cid.hex(),
                self.pattern,
                payload.identity.short,
                (now - self._started) / 1000,
            )

    def _fail(self, error: HandshakeError) -> None:
        self.state = InitiatorState.FAILED
        self.error = error
        self._next_send = None
        self._outbox = []
        logger.info("handshake %s failed: %s", self.local_cid.hex(), error)

    def _timeout_message(self) -> str:
        where = f"{self._addr[0]}:{self._addr[1]}" if self._addr is not None else "the peer"
        msg = (
            f"no valid handshake answer from {where} within {self._timeout_us / 1e6:.1f} s "
            f"({self._sent_initiations} initiations sent): the peer may be offline or "
            f"unreachable, or use a different network name (ours is {self._network!r}) or "
            f"protocol version (ours is {VERSION})"
        )
        if self._remote is not None:
            msg += f", or the node there is not {self._remote}"
        return msg


# ---- responder -----------------------------------------------------------------


@dataclass(frozen=True)
class CookiePolicy:
    """When and how a Responder demands cookies (see module doc).

    ``rate``: initiations per second (bursts of up to one second's worth)
    above which an initiation needs a valid mac2. ``per_source_rate`` /
    ``per_source_burst``: while under load, how many cookie-verified
    initiations one source (IPv4 address or IPv6 /64, any port) may make.
    ``secret_lifetime_us``: how often the cookie secret changes (a cookie
    stays valid for one more lifetime). ``source_share``: the fraction of
    ``rate`` one source may use without cookies even when the listener is
    not under load (beyond it that source alone is treated as under load),
    so one host cannot spend the whole DH budget from many ports.
    ``cookie_interval_us``: at most one cookie reply per address and port
    in this time; a real initiator needs one, a flood gets silence.
    """

    rate: float = 1000.0
    per_source_rate: float = 20.0
    per_source_burst: int = 5
    secret_lifetime_us: int = 120_000_000
    source_share: float = 0.1
    cookie_interval_us: int = 1_000_000

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.per_source_rate > 0 or self.per_source_burst < 1:
            raise ValueError("CookiePolicy rates must be > 0 and the burst >= 1")
        if not 0 < self.source_share <= 1 or self.cookie_interval_us < 0:
            raise ValueError("CookiePolicy.source_share must be in (0, 1], the interval >= 0")
        if self.secret_lifetime_us < 1_000_000:
            raise ValueError("CookiePolicy.secret_lifetime_us must be at least 1 s")


@dataclass(eq=False)
class _Handshake:
    """A responder's record of one handshake, kept until it expires: while
    XX waits for the finish, and afterwards to answer retransmissions."""

    expires: int
    pattern: Pattern
    mac1_key: bytes
    local_cid: bytes
    remote_cid: bytes
    response: bytes
    hs: noise.HandshakeState | None  # None once complete (or abandoned)
    #: Where the initiation came from: copies from elsewhere are replays.
    addr: Addr | None = None


_RESPONDER_STATS = (
    "datagrams",  # everything passed to receive_datagram
    "malformed",  # too short, wrong flags or type, bad header field
    "version",  # another protocol version
    "foreign_network",  # another network's tag
    "short_initiation",  # initiation below INITIATION_SIZE
    "mac1",  # failed mac1
    "cookie_replies",  # under load, no valid mac2: answered with a cookie
    "cookie_limited",  # ... but this address and port had one less than a second ago
    "rate_limited",  # under load, a verified source above its own rate
    "retransmits",  # a known initiation: the stored response again
    "replayed",  # a known initiation from another address: silence
    "noise",  # failed Noise (decryption, low-order key)
    "payload",  # authentic Noise, unacceptable payload
    "identity",  # identity key not bound to the Noise static key
    "cipher",  # authentic, but its cipher list shares nothing with ours
    "unknown_cid",  # finish for no handshake in progress
    "duplicate_finish",  # finish for a handshake already complete
    "evicted",  # handshakes dropped because the table was full
    "amplification",  # a reply over 3x the request (never expected)
    "completed",
)

# The drops only a sender that is not an honest peer causes: counted
# against the address they came from (take_failures), as junk is. Not
# version or network mismatches (a misconfigured honest node), not load
# (cookie and rate limits), not late copies of a real handshake
# (retransmits, replays, finishes for a handshake gone or done).
_JUNK_STATS = ("malformed", "short_initiation", "mac1", "noise", "payload", "identity")
# Distinct addresses kept between two take_failures calls.
_MAX_FAILED_SOURCES = 1024


class Responder:
    """The listening side: one per listener, for any number of peers.

    ``receive_datagram`` returns the replies to send (possibly none); each
    completed handshake is then available from :meth:`next_result`. It
    never raises on input: everything it drops is counted in ``stats``.
    ``new_cid`` makes local connection ids (random by default; an endpoint
    passes its own to keep them unique among its connections).
    """

    def __init__(
        self,
        identity: Identity,
        network: str,
        *,
        params: TransportParams | None = None,
        cookie_policy: CookiePolicy | None = None,
        max_pending: int = 4096,
        pending_timeout_us: int = 15_000_000,
        new_cid: Callable[[], bytes] | None = None,
    ) -> None:
        self._identity = identity
        self._network = network
        self._name = _network_bytes(network)
        self._tag = network_tag(network)
        self._static = identity.x25519_private()
        self._static_pub = identity.x25519_public()
        self._params = params if params is not None else TransportParams()
        self._policy = cookie_policy if cookie_policy is not None else CookiePolicy()
        self._max_pending = max_pending
        self._pending_timeout_us = pending_timeout_us
        self._new_cid = new_cid if new_cid is not None else (lambda: os.urandom(CID_LEN))
        self._mac1_keys = {
            "XX": _labelled_key(b"crust mac1", self._name, None),
            "IK": _labelled_key(b"crust mac1", self._name, identity.peer_id),
        }
        self._cookie_keys = {
            "XX": _labelled_key(b"crust cookie", self._name, None),
            "IK": _labelled_key(b"crust cookie", self._name, identity.peer_id),
        }
        # mac1 is checked on every datagram that looks like ours: start
        # from keyed states set up once (copying one skips the key setup).
        self._mac1_hashers = {
            p: hashlib.blake2b(digest_size=MAC_LEN, key=k) for p, k in self._mac1_keys.items()
        }
        self.stats: dict[str, int] = dict.fromkeys(_RESPONDER_STATS, 0)
        # Keyed by the initiation's mac1, which is the same in every copy of
        # one initiation (mac2 is not under it); in insertion order, which
        # is expiry order.
        self._by_mac1: OrderedDict[bytes, _Handshake] = OrderedDict()
        self._by_cid: dict[bytes, _Handshake] = {}
        self._results: deque[HandshakeResult] = deque()
        self._tokens = self._policy.rate
        self._tokens_at: int | None = None
        self._secret = os.urandom(32)
        self._old_secret: bytes | None = None
        self._secret_at: int | None = None
        self._sources: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        # Every source's initiations, verified or not (source_share), and
        # when each address and port last got a cookie reply: bounded LRU
        # tables, so spoofed sources only evict each other.
        self._seen: OrderedDict[bytes, tuple[float, int]] = OrderedDict()
        self._cookied: OrderedDict[Addr, int] = OrderedDict()
        # Records still waiting for their finish (XX): the ones an attacker
        # can make us hold without completing a handshake.
        self._unfinished = 0
        self._failed: OrderedDict[Addr, int] = OrderedDict()

    @property
    def pending(self) -> int:
        """Handshakes held (in progress, or recently completed)."""
        return len(self._by_mac1)

    @property
    def unfinished(self) -> int:
        """Handshakes held that are still waiting for their finish."""
        return self._unfinished

    def next_result(self) -> HandshakeResult | None:
        """The oldest completed handshake not yet taken, or None."""
        return self._results.popleft() if self._results else None

    def take_completed(self) -> list[HandshakeResult]:
        """Every completed handshake not yet taken, oldest first."""
        done = list(self._results)
        self._results.clear()
        return done

    def take_failures(self) -> list[tuple[Addr, int]]:
        """The addresses whose datagrams failed as only junk does (bad
        mac1, malformed, failed Noise, bad payload) since the last call,
        with how many each; at most the 1,024 most recent addresses."""
        out = list(self._failed.items())
        self._failed.clear()
        return out

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> list[tuple[bytes, Addr]]:
        st = self.stats
        before = sum(st[k] for k in _JUNK_STATS)
        out = self._receive(data, addr, now)
        if sum(st[k] for k in _JUNK_STATS) != before:
            failed = self._failed
            failed[addr] = failed.pop(addr, 0) + 1
            if len(failed) > _MAX_FAILED_SOURCES:
                failed.popitem(last=False)
        return out

    def _receive(self, data: bytes, addr: Addr, now: int) -> list[tuple[bytes, Addr]]:
        st = self.stats
        st["datagrams"] += 1
        self._expire(now)
        data = bytes(data)
        n = len(data)
        if n < _MIN_PACKET or data[0] & LONG_HEADER_FLAGS != LONG_HEADER_FLAGS:
            st["malformed"] += 1
            return []
        if data[1] != VERSION:
            st["version"] += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "dropped a handshake packet from %s: protocol version %d, ours is %d",
                    addr,
                    data[1],
                    VERSION,
                )
            return []
        if data[TAG] != self._tag:
            st["foreign_network"] += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "dropped a handshake packet from %s: network tag %s, ours is %s (%r)",
                    addr,
                    data[TAG].hex(),
                    self._tag.hex(),
                    self._network,
                )
            return []
        ptype = data[0] & 0x3F
        pattern: Pattern
        if ptype == TYPE_INITIATION or ptype == TYPE_INITIATION_IK:
            if n < INITIATION_SIZE:
                st["short_initiation"] += 1
                return []
            pattern = "IK" if ptype == TYPE_INITIATION_IK else "XX"
        elif ptype == TYPE_FINISH:
            pattern = "XX"
        else:
            st["malformed"] += 1
            return []
        mac1_at = n - 2 * MAC_LEN
        mac1 = data[mac1_at : mac1_at + MAC_LEN]
        h = self._mac1_hashers[pattern].copy()
        h.update(memoryview(data)[:mac1_at])
        if not hmac.compare_digest(mac1, h.digest()):
            st["mac1"] += 1
            return []
        if ptype == TYPE_FINISH:
            self._on_finish(data, mac1_at, addr, now)
            return []
        return self._on_initiation(data, pattern, mac1, addr, now)

    # -- initiations -----------------------------------------------------------------

    def _on_initiation(
        self, data: bytes, pattern: Pattern, mac1: bytes, addr: Addr, now: int
    ) -> list[tuple[bytes, Addr]]:
        st = self.stats
        if data[DST_CID] != _ZERO_CID:
            st["malformed"] += 1
            return []
        known = self._by_mac1.get(mac1)
        if known is not None:
            if known.addr != addr:
                # A copy replayed from elsewhere (mac2 is not under mac1, so
                # a flipped mac2 lands here too). Answering would send bytes
                # to an address that never initiated; a real initiator
                # whose NAT moved it meanwhile times out and starts over.
                st["replayed"] += 1
                return []
            st["retransmits"] += 1
            return self._reply(known.response, data, addr)
        # A source past its share is under load on its own, without taking
        # the listener's tokens (which would put everyone under load).
        if self._source_busy(addr, now) or self._under_load(now):
            if not self._mac2_valid(data, addr, now):
                if not self._cookie_due(addr, now):
                    st["cookie_limited"] += 1
                    return []
                st["cookie_replies"] += 1
                return self._reply(self._cookie_reply(data, pattern, mac1, addr, now), data, addr)
            if not self._source_allowed(addr, now):
                st["rate_limited"] += 1
                return []
        remote_cid = data[SRC_CID]
        mac1_at = len(data) - 2 * MAC_LEN
        hs = noise.HandshakeState(
            pattern,
            False,
            _prologue(self._name, data[:HEADER_LEN]),
            self._static,
            s_pub=self._static_pub,
        )
        try:
            raw = hs.read_message(data[HEADER_LEN:mac1_at])
        except NoiseError:
            st["noise"] += 1
            return []
        peer: Payload | None = None
        if pattern == "IK":
            peer = self._check_payload(raw, hs, remote_cid)
            if peer is None:
                return []
        local_cid = self._fresh_cid()
        ours = Payload(self._identity.peer_id, local_cid, self._params, addr)
        try:
            msg2 = hs.write_message(encode_payload(ours))
        except NoiseError:
            st["noise"] += 1  # e.g. a low-order ephemeral key in XX
            return []
        response = _with_macs(
            _header(TYPE_RESPONSE, self._tag, remote_cid, local_cid) + msg2,
            self._mac1_keys[pattern],
            None,
        )
        entry = _Handshake(
            expires=now + self._pending_timeout_us,
            pattern=pattern,
            mac1_key=self._mac1_keys[pattern],
            local_cid=local_cid,
            remote_cid=remote_cid,
            response=response,
            hs=hs,
            addr=addr,
        )
        self._store(mac1, entry)
        if peer is not None:
            self._complete(entry, hs, peer, addr)
        return self._reply(response, data, addr)

    def _under_load(self, now: int) -> bool:
        policy = self._policy
        if self._tokens_at is not None and now > self._tokens_at:
            self._tokens = min(
                policy.rate, self._tokens + (now - self._tokens_at) * policy.rate / 1e6
            )
        self._tokens_at = now
        if self._tokens < 1.0:
            return True
        self._tokens -= 1.0
        # A table filling up with handshakes started and not finished means
        # someone is making us hold state, whatever the rate: make new ones
        # prove their address. Completed ones (kept to answer repeats) do
        # not count, or a busy honest listener (over ~200 handshakes/s held
        # for 15 s) would demand cookies from everybody.
        return self._unfinished >= self._max_pending * 3 // 4

    def _cookie_secrets(self, now: int) -> tuple[bytes, bytes | None]:
        if self._secret_at is None:
            self._secret_at = now
        elif now - self._secret_at >= self._policy.secret_lifetime_us:
            self._old_secret, self._secret = self._secret, os.urandom(32)
            self._secret_at = now
        return self._secret, self._old_secret

    @staticmethod
    def _addr_bytes(addr: Addr) -> bytes:
        return f"{addr[0]}|{addr[1]}".encode()

    def _mac2_valid(self, data: bytes, addr: Addr, now: int) -> bool:
        mac2_at = len(data) - MAC_LEN
        mac2 = data[mac2_at:]
        if mac2 == _ZERO_MAC:
            return False
        source = self._addr_bytes(addr)
        for secret in self._cookie_secrets(now):
            if secret is not None:
                cookie = _mac(secret, source)
                if hmac.compare_digest(mac2, _mac(cookie, data[:mac2_at])):
                    return True
        return False

    def _cookie_reply(
        self, data: bytes, pattern: Pattern, mac1: bytes, addr: Addr, now: int
    ) -> bytes:
        secret, _ = self._cookie_secrets(now)
        cookie = _mac(secret, self._addr_bytes(addr))
        nonce = os.urandom(_COOKIE_NONCE_LEN)
        sealed = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
            cookie, mac1, nonce, self._cookie_keys[pattern]
        )
        return _header(TYPE_COOKIE_REPLY, self._tag, data[SRC_CID], _ZERO_CID) + nonce + sealed

    def _bucket(
        self,
        table: OrderedDict[bytes, tuple[float, int]],
        key: bytes,
        rate: float,
        burst: float,
        now: int,
    ) -> bool:
        """Take a token from ``key``'s bucket in ``table`` (LRU, bounded);
        False when it has none."""
        tokens, at = table.pop(key, (burst, now))
        tokens = min(burst, tokens + max(0, now - at) * rate / 1e6)
        allowed = tokens >= 1.0
        table[key] = (tokens - 1.0 if allowed else tokens, now)
        if len(table) > self._max_pending:
            table.popitem(last=False)
        return allowed

    def _source_busy(self, addr: Addr, now: int) -> bool:
        share = max(1.0, self._policy.rate * self._policy.source_share)
        return not self._bucket(self._seen, source_key(addr[0]).encode(), share, share, now)

    def _cookie_due(self, addr: Addr, now: int) -> bool:
        last = self._cookied.pop(addr, None)
        if last is not None and now - last < self._policy.cookie_interval_us:
            self._cookied[addr] = last
            return False
        self._cookied[addr] = now
        if len(self._cookied) > self._max_pending:
            self._cookied.popitem(last=False)
        return True

    def _source_allowed(self, addr: Addr, now: int) -> bool:
        # Only addresses that proved themselves with a cookie get here, so
        # this table cannot be filled with spoofed sources; it is bounded
        # all the same. Keyed by source (address or /64), not by port.
        policy = self._policy
        key = source_key(addr[0]).encode()
        return self._bucket(
            self._sources, key, policy.per_source_rate, float(policy.per_source_burst), now
        )

    # -- finish (XX message 3) -------------------------------------------------------

    def _on_finish(self, data: bytes, mac1_at: int, addr: Addr, now: int) -> None:
        st = self.stats
        entry = self._by_cid.get(data[DST_CID])
        if entry is None or entry.pattern != "XX" or data[SRC_CID] != entry.remote_cid:
            st["unknown_cid"] += 1
            return
        hs = entry.hs
        if hs is None:
            st["duplicate_finish"] += 1
            return
        try:
            raw = hs.read_message(data[HEADER_LEN:mac1_at])
        except NoiseError:
            st["noise"] += 1  # state unchanged: the real finish may follow
            return
        self._finished(entry)
        peer = self._check_payload(raw, hs, entry.remote_cid)
        if peer is not None:
            self._complete(entry, hs, peer, addr)

    # -- shared ----------------------------------------------------------------------

    def _check_payload(
        self, raw: bytes, hs: noise.HandshakeState, remote_cid: bytes
    ) -> Payload | None:
        try:
            payload = decode_payload_untrusted(raw)
        except MalformedPacket:
            self.stats["payload"] += 1
            return None
        if payload.cid != remote_cid:
            self.stats["payload"] += 1
            return None
        if not _bound_identity(payload, hs):
            self.stats["identity"] += 1
            return None
        return payload

    def _complete(
        self, entry: _Handshake, hs: noise.HandshakeState, peer: Payload, addr: Addr
    ) -> None:
        self._finished(entry)
        aead = choose_aead(peer.params, self._params)
        if aead is None:
            # Its offer shares nothing with ours (a configuration choice):
            # no connection; its handshake times out and says so.
            self.stats["cipher"] += 1
            logger.info(
                "handshake from %s refused: it offers ciphers %s, we accept %s",
                peer.identity.short,
                cipher_names(peer.params.aeads),
                cipher_names(self._params.aeads),
            )
            return
        self.stats["completed"] += 1
        self._results.append(
            HandshakeResult(
                peer_id=peer.identity,
                initiator=False,
                pattern=entry.pattern,
                local_cid=entry.local_cid,
                remote_cid=entry.remote_cid,
                keys=_initial_keys(hs, initiator=False, aead=aead),
                peer_params=peer.params,
                peer_addr=addr,
                observed_addr=peer.observed_addr,
                handshake_hash=hs.handshake_hash,
            )
        )

    def _reply(self, reply: bytes, request: bytes, addr: Addr) -> list[tuple[bytes, Addr]]:
        # Initiations are padded so this never triggers; it is the last
        # line of the anti-amplification rule, not the mechanism.
        if len(reply) > AMPLIFICATION_LIMIT * len(request):
            self.stats["amplification"] += 1
            logger.warning(
                "handshake reply of %d bytes to a %d-byte packet withheld", len(reply), len(request)
            )
            return []
        return [(reply, addr)]

    def _fresh_cid(self) -> bytes:
        for _ in range(64):
            cid = bytes(self._new_cid())
            if len(cid) != CID_LEN:
                raise ValueError(f"new_cid() must return {CID_LEN} bytes, got {len(cid)}")
            if cid not in self._by_cid and cid != _ZERO_CID:
                return cid
        raise RuntimeError("new_cid() keeps returning connection ids already in use")

    def _store(self, mac1: bytes, entry: _Handshake) -> None:
        while len(self._by_mac1) >= self._max_pending:
            _, old = self._by_mac1.popitem(last=False)
            self._by_cid.pop(old.local_cid, None)
            self._finished(old)
            self.stats["evicted"] += 1
        self._by_mac1[mac1] = entry
        self._by_cid[entry.local_cid] = entry
        if entry.hs is not None:
            self._unfinished += 1

    def _finished(self, entry: _Handshake) -> None:
        """The record needs no more handshake state (done, or dropped)."""
        if entry.hs is not None:
            entry.hs = None
            self._unfinished -= 1

    def _expire(self, now: int) -> None:
        table = self._by_mac1
        while table:
            mac1, entry = next(iter(table.items()))
            if entry.expires > now:
                break
            del table[mac1]
            self._by_cid.pop(entry.local_cid, None)
            self._finished(entry)
