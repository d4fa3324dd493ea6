"""The Noise Protocol Framework (revision 34), as much of it as crust uses.

Suite ``25519_ChaChaPoly_BLAKE2b``, handshake patterns ``XX`` and ``IK``, no
PSK modes. The objects follow the specification's own names and layering
(``CipherState`` < ``SymmetricState`` < ``HandshakeState``) so the code can
be read beside https://noiseprotocol.org/noise.html; every primitive comes
from libsodium (through PyNaCl) or hashlib.

Two deliberate strengthenings over the bare specification:

- ``HandshakeState.read_message`` and ``write_message`` are atomic: when they
  raise, the state is exactly as before the call. A forged or damaged packet
  therefore cannot derail a handshake in progress; the caller just drops it.
- Every DH output is checked against all-zero, which is what a low-order
  (small-subgroup) public key produces; such handshakes are refused.

Whatever bytes ``read_message`` and ``CipherState.decrypt_with_ad`` are
given, the only exception they raise is :class:`NoiseError`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Literal, NamedTuple

# Imported for its side effect: sodium_init() (CPU feature detection), which
# the direct calls into libsodium below rely on.
import nacl.bindings  # noqa: F401
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from crust.errors import NoiseError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "MAX_MESSAGE_LEN",
    "CipherState",
    "HandshakeState",
    "NoiseError",
    "Pattern",
    "SymmetricState",
    "dh",
    "generate_keypair",
    "hkdf",
    "hmac_hash",
    "protocol_name",
    "public_key",
]

DHLEN = 32
HASHLEN = 64
KEYLEN = 32
TAGLEN = 16
#: Largest Noise message (handshake or transport), per the specification.
MAX_MESSAGE_LEN = 65535
#: 2**64 - 1 is reserved (it is the nonce ``rekey`` uses).
_MAX_NONCE = 2**64 - 1
_ZERO_DH = bytes(DHLEN)

Pattern = Literal["XX", "IK"]

# Token lists per pattern: (initiator pre-message, responder pre-message,
# message patterns in order, initiator first).
_PATTERNS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[str, ...], ...]]] = {
    "XX": ((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    "IK": ((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
}


def protocol_name(pattern: Pattern) -> bytes:
    return b"Noise_" + pattern.encode() + b"_25519_ChaChaPoly_BLAKE2b"


# ---- DH functions (Curve25519) ---------------------------------------------


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    if len(private) != DHLEN:
        raise NoiseError(f"X25519 private key must be {DHLEN} bytes, got {len(private)}")
    out = _ffi.new("unsigned char[]", DHLEN)
    _lib.crypto_scalarmult_base(out, bytes(private))
    return bytes(_ffi.buffer(out, DHLEN))


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair ``(private, public)`` (GENERATE_KEYPAIR)."""
    private = os.urandom(DHLEN)
    return private, public_key(private)


def dh(private: bytes, public: bytes) -> bytes:
    """X25519 (DH). Refuses an all-zero result: the peer sent a low-order
    point, which would make the shared secret predictable."""
    if len(private) != DHLEN or len(public) != DHLEN:
        # libsodium reads 32 bytes from each, unchecked: never pass short ones.
        raise NoiseError("X25519 keys must be 32 bytes")
    out = _ffi.new("unsigned char[]", DHLEN)
    # Straight into libsodium (PyNaCl's wrapper re-checks what we checked).
    # It returns -1 for an all-zero output, i.e. a low-order public key.
    rc = _lib.crypto_scalarmult(out, bytes(private), bytes(public))
    result = bytes(_ffi.buffer(out, DHLEN))
    if rc != 0 or hmac.compare_digest(result, _ZERO_DH):
        raise NoiseError("DH with a low-order public key")
    return result


# ---- hash functions (BLAKE2b) ----------------------------------------------


_blake2b = hashlib.blake2b
#: BLAKE2b's block size: HMAC pads its key to this.
_BLOCKLEN = 128
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))


def _hash(data: bytes) -> bytes:
    return _blake2b(data).digest()


