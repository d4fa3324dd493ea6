"""The Noise Protocol Framework (revision 34), as much of it as crust uses.

Suite ``25519_ChaChaPoly_BLAKE2b``, handshake patterns ``XX`` and ``IK``, no
PSK modes. The objects follow the specification's own names and layering
(``CipherState`` < ``SymmetricState`` < ``HandshakeState``) so the code can
be read beside https://noiseprotocol.org/noise.html. The state machine and
the key schedule are C (csrc/noise.c, design note 0076); every primitive
comes from libsodium, reached through PyNaCl's function pointers
(crust/_sodium.py). The classes here are thin wrappers that keep the
Python API.

Two deliberate strengthenings over the bare specification:

- ``HandshakeState.read_message`` and ``write_message`` are atomic: when they
  raise, the state is exactly as before the call. A forged or damaged packet
  therefore cannot derail a handshake in progress; the caller just drops it.
- Every DH output is checked against all-zero, which is what a low-order
  (small-subgroup) public key produces; such handshakes are refused.

Whatever bytes ``read_message`` and ``CipherState.decrypt_with_ad`` are
given, the only exception they raise is :class:`NoiseError`.

``HandshakeState(..., masked=True)`` sends ephemeral keys as Elligator 2
representatives, 32 bytes that cannot be told from random ones
(docs/design/0082): a protocol of its own name, which only a masked peer
completes.
"""

from __future__ import annotations

import os
from typing import Literal

# crust/__init__.py imports crust._sodium, which hands libsodium's functions
# to the C core before anything here can run.
from crust import _core
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

Pattern = Literal["XX", "IK"]

#: The C core's numbers for the patterns (crust_noise_pattern).
_PATTERNS: dict[str, int] = {"XX": 0, "IK": 1}


#: Tries at a representable ephemeral key (each succeeds with probability
#: 1/2) before the random source is deemed broken.
_MAX_EPHEMERAL_DRAWS = 128


def protocol_name(pattern: Pattern, *, masked: bool = False) -> bytes:
    """The Noise protocol name. Masked ephemerals have no name in the
    specification: crust marks them in the DH field (csrc/noise.c)."""
    dh_name = b"25519elligator2" if masked else b"25519"
    return b"Noise_" + pattern.encode() + b"_" + dh_name + b"_ChaChaPoly_BLAKE2b"


# ---- DH functions (Curve25519) ---------------------------------------------


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return _core.noise_public_key(private)


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair ``(private, public)`` (GENERATE_KEYPAIR)."""
    private = os.urandom(DHLEN)
    return private, public_key(private)


def dh(private: bytes, public: bytes) -> bytes:
    """X25519 (DH). Refuses an all-zero result: the peer sent a low-order
    point, which would make the shared secret predictable."""
    return _core.noise_dh(private, public)


# ---- hash functions (BLAKE2b) ----------------------------------------------


def hmac_hash(key: bytes, data: bytes) -> bytes:
    """HMAC (RFC 2104) over BLAKE2b-512, as Noise defines it (not BLAKE2b's
    own keyed mode). The same bytes as ``hmac.digest(key, data,
    hashlib.blake2b)``."""
    return _core.noise_hmac(key, data)


def hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """The specification's HKDF: 2 or 3 outputs of HASHLEN bytes."""
    return _core.noise_hkdf(chaining_key, input_key_material, num_outputs)


# ---- CipherState -------------------------------------------------------------


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

    def _check_nonce(self) -> None:
        # n is a plain attribute: refuse what the C side's uint64 cannot hold.
        if not 0 <= self.n < _MAX_NONCE:
            raise NoiseError("nonce space exhausted: rekey or start a new session")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._k is None:
            return bytes(plaintext)
        self._check_nonce()
        out = _core.noise_encrypt(self._k, self.n, ad, plaintext)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """Decrypt and authenticate. On failure the nonce is not advanced."""
        if self._k is None:
            return bytes(ciphertext)
        self._check_nonce()
        out = _core.noise_decrypt(self._k, self.n, ad, ciphertext)
        self.n += 1
        return out

    def rekey(self) -> None:
        """REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64-1, "", zeros)."""
        if self._k is None:
            raise NoiseError("rekey of a CipherState without a key")
        self._k = _core.noise_rekey(self._k)


