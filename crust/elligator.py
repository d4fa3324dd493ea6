"""Elligator 2 representatives for X25519 keys (csrc/elligator.h).

A representative is 32 bytes that cannot be told from uniformly random
bytes and decode to an X25519 public key (a Curve25519 u-coordinate). A
masked handshake sends representatives instead of public keys
(docs/design/0081-elligator2-representatives.md); nothing sends them yet.

Only about half of all public keys have a representative, and the keys
must be "dirty" (carry a random low-order component) for their
representatives to be uniform, so keys meant to be sent this way come from
:func:`generate`, which draws private keys until one fits. The private key
is an ordinary X25519 private key: X25519 with it against any peer key
gives the same result as with a key pair made the usual way, and a peer
computes X25519 against the decoded public key as usual.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Importing crust registers libsodium's crypto_scalarmult_base with the
# core (crust/_sodium.py).
import crust  # noqa: F401
from crust import _core

__all__ = ["SIZE", "KeyPair", "decode", "generate", "key_pair", "public_key", "representative"]

#: Length of private keys, public keys and representatives.
SIZE = _core.ELLIGATOR_BYTES


@dataclass(frozen=True, slots=True)
class KeyPair:
    """An X25519 key pair whose public key has a representative.

    ``public`` is the dirty public key (``decode(representative)``); a peer
    that decodes the representative gets it.
    """

    private: bytes
    public: bytes
    representative: bytes
    #: How many private keys were drawn to find this one (1, 2, ...).
    attempts: int


def decode(representative: bytes) -> bytes:
    """The public key (u-coordinate) a representative stands for. Any 32
    bytes decode: the top two bits are padding."""
    return _core.elligator_map(representative)


def representative(public: bytes, tweak: int) -> bytes | None:
    """A representative of ``public``, or None when it has none. ``tweak``
    is a random byte: bit 0 picks one of the two representatives, bits 6
    and 7 are the padding."""
    return _core.elligator_rev(public, tweak)


def public_key(private: bytes) -> bytes:
    """The dirty public key of an X25519 private key: the usual one plus
    the low-order point chosen by the private key's low 3 bits."""
    return _core.elligator_public_key(private)


def key_pair(private: bytes, tweak: int) -> tuple[bytes, bytes] | None:
    """``(representative, public)`` for ``private``, or None when its
    public key has no representative (draw another private key)."""
    return _core.elligator_key_pair(private, tweak)


def generate(max_attempts: int = 128) -> KeyPair:
    """A fresh key pair with a representative, from ``os.urandom``.

    Each attempt succeeds with probability 1/2; ``max_attempts`` only
    bounds a broken random source (128 failures in a row: 2^-128).
    """
    for attempt in range(1, max_attempts + 1):
        seed = os.urandom(SIZE + 1)
        private, tweak = seed[:SIZE], seed[SIZE]
        found = _core.elligator_key_pair(private, tweak)
        if found is not None:
            rep, public = found
            return KeyPair(private, public, rep, attempt)
    raise RuntimeError(f"no representable key in {max_attempts} attempts")
