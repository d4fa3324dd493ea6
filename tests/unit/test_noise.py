"""crust.noise against an independent implementation (the PyPI package
``noiseprotocol``, built on ``cryptography``), plus the properties crust's
handshake relies on: determinism, tamper and prologue detection, atomic
reads, low-order key rejection, and NoiseError as the only failure.

No published cacophony/snow vectors for Noise_*_25519_ChaChaPoly_BLAKE2b
ship with any package installed here (noiseprotocol's wheel has no tests),
so byte-exact agreement with noiseprotocol under fixed ephemeral keys
stands in for them.
"""

from __future__ import annotations

import os
import random
import warnings

import nacl.bindings as sodium
import pytest
from noise.connection import Keypair, NoiseConnection

from crust import noise
from crust.noise import CipherState, HandshakeState, NoiseError

PATTERNS: list[noise.Pattern] = ["XX", "IK"]
PROLOGUE = b"crust/1 test prologue"


def reference(
    pattern: noise.Pattern,
    initiator: bool,
    s: bytes,
    rs: bytes | None = None,
    e: bytes | None = None,
    prologue: bytes = PROLOGUE,
) -> NoiseConnection:
    conn = NoiseConnection.from_name(noise.protocol_name(pattern))
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(prologue)
    conn.set_keypair_from_private_bytes(Keypair.STATIC, s)
    if rs is not None:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, rs)
    if e is not None:
        conn.set_keypair_from_private_bytes(Keypair.EPHEMERAL, e)
    with warnings.catch_warnings():
        # noiseprotocol warns (rightly) about fixed ephemeral keys.
        warnings.simplefilter("ignore", UserWarning)
        conn.start_handshake()
    return conn


def keypair() -> tuple[bytes, bytes]:
    return noise.generate_keypair()


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("crust_side", ["initiator", "responder"])
def test_interoperates_with_noiseprotocol(pattern: noise.Pattern, crust_side: str) -> None:
    si, si_pub = keypair()
    sr, sr_pub = keypair()
    rs = sr_pub if pattern == "IK" else None
    n_msgs = 3 if pattern == "XX" else 2
    payloads = [b"first payload", b"second, longer payload" * 5, b""][:n_msgs]

    if crust_side == "initiator":
        ours = HandshakeState(pattern, True, PROLOGUE, si, rs=rs)
        theirs = reference(pattern, False, sr)
    else:
        ours = HandshakeState(pattern, False, PROLOGUE, sr)
        theirs = reference(pattern, True, si, rs=rs)

    for i, payload in enumerate(payloads):
        initiator_writes = i % 2 == 0
        if initiator_writes == (crust_side == "initiator"):
            assert theirs.read_message(ours.write_message(payload)) == payload
        else:
            assert ours.read_message(bytes(theirs.write_message(payload))) == payload
    assert ours.complete and theirs.handshake_finished
    assert ours.handshake_hash == theirs.get_handshake_hash()
    assert ours.remote_static == (sr_pub if crust_side == "initiator" else si_pub)

    i2r, r2i = ours.split()
    send, recv = (i2r, r2i) if crust_side == "initiator" else (r2i, i2r)
    for n in range(5):  # several, so the nonce counters must agree
        msg = os.urandom(n * 100)
        assert theirs.decrypt(send.encrypt_with_ad(b"", msg)) == msg
        assert recv.decrypt_with_ad(b"", theirs.encrypt(msg)) == msg


@pytest.mark.parametrize("pattern", PATTERNS)
def test_fixed_ephemerals_are_deterministic_and_byte_exact(pattern: noise.Pattern) -> None:
    si, ei, sr, er = (bytes([k]) * 32 for k in (1, 2, 3, 4))
    rs = noise.public_key(sr) if pattern == "IK" else None

    def run() -> tuple[list[bytes], bytes, bytes]:
        a = HandshakeState(pattern, True, PROLOGUE, si, rs=rs, e=ei)
        b = HandshakeState(pattern, False, PROLOGUE, sr, e=er)
        msgs = []
        writer, reader = a, b
        while not a.complete:
            msgs.append(writer.write_message(b"payload %d" % len(msgs)))
            reader.read_message(msgs[-1])
            writer, reader = reader, writer
        key = a.split()[0].key
        assert key is not None
        return msgs, a.handshake_hash, key

    first, second = run(), run()
    assert first == second

    # The same keys in noiseprotocol produce the same bytes.
    ref_i = reference(pattern, True, si, rs=rs, e=ei)
    ref_r = reference(pattern, False, sr, e=er)
    writer, reader = ref_i, ref_r
    for i, msg in enumerate(first[0]):
        assert bytes(writer.write_message(b"payload %d" % i)) == msg
        reader.read_message(msg)
        writer, reader = reader, writer
    assert ref_i.get_handshake_hash() == first[1]


def xx_pair(prologue_r: bytes = PROLOGUE) -> tuple[HandshakeState, HandshakeState]:
    return (
        HandshakeState("XX", True, PROLOGUE, keypair()[0]),
        HandshakeState("XX", False, prologue_r, keypair()[0]),
    )


def test_tampered_messages_raise_and_leave_the_state_intact() -> None:
    a, b = xx_pair()
    b.read_message(a.write_message(b"hi"))
    msg2 = b.write_message(b"secret payload")
    for pos in range(len(msg2)):
        bad = bytearray(msg2)
        bad[pos] ^= 0x01
        with pytest.raises(NoiseError):
            a.read_message(bytes(bad))
    for bad_len in (0, 31, 32, 79, len(msg2) - 1):
        with pytest.raises(NoiseError):
            a.read_message(msg2[:bad_len])
    # Reads are atomic: after all that, the genuine message still works.
    assert a.read_message(msg2) == b"secret payload"
    msg3 = a.write_message(b"done")
    bad3 = bytearray(msg3)
    bad3[-1] ^= 0x80
    with pytest.raises(NoiseError):
        b.read_message(bytes(bad3))
    assert b.read_message(msg3) == b"done"
    assert a.complete and b.complete


