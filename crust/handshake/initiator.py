"""The initiator state machine: the connecting side of one handshake."""

from __future__ import annotations

import enum
import hmac
import logging

import nacl.bindings as sodium
import nacl.exceptions

from crust import noise
from crust.errors import HandshakeError, HandshakeTimeout, MalformedPacket
from crust.handshake.ciphers import choose_aead, cipher_names
from crust.handshake.keys import _initial_keys
from crust.handshake.packets import (
    _COOKIE_NONCE_LEN,
    _COOKIE_REPLY_LEN,
    _MIN_PACKET,
    _ZERO_CID,
    _ZERO_MAC,
    INITIATION_SIZE,
    MAC_LEN,
    TYPE_COOKIE_REPLY,
    TYPE_FINISH,
    TYPE_INITIATION,
    TYPE_INITIATION_IK,
    TYPE_RESPONSE,
    VERSION,
    _header,
    _labelled_key,
    _mac,
    _network_bytes,
    _prologue,
    _with_macs,
    network_tag,
)
from crust.handshake.payload import (
    Payload,
    TransportParams,
    _bound_identity,
    decode_payload_untrusted,
    encode_payload,
)
from crust.handshake.result import HandshakeResult
from crust.identity import Identity, PeerId
from crust.noise import NoiseError, Pattern
from crust.wire import CID_LEN, DST_CID, HEADER_LEN, LONG_HEADER_FLAGS, SRC_CID, TAG
from crust.wire import Address as Addr

# One logger name for the whole handshake, as before it was split in modules.
logger = logging.getLogger("crust.handshake")

# Initiator timing: the first retransmission after 500 ms, doubling to 4 s;
# the handshake fails after timeout_us (10 s by default). After an XX
# initiator sends its finish it repeats it (same schedule) until confirm(),
# for at least _FINISH_LINGER_US.
_FIRST_RETRANSMIT_US = 500_000
_MAX_RETRANSMIT_US = 4_000_000
_DEFAULT_TIMEOUT_US = 10_000_000
_FINISH_LINGER_US = 3_000_000


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
