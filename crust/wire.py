"""The long header, defined once: byte layout and accessors (sans-IO).

Every datagram crust sends has, in byte 0, a flag for its header form
(csrc/crust.h). A *long* header (bit ``0x80``) marks a handshake packet
(crust/handshake) or a punch packet (crust/nat/punch.py); the C engine never
parses those and hands them up as "unrouted". Its layout::

    byte  0       flags: 0x80 long, 0x40 fixed bit, low 6 bits packet type
    byte  1       version
    bytes 2..6    network tag (BLAKE2b of the network name, 4 bytes)
    bytes 6..14   destination connection id (punch: session id)
    bytes 14..22  source connection id

A datagram with both top bits clear is STUN (RFC 5389 keeps them zero);
short-header (engine) packets have 0x40 set and 0x80 clear.

This module only reads and builds bytes: it imports no I/O module and
nothing else from crust, so every layer may import it. The offsets used to
be spelled out (``data[6:14]``) in four modules; use the accessors instead.
"""

from __future__ import annotations

__all__ = [
    "CID_LEN",
    "DST_CID",
    "FIXED_BIT",
    "HEADER_LEN",
    "LONG_HEADER",
    "LONG_HEADER_FLAGS",
    "SRC_CID",
    "TAG",
    "TAG_LEN",
    "TYPE_MASK",
    "Address",
    "dst_cid",
    "is_long_header",
    "is_stun_shaped",
    "long_header",
    "packet_type",
    "src_cid",
]

#: A UDP/TCP socket address as asyncio and ``socket`` give it: (host, port).
Address = tuple[str, int]

#: Byte 0: set on every long (handshake / punch) header.
LONG_HEADER = 0x80
#: Byte 0: set on every crust packet, long or short (STUN keeps it clear).
FIXED_BIT = 0x40
#: Byte 0 of a long header: both bits above, ORed with the packet type.
LONG_HEADER_FLAGS = LONG_HEADER | FIXED_BIT
#: Byte 0 of a long header: the packet type (crust/handshake 1..5, punch 6).
TYPE_MASK = 0x3F

#: Connection ids are 8 bytes (the C engine's CRUST_CID_LEN; a test checks).
CID_LEN = 8
TAG_LEN = 4
#: Slices of the long header.
TAG = slice(2, 2 + TAG_LEN)
DST_CID = slice(2 + TAG_LEN, 2 + TAG_LEN + CID_LEN)
SRC_CID = slice(DST_CID.stop, DST_CID.stop + CID_LEN)
HEADER_LEN = SRC_CID.stop


def long_header(ptype: int, version: int, tag: bytes, dcid: bytes, scid: bytes) -> bytes:
    """The 22 header bytes of a long-header packet of type ``ptype``."""
    if not 0 <= ptype <= TYPE_MASK:
        raise ValueError(f"long-header packet type out of range: {ptype}")
    if len(tag) != TAG_LEN or len(dcid) != CID_LEN or len(scid) != CID_LEN:
        raise ValueError("long header: tag must be 4 bytes, connection ids 8")
    return bytes((LONG_HEADER_FLAGS | ptype, version)) + tag + dcid + scid


def is_long_header(data: bytes) -> bool:
    """Whether byte 0 marks a long header (says nothing about the length)."""
    return bool(data) and bool(data[0] & LONG_HEADER)


def is_stun_shaped(data: bytes) -> bool:
    """Whether byte 0 has both top bits clear: only STUN looks like that."""
    return bool(data) and not data[0] & LONG_HEADER_FLAGS


def packet_type(data: bytes) -> int:
    """The packet type of a long-header datagram (0 if it is empty)."""
    return data[0] & TYPE_MASK if data else 0


def dst_cid(data: bytes) -> bytes:
    """The destination connection id of a long-header datagram, or ``b""``
    when it is too short to hold one (an untrusted datagram may be)."""
    return bytes(data[DST_CID]) if len(data) >= DST_CID.stop else b""


def src_cid(data: bytes) -> bytes:
    """The source connection id of a long-header datagram, or ``b""`` when
    it is too short to hold one."""
    return bytes(data[SRC_CID]) if len(data) >= SRC_CID.stop else b""