def _hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """HMAC's inner and outer key blocks (RFC 2104: K xor ipad, K xor opad)."""
    if len(key) > _BLOCKLEN:
        key = _blake2b(key).digest()
    key = key.ljust(_BLOCKLEN, b"\x00")
    return key.translate(_IPAD), key.translate(_OPAD)


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) over BLAKE2b-512, as Noise defines it (not BLAKE2b's
    own keyed mode). The same bytes as ``hmac.digest(key, data,
    hashlib.blake2b)``, in two hash calls."""
    inner, outer = _hmac_pads(key)
    return _blake2b(outer + _blake2b(inner + data).digest()).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """The specification's HKDF: 2 or 3 outputs of HASHLEN bytes."""
    inner, outer = _hmac_pads(hmac_hash(chaining_key, input_key_material))
    # HMAC(temp_key, ...) with temp_key's pads computed once.
    out1 = _blake2b(outer + _blake2b(inner + b"\x01").digest()).digest()
    out2 = _blake2b(outer + _blake2b(inner + out1 + b"\x02").digest()).digest()
    if num_outputs == 2:
        return out1, out2
    return out1, out2, _blake2b(outer + _blake2b(inner + out2 + b"\x03").digest()).digest()


# ---- CipherState -------------------------------------------------------------


def _nonce(n: int) -> bytes:
    # ChaChaPoly: 32 bits of zeros, then the 64-bit counter little-endian.
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


# ChaCha20-Poly1305 (IETF) straight from libsodium through cffi: PyNaCl's
# wrappers re-validate every argument, which costs more than the cipher on
# handshake-sized messages. The callers guarantee the sizes libsodium
# reads unchecked (a 32-byte key, a 12-byte nonce); lengths go with buffers.


def _seal(key: bytes, nonce: bytes, ad: bytes, plaintext: bytes) -> bytes:
    n = len(plaintext) + TAGLEN
    out = _ffi.new("unsigned char[]", n)
    _lib.crypto_aead_chacha20poly1305_ietf_encrypt(
        out, _ffi.NULL, plaintext, len(plaintext), ad, len(ad), _ffi.NULL, nonce, key
    )
    return bytes(_ffi.buffer(out, n))


def _open(key: bytes, nonce: bytes, ad: bytes, ciphertext: bytes) -> bytes | None:
    """The plaintext, or None when authentication fails."""
    n = len(ciphertext) - TAGLEN
    out = _ffi.new("unsigned char[]", max(n, 1))
    rc = _lib.crypto_aead_chacha20poly1305_ietf_decrypt(
        out, _ffi.NULL, _ffi.NULL, ciphertext, len(ciphertext), ad, len(ad), nonce, key
    )
    return bytes(_ffi.buffer(out, n)) if rc == 0 else None


