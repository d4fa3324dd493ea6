"""The handshake payload: what each side says about itself inside Noise
(identity, connection id, transport parameters, observed address), its TLV
encoding and the parser of an untrusted one."""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass, field

from crust import _core, noise
from crust.errors import MalformedPacket
from crust.handshake.ciphers import _LEGACY_AEADS, default_aeads
from crust.identity import InvalidPeerId, PeerId
from crust.wire import CID_LEN
from crust.wire import Address as Addr

_ENGINE_DEFAULTS = _core.Config()


_T_PADDING = 0
_T_IDENTITY = 1
_T_CID = 2
_T_MAX_MESSAGE_SIZE = 3
_T_RECV_WINDOW = 4
_T_OBSERVED_ADDR = 5
_T_AEADS = 6
_MAX_PARAM = (1 << 62) - 1
_MAX_AEADS = 16


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
