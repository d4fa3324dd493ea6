"""The C Noise core (csrc/noise.c) below crust.noise: its primitives
against independent implementations, and its handling of hostile sizes and
types. tests/unit/test_noise.py covers the handshake itself (and its
interoperation with the ``noiseprotocol`` package)."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from crust import _core, noise
from crust.noise import HandshakeState, NoiseError


@pytest.mark.parametrize("key_len", [0, 1, 32, 64, 127, 128, 129, 300])
@pytest.mark.parametrize("data_len", [0, 1, 64, 200, 70_000])
def test_hmac_hash_is_rfc2104_over_blake2b(key_len: int, data_len: int) -> None:
    # Keys longer than BLAKE2b's 128-byte block are hashed first (RFC 2104).
    key, data = os.urandom(key_len), os.urandom(data_len)
    assert noise.hmac_hash(key, data) == hmac.digest(key, data, hashlib.blake2b)


@pytest.mark.parametrize("ikm_len", [0, 32, 100])
def test_hkdf_matches_the_specification(ikm_len: int) -> None:
    ck, ikm = os.urandom(64), os.urandom(ikm_len)
    temp = hmac.digest(ck, ikm, hashlib.blake2b)
    out1 = hmac.digest(temp, b"\x01", hashlib.blake2b)
    out2 = hmac.digest(temp, out1 + b"\x02", hashlib.blake2b)
    out3 = hmac.digest(temp, out2 + b"\x03", hashlib.blake2b)
    assert noise.hkdf(ck, ikm, 2) == (out1, out2)
    assert noise.hkdf(ck, ikm, 3) == (out1, out2, out3)
    with pytest.raises(NoiseError):
        noise.hkdf(ck, ikm, 4)


def test_symmetric_state_runs_a_handshake_hash_like_the_handshake() -> None:
    # The kept SymmetricState, driven by hand through XX's first message,
    # ends with the same h as HandshakeState's C state machine.
    e = bytes([9]) * 32
    hs = HandshakeState("XX", True, b"pro", os.urandom(32), e=e)
    hs.write_message(b"hello")
    sym = noise.SymmetricState(noise.protocol_name("XX"))
    sym.mix_hash(b"pro")
    sym.mix_hash(noise.public_key(e))
    sym.encrypt_and_hash(b"hello")  # no key yet: the plaintext is hashed
    assert sym.h == hs.handshake_hash


def test_keys_and_messages_of_any_buffer_type_and_no_other() -> None:
    s = os.urandom(32)
    a = HandshakeState("XX", True, bytearray(b"p"), bytearray(os.urandom(32)))
    b = HandshakeState("XX", False, memoryview(b"p"), s)
    assert b.read_message(bytearray(a.write_message(memoryview(b"one")))) == b"one"
    assert a.read_message(memoryview(b.write_message(bytearray(b"two")))) == b"two"
    for bad in (None, 5, "text", 3.5, [1, 2]):
        with pytest.raises(NoiseError):
            HandshakeState("XX", False, b"p", bad)  # type: ignore[arg-type]
        with pytest.raises(NoiseError):
            a.write_message(bad)  # type: ignore[arg-type]
    for size in (0, 31, 33, 64):
        with pytest.raises(NoiseError, match="32 bytes"):
            HandshakeState("XX", False, b"p", bytes(size))
        with pytest.raises(NoiseError, match="32 bytes"):
            HandshakeState("IK", True, b"p", s, rs=bytes(size))
        with pytest.raises(NoiseError, match="32 bytes"):
            noise.dh(s, bytes(size))


def test_a_failed_write_leaves_the_state_as_it_was() -> None:
    # A responder that read a low-order ephemeral cannot write (the ee DH
    # is all-zero); after that failure, a genuine first message still
    # cannot be read (not its turn) and the handshake hash is untouched.
    b = HandshakeState("XX", False, b"p", os.urandom(32))
    b.read_message(bytes(32))
    h = b.handshake_hash
    for _ in range(3):
        with pytest.raises(NoiseError, match="low-order"):
            b.write_message(b"x")
        assert b.handshake_hash == h and b.is_my_turn and b.remote_static is None


def test_x25519_counts_count_the_core_operations() -> None:
    dh0, eph0 = _core.noise_x25519_counts()
    a = HandshakeState("XX", True, b"p", os.urandom(32))
    b = HandshakeState("XX", False, b"p", os.urandom(32))
    b.read_message(a.write_message())
    a.read_message(b.write_message())
    b.read_message(a.write_message())
    dh1, eph1 = _core.noise_x25519_counts()
    # XX: each side makes one ephemeral key and does ee, es, se (3 DHs).
    assert (dh1 - dh0, eph1 - eph0) == (6, 2)


def _expand_reference(secret: bytes, info: bytes, length: int) -> bytes:
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes((counter,)), hashlib.blake2b)
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("length", [1, 12, 32, 63, 64, 65, 200, 255 * 64])
def test_hkdf_expand_is_rfc5869_over_hmac_blake2b(length: int) -> None:
    secret, info = os.urandom(64), b"crust/1 key"
    assert _core.noise_hkdf_expand(secret, info, length) == _expand_reference(secret, info, length)
    assert _core.noise_hkdf_expand(b"", b"", length) == _expand_reference(b"", b"", length)
    for bad in (0, -1, 255 * 64 + 1):
        with pytest.raises(NoiseError):
            _core.noise_hkdf_expand(secret, info, bad)
