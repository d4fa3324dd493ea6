"""Handshake packets: the constants of the wire format, the network tag and
the MACs (mac1, mac2) and prologue every handshake packet is built with.

Layout: see :mod:`crust.handshake` (the long header itself is crust/wire.py).
"""

from __future__ import annotations

import hashlib

from crust import noise
from crust.identity import PeerId
from crust.wire import CID_LEN, HEADER_LEN, long_header

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