class CipherState:
    """A key ``k`` (or none) and a 64-bit nonce counter ``n``."""

    __slots__ = ("_k", "n")

    def __init__(self, k: bytes | None = None) -> None:
        self._k: bytes | None = None
        self.n = 0
        if k is not None:
            self.initialize_key(k)

    def initialize_key(self, k: bytes | None) -> None:
        if k is not None:
            k = bytes(k)
            if len(k) != KEYLEN:
                raise NoiseError(f"cipher key must be {KEYLEN} bytes, got {len(k)}")
        self._k = k
        self.n = 0

    def has_key(self) -> bool:
        return self._k is not None

    @property
    def key(self) -> bytes | None:
        """The raw key (crust derives its packet keys from it after split)."""
        return self._k

    def set_nonce(self, n: int) -> None:
        self.n = n

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._k is None:
            return bytes(plaintext)
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce space exhausted: rekey or start a new session")
        out = _seal(self._k, _nonce(self.n), bytes(ad), bytes(plaintext))
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate. On failure the nonce is not advanced."""
        if self._k is None:
            return bytes(ciphertext)
        if self.n >= _MAX_NONCE:
            raise NoiseError("nonce space exhausted: rekey or start a new session")
        if len(ciphertext) < TAGLEN:
            raise NoiseError(f"ciphertext shorter than the {TAGLEN}-byte tag")
        out = _open(self._k, _nonce(self.n), bytes(ad), bytes(ciphertext))
        if out is None:
            raise NoiseError("decryption failed (wrong key, tampering or replay)")
        self.n += 1
        return out

    def rekey(self) -> None:
        """REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64-1, "", zeros)."""
        if self._k is None:
            raise NoiseError("rekey of a CipherState without a key")
        self._k = _seal(self._k, _nonce(_MAX_NONCE), b"", bytes(KEYLEN))[:KEYLEN]


# ---- SymmetricState ------------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and a CipherState."""

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, name: bytes) -> None:
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else _hash(name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher.initialize_key(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = hkdf(self.ck, b"", 2)
        return CipherState(temp_k1[:KEYLEN]), CipherState(temp_k2[:KEYLEN])


# ---- HandshakeState ------------------------------------------------------------


class HandshakeState:
    """One side of a Noise handshake.

    ``s`` is the local static X25519 private key; ``rs`` the remote static
    public key when it is known in advance (IK initiator); ``e`` fixes the
    ephemeral private key and exists for tests and test vectors only.
    ``s_pub`` is ``public_key(s)`` when the caller keeps it (it saves a
    scalar multiplication per handshake); it must be exactly that.
    Messages alternate, initiator first: call ``write_message`` when it is
    our turn and ``read_message`` when it is the peer's, until
    ``complete``; then ``split``.
    """

    def __init__(
        self,
        pattern: Pattern,
        initiator: bool,
        prologue: bytes,
        s: bytes,
        rs: bytes | None = None,
        e: bytes | None = None,
        *,
        s_pub: bytes | None = None,
    ) -> None:
        if pattern not in _PATTERNS:
            raise NoiseError(f"unsupported handshake pattern {pattern!r} (XX or IK)")
        pre_i, pre_r, self._messages = _PATTERNS[pattern]
        self.pattern: Pattern = pattern
        self.initiator = initiator
        self._s = bytes(s)
        if len(self._s) != DHLEN:
            raise NoiseError(f"X25519 private key must be {DHLEN} bytes, got {len(self._s)}")
        self._s_pub = public_key(self._s) if s_pub is None else bytes(s_pub)
        if len(self._s_pub) != DHLEN:
            raise NoiseError(f"static public key must be {DHLEN} bytes")
        self._e = bytes(e) if e is not None else None
        self._e_pub = public_key(self._e) if self._e is not None else None
        self._rs = bytes(rs) if rs is not None else None
        self._re: bytes | None = None
        if self._rs is not None and len(self._rs) != DHLEN:
            raise NoiseError(f"remote static key must be {DHLEN} bytes")
        self._sym = SymmetricState(protocol_name(pattern))
        self._sym.mix_hash(bytes(prologue))
        # Pre-messages: in IK the responder's static key is known up front.
        for owner_is_initiator, tokens in ((True, pre_i), (False, pre_r)):
            for _token in tokens:
                if owner_is_initiator == initiator:
                    self._sym.mix_hash(self._s_pub)
                elif self._rs is None:
                    raise NoiseError(f"{pattern} needs the responder's static key (rs)")
                else:
                    self._sym.mix_hash(self._rs)
        self._index = 0
        self._split: tuple[CipherState, CipherState] | None = None

    # -- public properties -------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._index >= len(self._messages)

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static X25519 public key, once received (or given)."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        """``h``: final, and fit for channel binding, once ``complete``."""
        return self._sym.h

    @property
    def is_my_turn(self) -> bool:
        """True when the next message is ours to write."""
        return not self.complete and (self._index % 2 == 0) == self.initiator

    # -- messages ------------------------------------------------------------------

    def write_message(self, payload: bytes = b"") -> bytes:
        if self.complete:
            raise NoiseError("handshake already complete")
        if not self.is_my_turn:
            raise NoiseError("not our turn to write: read the peer's message first")
        snap = self._save()
        try:
            return self._write(bytes(payload))
        except BaseException:
            self._restore(snap)
            raise

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's message and return its payload. On NoiseError
        the state is unchanged, so the caller can keep waiting for the real
        message."""
        if self.complete:
            raise NoiseError("handshake already complete")
        if self.is_my_turn:
            raise NoiseError("not our turn to read: write our message first")
        snap = self._save()
        try:
            return self._read(message)
        except BaseException:
            self._restore(snap)
            raise

    def split(self) -> tuple[CipherState, CipherState]:
        """``(initiator -> responder, responder -> initiator)`` CipherStates."""
        if self._split is None:
            raise NoiseError("split() before the handshake is complete")
        return self._split

    # -- internals -------------------------------------------------------------------

    def _write(self, payload: bytes) -> bytes:
        sym = self._sym
        out = bytearray()
        for token in self._messages[self._index]:
            if token == "e":
                if self._e is None:
                    self._e, self._e_pub = generate_keypair()
                assert self._e_pub is not None
                out += self._e_pub
                sym.mix_hash(self._e_pub)
            elif token == "s":
                out += sym.encrypt_and_hash(self._s_pub)
            else:
                sym.mix_key(self._dh_token(token))
        out += sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {len(out)} bytes exceeds {MAX_MESSAGE_LEN}")
        self._advance()
        return bytes(out)

    def _read(self, message: bytes) -> bytes:
        try:
            # Through memoryview: bytes(5) would quietly make 5 zero bytes.
            msg = memoryview(message).tobytes()
        except (TypeError, ValueError) as exc:
            raise NoiseError("handshake message must be bytes-like") from exc
        if len(msg) > MAX_MESSAGE_LEN:
            raise NoiseError(f"handshake message of {len(msg)} bytes exceeds {MAX_MESSAGE_LEN}")
        sym = self._sym
        pos = 0
        for token in self._messages[self._index]:
            if token == "e":
                if len(msg) - pos < DHLEN:
                    raise NoiseError("handshake message too short for an ephemeral key")
                self._re = msg[pos : pos + DHLEN]
                pos += DHLEN
                sym.mix_hash(self._re)
            elif token == "s":
                n = DHLEN + TAGLEN if sym.cipher.has_key() else DHLEN
                if len(msg) - pos < n:
                    raise NoiseError("handshake message too short for a static key")
                self._rs = sym.decrypt_and_hash(msg[pos : pos + n])
                pos += n
            else:
                sym.mix_key(self._dh_token(token))
        if sym.cipher.has_key() and len(msg) - pos < TAGLEN:
            raise NoiseError("handshake message too short for its payload tag")
        payload = sym.decrypt_and_hash(msg[pos:])
        self._advance()
        return payload

    def _dh_token(self, token: str) -> bytes:
        # "xy": x is the initiator's key, y the responder's; each side uses
        # its own private half and the peer's public half.
        mine, theirs = (token[0], token[1]) if self.initiator else (token[1], token[0])
        private = self._e if mine == "e" else self._s
        public = self._re if theirs == "e" else self._rs
        if private is None or public is None:
            raise NoiseError(f"DH token {token!r} before its keys are known")
        return dh(private, public)

    def _advance(self) -> None:
        self._index += 1
        if self.complete:
            self._split = self._sym.split()

    def _save(self) -> _Snapshot:
        sym = self._sym
        return _Snapshot(
            sym.ck,
            sym.h,
            sym.cipher.key,
            sym.cipher.n,
            self._e,
            self._e_pub,
            self._re,
            self._rs,
            self._index,
        )

    def _restore(self, snap: _Snapshot) -> None:
        sym = self._sym
        sym.ck, sym.h = snap.ck, snap.h
        sym.cipher = CipherState(snap.k)
        sym.cipher.n = snap.n
        self._e, self._e_pub = snap.e, snap.e_pub
        self._re, self._rs = snap.re, snap.rs
        self._index = snap.msg_index
        self._split = None


class _Snapshot(NamedTuple):
    """What a failed read or write must put back."""

    ck: bytes
    h: bytes
    k: bytes | None
    n: int
    e: bytes | None
    e_pub: bytes | None
    re: bytes | None
    rs: bytes | None
    msg_index: int
