"""STUN binding requests (RFC 8489), sans-IO.

A :class:`StunClient` runs any number of binding transactions: the caller
feeds it received datagrams and the clock, and takes the datagrams it wants
sent; it never touches a socket (the asyncio glue is
:mod:`crust.asyncio.stun`). Verbs follow aioquic: ``receive_datagram(data,
addr, now)``, ``datagrams_to_send(now)``, ``get_timer()``,
``handle_timer(now)``, ``next_event()``. Times are seconds.

Retransmission is RFC 8489 §6.2.1's: the request goes out at 0, RTO, 3 RTO,
7 RTO, ... (the interval doubles), ``rc`` requests in all, and the
transaction fails ``rm`` x RTO after the last one (defaults RTO 0.5 s,
Rc 7, Rm 16: 39.5 s). Callers that need a quick answer pass smaller values.

Responses are matched by transaction id only, never by source address: an
RFC 5780 CHANGE-REQUEST response comes from the server's other address on
purpose. The 96-bit random transaction id is what makes a forged answer
improbable; the mapped address is taken from XOR-MAPPED-ADDRESS, or from
MAPPED-ADDRESS when an old (RFC 3489) server sends only that.

:func:`decode` is the one parser of untrusted bytes here: it checks every
length before reading and raises :class:`StunParseError` (a ``ValueError``)
naming what is wrong; nothing else in this module looks inside a packet.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass

from crust.errors import StunFailed
from crust.wire import Address as Addr

__all__ = [
    "MAGIC_COOKIE",
    "Attr",
    "BindingFailed",
    "BindingSucceeded",
    "StunClient",
    "StunFailed",
    "StunMessage",
    "StunParseError",
    "decode",
    "encode_binding_request",
    "encode_binding_response",
    "encode_message",
    "is_stun",
]

log = logging.getLogger("crust.nat.stun")


MAGIC_COOKIE = 0x2112A442
_HEADER = struct.Struct("!HHI12s")
_FINGERPRINT_XOR = 0x5354554E

BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

#: Largest message :func:`decode` accepts: a binding response is ~100 bytes;
#: anything near the UDP limit is not a STUN answer we asked for.
MAX_MESSAGE = 2048


class Attr(enum.IntEnum):
    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    ERROR_CODE = 0x0009
    XOR_MAPPED_ADDRESS = 0x0020
    #: RFC 5780 §7.6: filler, here so that a request is at least as large as
    #: the answer it asks for (crust nodes answer no smaller request: no
    #: amplification, crust.nat.mapping).
    PADDING = 0x0026
    SOFTWARE = 0x8022
    FINGERPRINT = 0x8028
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


class StunParseError(ValueError):
    """Bytes that are not a well-formed STUN message; the text says why."""


@dataclass(frozen=True, slots=True)
class StunMessage:
    """A decoded message: its type, transaction id and attributes in order
    (value bytes without padding; unknown attributes are kept, not read)."""

    msg_type: int
    txid: bytes
    attrs: tuple[tuple[int, bytes], ...]

    def get(self, attr: int) -> bytes | None:
        for t, v in self.attrs:
            if t == attr:
                return v
        return None

    def address(self, attr: Attr) -> Addr | None:
        """An address attribute, decoded (XOR ones un-XORed). Raises
        :class:`StunParseError` if present but malformed."""
        value = self.get(attr)
        if value is None:
            return None
        return _decode_address(value, self.txid, xor=attr == Attr.XOR_MAPPED_ADDRESS)

    def error_code(self) -> tuple[int, str] | None:
        value = self.get(Attr.ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise StunParseError(f"ERROR-CODE of {len(value)} bytes, needs >= 4")
        code = (value[2] & 0x7) * 100 + value[3]
        return code, value[4:].decode("utf-8", "replace")


def is_stun(data: bytes) -> bool:
    """Cheap test for sockets shared with other protocols: first two bits
    zero and the magic cookie in place (RFC 8489 §7)."""
    return (
        len(data) >= 20
        and data[0] & 0xC0 == 0
        and int.from_bytes(data[4:8], "big") == MAGIC_COOKIE
    )


def decode(data: bytes) -> StunMessage:
    """Parses one STUN message from untrusted bytes."""
    n = len(data)
    if n < 20:
        raise StunParseError(f"{n} bytes is shorter than the 20-byte STUN header")
    if n > MAX_MESSAGE:
        raise StunParseError(f"{n} bytes is over the {MAX_MESSAGE}-byte limit")
    msg_type, length, cookie, txid = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise StunParseError(f"message type 0x{msg_type:04x} has the top two bits set")
    if cookie != MAGIC_COOKIE:
        raise StunParseError(f"magic cookie 0x{cookie:08x}, expected 0x{MAGIC_COOKIE:08x}")
    if length % 4:
        raise StunParseError(f"message length {length} is not a multiple of 4")
    if 20 + length != n:
        raise StunParseError(f"header says {length} attribute bytes, datagram has {n - 20}")
    attrs: list[tuple[int, bytes]] = []
    pos = 20
    while pos < n:
        if n - pos < 4:
            raise StunParseError(f"truncated attribute header at offset {pos}")
        atype, alen = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + alen
        if end > n:
            raise StunParseError(
                f"attribute 0x{atype:04x} at offset {pos} claims {alen} bytes, {n - pos - 4} left"
            )
        if atype == Attr.FINGERPRINT:
            if alen != 4 or end != n:
                raise StunParseError("FINGERPRINT must be 4 bytes and the last attribute")
            want = (zlib.crc32(data[:pos]) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            got = int.from_bytes(data[pos + 4 : end], "big")
            if got != want:
                raise StunParseError(f"FINGERPRINT 0x{got:08x} != computed 0x{want:08x}")
        attrs.append((atype, bytes(data[pos + 4 : end])))
        pos = end + (-alen % 4)
    if pos != n:
        raise StunParseError("last attribute's padding runs past the message")
    return StunMessage(msg_type, bytes(txid), tuple(attrs))


def _xor_address(raw: bytes, txid: bytes) -> bytes:
    # IPv4 is XORed with the cookie; IPv6 with the cookie then the txid.
    key = (MAGIC_COOKIE.to_bytes(4, "big") + txid)[: len(raw)]
    return bytes(a ^ b for a, b in zip(raw, key, strict=True))


def _decode_address(value: bytes, txid: bytes, *, xor: bool) -> Addr:
    if len(value) < 4 or value[0] != 0:
        raise StunParseError(f"address attribute of {len(value)} bytes is malformed")
    family = value[1]
    port = int.from_bytes(value[2:4], "big")
    raw = value[4:]
    if family == 0x01:
        if len(raw) != 4:
            raise StunParseError(f"IPv4 address attribute carries {len(raw)} address bytes")
    elif family == 0x02:
        if len(raw) != 16:
            raise StunParseError(f"IPv6 address attribute carries {len(raw)} address bytes")
    else:
        raise StunParseError(f"address family 0x{family:02x} is neither IPv4 nor IPv6")
    if xor:
        port ^= MAGIC_COOKIE >> 16
        raw = _xor_address(raw, txid)
    return str(ipaddress.ip_address(raw)), port


def _attr(atype: int, value: bytes) -> bytes:
    return struct.pack("!HH", atype, len(value)) + value + b"\0" * (-len(value) % 4)


def _encode_address(addr: Addr, txid: bytes, *, xor: bool) -> bytes:
    ip = ipaddress.ip_address(addr[0])
    raw = ip.packed
    port = addr[1]
    if xor:
        port ^= MAGIC_COOKIE >> 16
        raw = _xor_address(raw, txid)
    return bytes([0, 1 if ip.version == 4 else 2]) + port.to_bytes(2, "big") + raw


def encode_message(
    msg_type: int, txid: bytes, attrs: list[tuple[int, bytes]], *, fingerprint: bool = False
) -> bytes:
    """Encodes a message (attributes padded; FINGERPRINT appended last)."""
    if len(txid) != 12:
        raise ValueError(f"transaction id must be 12 bytes, got {len(txid)}")
    body = b"".join(_attr(t, v) for t, v in attrs)
    extra = 8 if fingerprint else 0
    msg = _HEADER.pack(msg_type, len(body) + extra, MAGIC_COOKIE, txid) + body
    if fingerprint:
        crc = (zlib.crc32(msg) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        msg += _attr(Attr.FINGERPRINT, crc.to_bytes(4, "big"))
    return msg


def encode_binding_request(
    txid: bytes,
    *,
    change_ip: bool = False,
    change_port: bool = False,
    fingerprint: bool = True,
    pad_to: int = 0,
) -> bytes:
    """A Binding request, with an RFC 5780 CHANGE-REQUEST when asked, and
    a PADDING attribute that makes it at least ``pad_to`` bytes long."""
    attrs: list[tuple[int, bytes]] = []
    if change_ip or change_port:
        flags = (4 if change_ip else 0) | (2 if change_port else 0)
        attrs.append((Attr.CHANGE_REQUEST, flags.to_bytes(4, "big")))
    if pad_to:
        size = 20 + sum(4 + len(v) + (-len(v) % 4) for _, v in attrs) + (8 if fingerprint else 0)
        # The PADDING attribute's own 4-byte header counts too.
        fill = max(0, pad_to - size - 4)
        attrs.append((Attr.PADDING, bytes(fill + (-fill % 4))))
    return encode_message(BINDING_REQUEST, txid, attrs, fingerprint=fingerprint)


def encode_binding_response(
    txid: bytes,
    mapped: Addr,
    *,
    xor: bool = True,
    plain: bool = False,
    other: Addr | None = None,
    fingerprint: bool = False,
) -> bytes:
    """A Binding success response (used by tests and the fuzzer's corpus)."""
    attrs: list[tuple[int, bytes]] = []
    if plain:
        attrs.append((Attr.MAPPED_ADDRESS, _encode_address(mapped, txid, xor=False)))
    if xor:
        attrs.append((Attr.XOR_MAPPED_ADDRESS, _encode_address(mapped, txid, xor=True)))
    if other is not None:
        attrs.append((Attr.OTHER_ADDRESS, _encode_address(other, txid, xor=False)))
    return encode_message(BINDING_SUCCESS, txid, attrs, fingerprint=fingerprint)


# -- events -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BindingSucceeded:
    """A binding transaction got its answer. ``mapped``: where the server
    saw us; ``source``: the address the response came from; ``other``: the
    server's RFC 5780 OTHER-ADDRESS, if it has one; ``rtt``: seconds from
    the last transmission to the answer (``None`` when the request was
    retransmitted, as in RFC 6298's Karn rule); ``sent``: requests sent."""

    txid: bytes
    server: Addr
    mapped: Addr
    source: Addr
    other: Addr | None
    rtt: float | None
    sent: int


@dataclass(frozen=True, slots=True)
class BindingFailed:
    """A binding transaction ended without an answer (``reason``:
    "timeout" or the server's error code and text)."""

    txid: bytes
    server: Addr
    reason: str
    sent: int


StunEvent = BindingSucceeded | BindingFailed


@dataclass(slots=True)
class _Transaction:
    server: Addr
    request: bytes
    rto: float
    rc: int
    rm: int
    next_send: float
    first_sent: float | None = None
    last_sent: float = 0.0
    sent: int = 0
    deadline: float | None = None


class StunClient:
    """Binding transactions over one local socket (one NAT mapping).

    ``rto``/``rc``/``rm`` are RFC 8489's; ``fingerprint`` adds FINGERPRINT
    to requests (some servers insist on it; coturn accepts both).
    ``ignored`` counts datagrams that failed to parse or answered nothing
    of ours."""

    def __init__(
        self, *, rto: float = 0.5, rc: int = 7, rm: int = 16, fingerprint: bool = True
    ) -> None:
        if not 0.01 <= rto <= 60.0:
            raise ValueError(f"rto must be 0.01..60 s, got {rto}")
        if not 1 <= rc <= 16:
            raise ValueError(f"rc must be 1..16, got {rc}")
        if not 1 <= rm <= 64:
            raise ValueError(f"rm must be 1..64, got {rm}")
        self.rto = rto
        self.rc = rc
        self.rm = rm
        self.fingerprint = fingerprint
        self.ignored = 0
        self._pending: dict[bytes, _Transaction] = {}
        self._events: deque[StunEvent] = deque()

    def binding(
        self,
        server: Addr,
        now: float,
        *,
        change_ip: bool = False,
        change_port: bool = False,
        txid: bytes | None = None,
        pad_to: int = 0,
    ) -> bytes:
        """Starts a binding transaction to ``server``; returns its id. The
        request goes out on the next ``datagrams_to_send``; ``pad_to``:
        its least size in bytes (a crust node answers no request smaller
        than its answer)."""
        txid = os.urandom(12) if txid is None else txid
        if txid in self._pending:
            raise ValueError(f"transaction {txid.hex()} is already running")
        req = encode_binding_request(
            txid, change_ip=change_ip, change_port=change_port, fingerprint=self.fingerprint,
            pad_to=pad_to,
        )  # fmt: skip
        self._pending[txid] = _Transaction(server, req, self.rto, self.rc, self.rm, now)
        return txid

    def cancel(self, txid: bytes) -> None:
        self._pending.pop(txid, None)

    @property
    def active(self) -> int:
        return len(self._pending)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Addr]]:
        out = []
        for tx in self._pending.values():
            if tx.sent < tx.rc and now >= tx.next_send:
                out.append((tx.request, tx.server))
                if tx.first_sent is None:
                    tx.first_sent = now
                tx.last_sent = now
                # 0, RTO, 3 RTO, 7 RTO...: each wait doubles the previous one.
                tx.next_send = now + tx.rto * (1 << tx.sent)
                tx.sent += 1
                if tx.sent == tx.rc:
                    tx.deadline = now + tx.rm * tx.rto
        return out

    def get_timer(self) -> float | None:
        """When ``handle_timer`` (or ``datagrams_to_send``) next has work."""
        times = [
            tx.deadline if tx.deadline is not None else tx.next_send
            for tx in self._pending.values()
        ]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for txid, tx in list(self._pending.items()):
            if tx.deadline is not None and now >= tx.deadline:
                del self._pending[txid]
                log.debug("STUN %s: no answer after %d requests", tx.server, tx.sent)
                self._events.append(BindingFailed(txid, tx.server, "timeout", tx.sent))

    def receive_datagram(self, data: bytes, addr: Addr, now: float) -> bool:
        """Feeds a datagram; True if it answered one of our transactions.
        Malformed or unrelated datagrams are counted and dropped."""
        if not is_stun(data):
            self.ignored += 1
            return False
        try:
            msg = decode(data)
        except StunParseError as e:
            self.ignored += 1
            log.debug("STUN datagram from %s dropped: %s", addr, e)
            return False
        tx = self._pending.get(msg.txid)
        if tx is None or msg.msg_type not in (BINDING_SUCCESS, BINDING_ERROR):
            self.ignored += 1
            return False
        try:
            if msg.msg_type == BINDING_ERROR:
                err = msg.error_code()
                reason = f"error {err[0]} {err[1]}" if err else "error response without a code"
                del self._pending[msg.txid]
                self._events.append(BindingFailed(msg.txid, tx.server, reason, tx.sent))
                return True
            mapped = msg.address(Attr.XOR_MAPPED_ADDRESS) or msg.address(Attr.MAPPED_ADDRESS)
            other = msg.address(Attr.OTHER_ADDRESS)
        except StunParseError as e:
            self.ignored += 1
            log.debug("STUN response from %s dropped: %s", addr, e)
            return False
        if mapped is None:
            self.ignored += 1
            log.debug("STUN response from %s has no mapped address", addr)
            return False
        del self._pending[msg.txid]
        rtt = now - tx.last_sent if tx.sent == 1 else None
        self._events.append(
            BindingSucceeded(msg.txid, tx.server, mapped, (addr[0], addr[1]), other, rtt, tx.sent)
        )
        return True

    def next_event(self) -> StunEvent | None:
        return self._events.popleft() if self._events else None
