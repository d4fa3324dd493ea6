"""The responder state machine: the listening side, for any number of
peers, with its cookie and rate-limit admission."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

import nacl.bindings as sodium

from crust import noise
from crust.admission import source_key
from crust.errors import MalformedPacket
from crust.handshake.ciphers import choose_aead, cipher_names
from crust.handshake.keys import _initial_keys
from crust.handshake.packets import (
    _COOKIE_NONCE_LEN,
    _MIN_PACKET,
    _ZERO_CID,
    _ZERO_MAC,
    AMPLIFICATION_LIMIT,
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
from crust.identity import Identity
from crust.noise import NoiseError, Pattern
from crust.wire import CID_LEN, DST_CID, HEADER_LEN, LONG_HEADER_FLAGS, SRC_CID, TAG
from crust.wire import Address as Addr

# One logger name for the whole handshake, as before it was split in modules.
logger = logging.getLogger("crust.handshake")


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
    "replies_dropped",  # queued replies pushed out unsent (datagrams_to_send not called)
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
# Replies held between two datagrams_to_send calls. A received datagram
# makes at most one reply and HandshakeDriver drains them after every
# receive, so it never holds more than one; the room is for a caller that
# feeds a whole receive batch first. Past it the oldest reply is dropped,
# not the new one: every reply answers an initiation its sender repeats
# until answered (a lost reply costs it one retransmission), the oldest
# replies are the likeliest to have been asked for again since, and the
# newest answer initiators most likely still waiting. Dropping only ever
# sends less: the 3x rule holds for each reply as before.
_MAX_QUEUED_REPLIES = 64


class Responder:
    """The listening side: one per listener, for any number of peers.

    Driven like the :class:`~crust.handshake.Initiator` (and an aioquic
    connection): feed it every handshake datagram with
    ``receive_datagram``, then send what ``datagrams_to_send`` returns
    (``(bytes, addr)`` pairs: responses and cookie replies, at most one per
    datagram received). Each completed handshake is then available from
    :meth:`take_completed`, and the addresses that sent junk from
    :meth:`take_failures`. It never raises on input: everything it drops
    is counted in ``stats``. Replies not taken are held up to 64
    (``_MAX_QUEUED_REPLIES``); past that the oldest is dropped and counted
    (``replies_dropped``), so a flood cannot grow the queue.
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
        # Replies not yet taken: bounded, the oldest dropped first (see
        # _MAX_QUEUED_REPLIES).
        self._outbox: deque[tuple[bytes, Addr]] = deque()
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
    def params(self) -> TransportParams:
        """The transport parameters it announces."""
        return self._params

    @property
    def pending(self) -> int:
        """Handshakes held (in progress, or recently completed)."""
        return len(self._by_mac1)

    @property
    def unfinished(self) -> int:
        """Handshakes held that are still waiting for their finish."""
        return self._unfinished

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

    # -- the aioquic-like interface -------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Addr, now: int) -> None:
        """Handle one handshake datagram from ``addr``; its reply, if any,
        leaves with the next :meth:`datagrams_to_send`."""
        st = self.stats
        before = sum(st[k] for k in _JUNK_STATS)
        reply = self._receive(data, addr, now)
        if sum(st[k] for k in _JUNK_STATS) != before:
            failed = self._failed
            failed[addr] = failed.pop(addr, 0) + 1
            if len(failed) > _MAX_FAILED_SOURCES:
                failed.popitem(last=False)
        if reply is not None:
            outbox = self._outbox
            if len(outbox) >= _MAX_QUEUED_REPLIES:
                outbox.popleft()
                st["replies_dropped"] += 1
            outbox.append((reply, addr))

    def datagrams_to_send(self, now: int) -> list[tuple[bytes, Addr]]:
        """The replies not yet taken, oldest first, as ``(bytes, addr)``."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    # -- internals -------------------------------------------------------------------

    def _receive(self, data: bytes, addr: Addr, now: int) -> bytes | None:
        st = self.stats
        st["datagrams"] += 1
        self._expire(now)
        data = bytes(data)
        n = len(data)
        if n < _MIN_PACKET or data[0] & LONG_HEADER_FLAGS != LONG_HEADER_FLAGS:
            st["malformed"] += 1
            return None
        if data[1] != VERSION:
            st["version"] += 1
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "dropped a handshake packet from %s: protocol version %d, ours is %d",
                    addr,
                    data[1],
                    VERSION,
                )
            return None
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
            return None
        ptype = data[0] & 0x3F
        pattern: Pattern
        if ptype == TYPE_INITIATION or ptype == TYPE_INITIATION_IK:
            if n < INITIATION_SIZE:
                st["short_initiation"] += 1
                return None
            pattern = "IK" if ptype == TYPE_INITIATION_IK else "XX"
        elif ptype == TYPE_FINISH:
            pattern = "XX"
        else:
            st["malformed"] += 1
            return None
        mac1_at = n - 2 * MAC_LEN
        mac1 = data[mac1_at : mac1_at + MAC_LEN]
        h = self._mac1_hashers[pattern].copy()
        h.update(memoryview(data)[:mac1_at])
        if not hmac.compare_digest(mac1, h.digest()):
            st["mac1"] += 1
            return None
        if ptype == TYPE_FINISH:
            self._on_finish(data, mac1_at, addr, now)
            return None
        return self._on_initiation(data, pattern, mac1, addr, now)

    # -- initiations -----------------------------------------------------------------

    def _on_initiation(
        self, data: bytes, pattern: Pattern, mac1: bytes, addr: Addr, now: int
    ) -> bytes | None:
        st = self.stats
        if data[DST_CID] != _ZERO_CID:
            st["malformed"] += 1
            return None
        known = self._by_mac1.get(mac1)
        if known is not None:
            if known.addr != addr:
                # A copy replayed from elsewhere (mac2 is not under mac1, so
                # a flipped mac2 lands here too). Answering would send bytes
                # to an address that never initiated; a real initiator
                # whose NAT moved it meanwhile times out and starts over.
                st["replayed"] += 1
                return None
            st["retransmits"] += 1
            return self._reply(known.response, data)
        # A source past its share is under load on its own, without taking
        # the listener's tokens (which would put everyone under load).
        if self._source_busy(addr, now) or self._under_load(now):
            if not self._mac2_valid(data, addr, now):
                if not self._cookie_due(addr, now):
                    st["cookie_limited"] += 1
                    return None
                st["cookie_replies"] += 1
                return self._reply(self._cookie_reply(data, pattern, mac1, addr, now), data)
            if not self._source_allowed(addr, now):
                st["rate_limited"] += 1
                return None
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
            return None
        peer: Payload | None = None
        if pattern == "IK":
            peer = self._check_payload(raw, hs, remote_cid)
            if peer is None:
                return None
        local_cid = self._fresh_cid()
        ours = Payload(self._identity.peer_id, local_cid, self._params, addr)
        try:
            msg2 = hs.write_message(encode_payload(ours))
        except NoiseError:
            st["noise"] += 1  # e.g. a low-order ephemeral key in XX
            return None
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
        return self._reply(response, data)

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

    def _reply(self, reply: bytes, request: bytes) -> bytes | None:
        # Initiations are padded so this never triggers; it is the last
        # line of the anti-amplification rule, not the mechanism.
        if len(reply) > AMPLIFICATION_LIMIT * len(request):
            self.stats["amplification"] += 1
            logger.warning(
                "handshake reply of %d bytes to a %d-byte packet withheld", len(reply), len(request)
            )
            return None
        return reply

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