# ---- SymmetricState ------------------------------------------------------------


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and a CipherState.

    HandshakeState does not use this class (its SymmetricState lives in C);
    it is kept, over the same C primitives, for callers that build other
    exchanges from the specification's pieces.
    """

    __slots__ = ("cipher", "ck", "h")

    def __init__(self, name: bytes) -> None:
        self.h = name.ljust(HASHLEN, b"\x00") if len(name) <= HASHLEN else _core.noise_hash(name)
        self.ck = self.h
        self.cipher = CipherState()

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = hkdf(self.ck, input_key_material, 2)
        self.cipher.initialize_key(temp_k[:KEYLEN])

    def mix_hash(self, data: bytes) -> None:
        self.h = _core.noise_hash(self.h + data)

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

    ``masked``: the ephemeral key goes on the wire as the Elligator 2
    representative of a dirty public key (crust.elligator), under the
    protocol name ``protocol_name(pattern, masked=True)``; both ends must
    say so, or the handshake fails at its first authenticated message.
    About half the private keys have no representative: ``write_message``
    draws new ones (and tweaks) from ``os.urandom`` until one has. A fixed
    ``e`` (tests) comes with ``tweak`` (default 0) and is never replaced:
    without a representative, writing "e" raises NoiseError.
    """

    __slots__ = ("_c", "_fixed_e", "_split", "initiator", "pattern")

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
        masked: bool = False,
        tweak: int = 0,
    ) -> None:
        number = _PATTERNS.get(pattern) if isinstance(pattern, str) else None
        if number is None:
            raise NoiseError(f"unsupported handshake pattern {pattern!r} (XX or IK)")
        self.pattern: Pattern = pattern
        self.initiator = bool(initiator)
        # The ephemeral key is drawn here (the C core draws no randomness);
        # its public half is computed only when the "e" token is written,
        # so a responder that never answers spends nothing on it.
        self._fixed_e = e is not None
        if e is None:
            e = os.urandom(DHLEN)
            if masked:
                tweak = os.urandom(1)[0]
        self._c = _core.NoiseHandshake(
            number, self.initiator, prologue, s, s_pub, rs, e, bool(masked), tweak
        )
        self._split: tuple[CipherState, CipherState] | None = None

    # -- public properties -------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._c.complete

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static X25519 public key, once received (or given)."""
        return self._c.remote_static

    @property
    def handshake_hash(self) -> bytes:
        """``h``: final, and fit for channel binding, once ``complete``."""
        return self._c.handshake_hash

    @property
    def is_my_turn(self) -> bool:
        """True when the next message is ours to write."""
        return self._c.is_my_turn

    # -- messages ------------------------------------------------------------------

    @property
    def masked(self) -> bool:
        """True when ephemeral keys travel as Elligator representatives."""
        return self._c.masked

    def write_message(self, payload: bytes = b"") -> bytes:
        for _ in range(_MAX_EPHEMERAL_DRAWS):
            message = self._c.write_message(payload)
            if message is not None:
                return message
            # Masked, and this ephemeral key has no representative: the
            # write changed nothing; try another key.
            if self._fixed_e:
                raise NoiseError("the given ephemeral key has no Elligator representative")
            seed = os.urandom(DHLEN + 1)
            self._c.set_ephemeral(seed[:DHLEN], seed[DHLEN])
        raise NoiseError(f"no representable ephemeral key in {_MAX_EPHEMERAL_DRAWS} draws")

    def read_message(self, message: bytes) -> bytes:
        """Process the peer's message and return its payload. On NoiseError
        the state is unchanged, so the caller can keep waiting for the real
        message."""
        return self._c.read_message(message)

    def split(self) -> tuple[CipherState, CipherState]:
        """``(initiator -> responder, responder -> initiator)`` CipherStates."""
        if self._split is None:
            k1, k2 = self._c.split_keys()
            self._split = (CipherState(k1), CipherState(k2))
        return self._split
