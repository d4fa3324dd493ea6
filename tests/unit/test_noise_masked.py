"""Masked ephemerals in the Noise handshake (csrc/noise.c through
crust.noise, docs/design/0082): each "e" token carries the Elligator 2
representative of a dirty ephemeral key. The handshake is checked byte for
byte against the specification's steps computed here (SymmetricState,
PyNaCl's X25519, crust.elligator), over thousands of handshakes against the
distinguishers of tests/helpers/distinguishers.py (with their power shown
on plain handshakes), and against a plain peer, which must fail cleanly.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable

import pytest
from distinguishers import (
    BYTE_CHI2_BOUND_32,
    bit_bound,
    bit_frequencies,
    in_prime_order_subgroup,
    on_curve,
    subgroup_band,
    worst_byte_chi2,
)
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base
from test_elligator import LOW_ORDER_U

from crust import _core, elligator, noise
from crust.noise import HandshakeState, NoiseError

PATTERNS: list[noise.Pattern] = ["XX", "IK"]
PROLOGUE = b"crust/1 masked test prologue"
#: The specification's message patterns; a DH token names the initiator's
#: key first.
TOKENS: dict[str, list[list[str]]] = {
    "XX": [["e"], ["e", "ee", "s", "es"], ["s", "se"]],
    "IK": [["e", "es", "s", "ss"], ["e", "ee", "se"]],
}


def _representable(rng: random.Random) -> tuple[bytes, int]:
    """A private key with a representative, and a tweak (seeded)."""
    while True:
        private, tweak = rng.randbytes(32), rng.randrange(256)
        if elligator.key_pair(private, tweak) is not None:
            return private, tweak


def _handshake(
    pattern: noise.Pattern,
    *,
    masked: tuple[bool, bool] = (True, True),
    fixed: tuple[tuple[bytes, int], tuple[bytes, int]] | None = None,
    payloads: list[bytes] | None = None,
    si: bytes | None = None,
    sr: bytes | None = None,
) -> tuple[HandshakeState, HandshakeState, list[bytes]]:
    """Initiator, responder and the messages of a whole handshake."""
    si = os.urandom(32) if si is None else si
    sr = os.urandom(32) if sr is None else sr
    rs = noise.public_key(sr) if pattern == "IK" else None
    ei, er = fixed if fixed is not None else ((None, 0), (None, 0))
    a = HandshakeState(pattern, True, PROLOGUE, si, rs=rs, e=ei[0], tweak=ei[1], masked=masked[0])
    b = HandshakeState(pattern, False, PROLOGUE, sr, e=er[0], tweak=er[1], masked=masked[1])
    messages = []
    for i, payload in enumerate(payloads or [b""] * len(TOKENS[pattern])):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        messages.append(writer.write_message(payload))
        assert reader.read_message(messages[-1]) == payload
    return a, b, messages


def _reference(
    pattern: noise.Pattern,
    si: bytes,
    sr: bytes,
    ephemerals: tuple[tuple[bytes, int], tuple[bytes, int]],
    payloads: list[bytes],
) -> tuple[list[bytes], bytes, bytes, bytes]:
    """The messages, handshake hash and Split() keys of a masked handshake,
    from the specification's steps: MixHash of the representative as sent,
    every DH from the initiator's private keys against the responder's
    static key and the key its representative decodes to."""
    sym = noise.SymmetricState(noise.protocol_name(pattern, masked=True))
    sym.mix_hash(PROLOGUE)
    statics = (si, sr)
    sr_pub = crypto_scalarmult_base(sr)
    if pattern == "IK":
        sym.mix_hash(sr_pub)
    responder_e = b""
    messages = []
    for i, tokens in enumerate(TOKENS[pattern]):
        side = i % 2  # 0: the initiator writes
        message = b""
        for token in tokens:
            if token == "e":
                found = elligator.key_pair(*ephemerals[side])
                assert found is not None
                rep = found[0]
                message += rep
                sym.mix_hash(rep)
                if side == 1:
                    responder_e = elligator.decode(rep)
            elif token == "s":
                message += sym.encrypt_and_hash(crypto_scalarmult_base(statics[side]))
            else:
                mine = statics[0] if token[0] == "s" else ephemerals[0][0]
                theirs = sr_pub if token[1] == "s" else responder_e
                sym.mix_key(crypto_scalarmult(mine, theirs))
        messages.append(message + sym.encrypt_and_hash(payloads[i]))
    c1, c2 = sym.split()
    assert c1.key is not None and c2.key is not None
    return messages, sym.h, c1.key, c2.key


def _looks_canonical(field: bytes) -> bool:
    """Whether 32 bytes are one of the representatives the inverse map
    gives the point they decode to, with their own padding bits."""
    u = elligator.decode(field)
    pad = field[31] & 0xC0
    return field in {elligator.representative(u, pad | sign) for sign in (0, 1)}


# ---- the handshake ----


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("seed", range(4))
def test_masked_handshake_is_the_specification_with_representatives(
    pattern: noise.Pattern, seed: int
) -> None:
    rng = random.Random(seed)
    si, sr = rng.randbytes(32), rng.randbytes(32)
    fixed = (_representable(rng), _representable(rng))
    payloads = [rng.randbytes(rng.randrange(100)) for _ in TOKENS[pattern]]
    a, b, messages = _handshake(pattern, fixed=fixed, payloads=payloads, si=si, sr=sr)
    ref_messages, ref_h, k1, k2 = _reference(pattern, si, sr, fixed, payloads)
    assert messages == ref_messages
    assert a.handshake_hash == b.handshake_hash == ref_h
    assert [c.key for c in a.split()] == [c.key for c in b.split()] == [k1, k2]
    # Each "e" field is the representative and decodes to the writer's
    # dirty public key, which the reader used.
    for side, message in enumerate(messages[:2]):
        private, tweak = fixed[side]
        assert elligator.key_pair(private, tweak) == (message[:32], elligator.public_key(private))


@pytest.mark.parametrize("pattern", PATTERNS)
def test_masked_handshakes_with_drawn_keys_agree(pattern: noise.Pattern) -> None:
    for _ in range(30):
        si, sr = os.urandom(32), os.urandom(32)
        payloads = [b"one", b"two", b"three"][: len(TOKENS[pattern])]
        a, b, messages = _handshake(pattern, payloads=payloads, si=si, sr=sr)
        assert a.complete and b.complete and a.masked and b.masked
        assert a.handshake_hash == b.handshake_hash
        assert [c.key for c in a.split()] == [c.key for c in b.split()]
        assert a.remote_static == noise.public_key(sr) and b.remote_static == noise.public_key(si)
        assert all(_looks_canonical(m[:32]) for m in messages[:2])


def test_masked_and_plain_count_the_same_dhs() -> None:
    # With representable fixed keys one ephemeral key per side, as plain;
    # drawn, the redraws show (half the keys have no representative).
    rng = random.Random(7)
    dh0, eph0 = _core.noise_x25519_counts()
    _handshake("XX", fixed=(_representable(rng), _representable(rng)))
    dh1, eph1 = _core.noise_x25519_counts()
    assert (dh1 - dh0, eph1 - eph0) == (6, 2)
    for _ in range(50):
        _handshake("XX")
    dh2, eph2 = _core.noise_x25519_counts()
    assert dh2 - dh1 == 300
    assert eph2 - eph1 > 100  # all 100 keys representable at once: 2^-100


# ---- indistinguishability of the "e" fields ----


def _fields(n: int, masked: bool) -> list[bytes]:
    """The 32-byte "e" fields of n handshakes (both sides; XX and IK in
    turn)."""
    out: list[bytes] = []
    for i in range(n):
        _, _, messages = _handshake(PATTERNS[i % 2], masked=(masked, masked))
        out += [m[:32] for m in messages[:2]]
    return out


def _distinguishers(fields: list[bytes]) -> dict[str, bool]:
    """Which distinguishers tell these fields from uniform random strings
    (each bound: ~1e-6 for a uniform source)."""
    n = len(fields)
    freqs = bit_frequencies(fields)
    on = sum(map(on_curve, fields))
    decoded_in = sum(in_prime_order_subgroup(elligator.decode(f)) for f in fields)
    raw_in = sum(in_prime_order_subgroup(f) for f in fields)
    return {
        "bit": max(abs(f - 0.5) for f in freqs) >= bit_bound(n),
        "byte chi-square": worst_byte_chi2(fields)[1] >= BYTE_CHI2_BOUND_32,
        "on the curve": abs(on - n / 2) >= 6 * (n / 4) ** 0.5,
        "decoded in the subgroup": abs(decoded_in - n / 8) >= subgroup_band(n),
        "in the subgroup as a key": abs(raw_in - n / 16) >= subgroup_band(n),
        "repeats": len(set(fields)) != n,
    }


def test_masked_ephemeral_fields_pass_the_distinguishers(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2,000 handshakes, 4,000 fields, through the wrapper's own draws
    # (os.urandom, seeded here so a run is reproducible).
    rng = random.Random(0x0082)
    urandom: Callable[[int], bytes] = rng.randbytes
    monkeypatch.setattr(os, "urandom", urandom)
    seen = _distinguishers(_fields(2_000, masked=True))
    assert not any(seen.values()), seen


def test_the_distinguishers_see_plain_ephemeral_keys() -> None:
    # The same tests on plain handshakes: their keys are canonical curve
    # points of the prime-order subgroup (raw u: half of random strings are
    # on the curve, 1/16 in the subgroup as read here; bit 255 never set).
    seen = _distinguishers(_fields(250, masked=False))
    assert seen["bit"] and seen["on the curve"] and seen["in the subgroup as a key"], seen
    assert not seen["repeats"]


# ---- a masked end and a plain one ----


@pytest.mark.parametrize("masked", [(True, False), (False, True)], ids=["masked-i", "masked-r"])
def test_xx_mismatch_fails_at_the_first_authenticated_message(masked: tuple[bool, bool]) -> None:
    # XX's first message carries no MAC, so the responder takes it; the
    # protocol names differ, so its answer does not decrypt.
    si, sr = os.urandom(32), os.urandom(32)
    a = HandshakeState("XX", True, PROLOGUE, si, masked=masked[0])
    b = HandshakeState("XX", False, PROLOGUE, sr, masked=masked[1])
    assert b.read_message(a.write_message(b"hello")) == b"hello"
    assert a.handshake_hash != b.handshake_hash
    second = b.write_message(b"answer")
    h = a.handshake_hash
    with pytest.raises(NoiseError, match="decryption failed"):
        a.read_message(second)
    assert a.handshake_hash == h and not a.is_my_turn and not a.complete
    assert a.remote_static is None and not b.complete


@pytest.mark.parametrize("masked", [(True, False), (False, True)], ids=["masked-i", "masked-r"])
def test_ik_mismatch_fails_at_the_first_message(masked: tuple[bool, bool]) -> None:
    sr = os.urandom(32)
    rs = noise.public_key(sr)
    a = HandshakeState("IK", True, PROLOGUE, os.urandom(32), rs=rs, masked=masked[0])
    b = HandshakeState("IK", False, PROLOGUE, sr, masked=masked[1])
    h = b.handshake_hash
    with pytest.raises(NoiseError, match="decryption failed"):
        b.read_message(a.write_message(b"hello"))
    assert b.handshake_hash == h and not b.is_my_turn and b.remote_static is None


def test_only_the_protocol_name_tells_the_modes_apart_before_any_key() -> None:
    # Same keys, same representatives: the plain responder, had it decoded
    # the field, would still disagree from the first MixHash on.
    assert noise.protocol_name("XX", masked=True) == b"Noise_XX_25519elligator2_ChaChaPoly_BLAKE2b"
    assert noise.protocol_name("IK") == b"Noise_IK_25519_ChaChaPoly_BLAKE2b"
    s = os.urandom(32)
    masked = HandshakeState("XX", False, PROLOGUE, s, masked=True)
    plain = HandshakeState("XX", False, PROLOGUE, s)
    assert masked.handshake_hash != plain.handshake_hash
    assert masked.masked and not plain.masked


# ---- hostile and mistaken input ----


def _low_order_representatives() -> list[bytes]:
    """Representatives of the low-order points that have one (u = 0 is the
    all-zero string's)."""
    us = [u.to_bytes(32, "little") for u in sorted(set(LOW_ORDER_U))]
    reps = [elligator.representative(u, t) for u in us for t in (0, 1, 0xC0)]
    return [r for r in reps if r is not None]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_representatives_of_low_order_points_are_refused(pattern: noise.Pattern) -> None:
    reps = _low_order_representatives()
    assert bytes(32) in reps and len(reps) >= 6
    sr = os.urandom(32)
    for rep in reps:
        b = HandshakeState(pattern, False, PROLOGUE, sr, masked=True)
        if pattern == "XX":
            b.read_message(rep)  # no DH yet: the answer's "ee" refuses it
            with pytest.raises(NoiseError, match="low-order"):
                b.write_message(b"")
        else:
            with pytest.raises(NoiseError, match="low-order"):
                b.read_message(rep + bytes(48 + 16))  # "es" comes first


def test_a_fixed_key_without_a_representative_is_refused_not_replaced() -> None:
    rng = random.Random(9)
    while True:
        e, tweak = rng.randbytes(32), rng.randrange(256)
        if elligator.key_pair(e, tweak) is None:
            break
    a = HandshakeState("XX", True, PROLOGUE, os.urandom(32), e=e, tweak=tweak, masked=True)
    h = a.handshake_hash
    for _ in range(2):
        with pytest.raises(NoiseError, match="no Elligator representative"):
            a.write_message(b"x")
        assert a.handshake_hash == h and a.is_my_turn
    # The plain mode takes the same key as it is.
    plain = HandshakeState("XX", True, PROLOGUE, os.urandom(32), e=e)
    assert plain.write_message(b"x")[:32] == noise.public_key(e)


def test_the_ephemeral_key_is_replaced_only_before_it_is_sent() -> None:
    rng = random.Random(10)
    core = _core.NoiseHandshake(0, True, PROLOGUE, os.urandom(32), None, None, bytes(32), True, 0)
    e, tweak = _representable(rng)
    for bad in (-1, 256):
        with pytest.raises(NoiseError, match="tweak"):
            core.set_ephemeral(e, bad)
        with pytest.raises(NoiseError, match="tweak"):
            _core.NoiseHandshake(0, True, PROLOGUE, os.urandom(32), None, None, e, True, bad)
    with pytest.raises(NoiseError, match="32 bytes"):
        core.set_ephemeral(e[:31], tweak)
    core.set_ephemeral(e, tweak)
    message, found = core.write_message(b""), elligator.key_pair(e, tweak)
    assert message is not None and found is not None and message[:32] == found[0]
    with pytest.raises(NoiseError, match="already been sent"):
        core.set_ephemeral(e, tweak)