def test_wrong_prologue_fails() -> None:
    a, b = xx_pair(prologue_r=PROLOGUE + b"!")
    b.read_message(a.write_message())  # XX message 1 carries no MAC yet
    with pytest.raises(NoiseError):
        a.read_message(b.write_message())
    sr, sr_pub = keypair()
    ik_a = HandshakeState("IK", True, PROLOGUE, keypair()[0], rs=sr_pub)
    ik_b = HandshakeState("IK", False, b"another network", sr)
    with pytest.raises(NoiseError):
        ik_b.read_message(ik_a.write_message(b"x"))


def test_ik_to_the_wrong_responder_key_fails() -> None:
    sr, _ = keypair()
    _, someone_else = keypair()
    a = HandshakeState("IK", True, PROLOGUE, keypair()[0], rs=someone_else)
    b = HandshakeState("IK", False, PROLOGUE, sr)
    with pytest.raises(NoiseError):
        b.read_message(a.write_message(b"hello"))
    with pytest.raises(NoiseError, match="rs"):
        HandshakeState("IK", True, PROLOGUE, keypair()[0])


P = 2**255 - 19
# 0, 1, the point of order 2, two points of order 8, and non-reduced
# encodings of the first two.
LOW_ORDER = [
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P,
    P + 1,
]


@pytest.mark.parametrize("u", LOW_ORDER)
def test_low_order_keys_are_refused(u: int) -> None:
    point = (u % 2**256).to_bytes(32, "little")
    with pytest.raises(NoiseError, match="low-order"):
        noise.dh(keypair()[0], point)
    # In a handshake: a responder given a low-order ephemeral cannot answer.
    b = HandshakeState("XX", False, PROLOGUE, keypair()[0])
    b.read_message(point)
    with pytest.raises(NoiseError):
        b.write_message()
    assert b.is_my_turn  # still waiting to write: the failed write left no trace


def test_garbage_only_ever_raises_noise_error() -> None:
    rng = random.Random(7)
    sr, sr_pub = keypair()
    for n in range(3000):
        pattern: noise.Pattern = "IK" if n % 2 else "XX"
        msg = rng.randbytes(rng.choice([0, 1, 31, 32, 33, 48, 80, 96, 200, rng.randrange(400)]))
        b = HandshakeState(pattern, False, PROLOGUE, sr)
        try:
            b.read_message(msg)
            if pattern == "XX":
                b.write_message(b"")
        except NoiseError:
            pass
        a = HandshakeState(pattern, True, PROLOGUE, keypair()[0], rs=sr_pub)
        a.write_message()
        with pytest.raises(NoiseError):
            a.read_message(msg)
    for not_bytes in (5, None, "text", 3.5):
        with pytest.raises(NoiseError):
            HandshakeState("XX", False, PROLOGUE, sr).read_message(not_bytes)  # type: ignore[arg-type]


def test_misuse_raises_noise_error() -> None:
    a, b = xx_pair()
    with pytest.raises(NoiseError, match="turn"):
        a.read_message(b"")
    with pytest.raises(NoiseError, match="split"):
        a.split()
    with pytest.raises(NoiseError, match="exceeds"):
        a.write_message(bytes(noise.MAX_MESSAGE_LEN))
    with pytest.raises(NoiseError, match="exceeds"):
        b.read_message(bytes(noise.MAX_MESSAGE_LEN + 1))
    with pytest.raises(NoiseError, match="pattern"):
        HandshakeState("NN", True, b"", keypair()[0])  # type: ignore[arg-type]


def test_cipher_state_nonce_layout_and_rekey() -> None:
    key = os.urandom(32)
    cs = CipherState(key)
    cs.set_nonce(0x0102030405060708)
    ct = cs.encrypt_with_ad(b"ad", b"plaintext")
    # 4 zero bytes, then the counter little-endian (Noise, ChaChaPoly).
    nonce = b"\x00" * 4 + bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert ct == sodium.crypto_aead_chacha20poly1305_ietf_encrypt(b"plaintext", b"ad", nonce, key)
    assert cs.n == 0x0102030405060709

    rx = CipherState(key)
    with pytest.raises(NoiseError):
        rx.decrypt_with_ad(b"ad", ct)  # wrong nonce (0)
    assert rx.n == 0  # a failed decryption does not advance the nonce

    # REKEY agrees with noiseprotocol's.
    ref_i = reference("XX", True, keypair()[0])
    ref_r = reference("XX", False, keypair()[0])
    ref_r.read_message(ref_i.write_message())
    ref_i.read_message(ref_r.write_message())
    ref_r.read_message(ref_i.write_message())
    ref_key = ref_i.noise_protocol.cipher_state_encrypt.k
    ours = CipherState(ref_key)
    ref_i.rekey_outbound_cipher()
    ours.rekey()
    assert ours.encrypt_with_ad(b"", b"after rekey") == ref_i.encrypt(b"after rekey")

    exhausted = CipherState(key)
    exhausted.set_nonce(2**64 - 1)
    with pytest.raises(NoiseError, match="exhausted"):
        exhausted.encrypt_with_ad(b"", b"x")
