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
- Both roles queue their output, drained by ``datagrams_to_send(now)``
  (design note 0074); the responder holds at most 64 replies not taken
  (the oldest dropped first), a driver taking them after every datagram.

Modules, one concept each (this package re-exports their public names, so
``from crust.handshake import ...`` is unchanged):

- :mod:`crust.handshake.packets`: wire constants, network tag, MACs, prologue
- :mod:`crust.handshake.payload`: the TLV payload and transport parameters
- :mod:`crust.handshake.ciphers`: packet ciphers and the choice of one
- :mod:`crust.handshake.keys`: key derivation and the key-update ratchet
- :mod:`crust.handshake.result`: :class:`HandshakeResult`
- :mod:`crust.handshake.initiator`, :mod:`crust.handshake.responder`: the
  two state machines
"""

from __future__ import annotations

from crust.errors import HandshakeError, HandshakeTimeout, MalformedPacket
from crust.handshake.ciphers import CIPHERS as CIPHERS
from crust.handshake.ciphers import aeads_from_names as aeads_from_names
from crust.handshake.ciphers import choose_aead as choose_aead
from crust.handshake.ciphers import cipher_names as cipher_names
from crust.handshake.ciphers import default_aeads as default_aeads
from crust.handshake.initiator import Initiator, InitiatorState
from crust.handshake.keys import PacketKeys
from crust.handshake.packets import _COOKIE_NONCE_LEN as _COOKIE_NONCE_LEN
from crust.handshake.packets import AMPLIFICATION_LIMIT as AMPLIFICATION_LIMIT
from crust.handshake.packets import INITIATION_SIZE, VERSION, long_header_prefix, network_tag
from crust.handshake.packets import MAC_LEN as MAC_LEN
from crust.handshake.packets import TYPE_COOKIE_REPLY as TYPE_COOKIE_REPLY
from crust.handshake.packets import TYPE_FINISH as TYPE_FINISH
from crust.handshake.packets import TYPE_INITIATION as TYPE_INITIATION
from crust.handshake.packets import TYPE_INITIATION_IK as TYPE_INITIATION_IK
from crust.handshake.packets import TYPE_RESPONSE as TYPE_RESPONSE
from crust.handshake.packets import _labelled_key as _labelled_key
from crust.handshake.packets import _mac as _mac
from crust.handshake.payload import (
    Payload,
    TransportParams,
    decode_payload_untrusted,
    encode_payload,
)
from crust.handshake.payload import _tlv as _tlv
from crust.handshake.responder import _MAX_FAILED_SOURCES as _MAX_FAILED_SOURCES
from crust.handshake.responder import CookiePolicy, Responder
from crust.handshake.result import HandshakeResult
from crust.wire import CID_LEN as CID_LEN
from crust.wire import HEADER_LEN as HEADER_LEN
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
