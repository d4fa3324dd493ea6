"""Elligator 2 representatives (csrc/elligator.c through crust.elligator)
with libsodium's X25519: the dirty keys agree with the clean ones in
Diffie-Hellman, and the representatives look uniform where the naive
construction does not. tests/c/test_elligator.c holds the known-answer
vectors and the field arithmetic.

The statistical tests draw their keys from a seeded generator, so a run is
reproducible; each bound is set so that a correct implementation fails it
for at most about one seed in a million (6 standard deviations, with a
Bonferroni share for the 256 bit positions).
"""

from __future__ import annotations

import math
import os
import random

import pytest
from distinguishers import (
    BYTE_CHI2_BOUND_32,
    P,
    bit_bound,
    bit_frequencies,
    byte_chi2,
    in_prime_order_subgroup,
    subgroup_band,
    u_int,
    worst_byte_chi2,
)
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base

from crust import _core, elligator

#: The order of the prime-order subgroup; 5 (mod 8).
ELL = 2**252 + 27742317777372353535851937790883648493

#: u-coordinates of the low-order points T_k = [k]T_1 (T_0 the identity,
#: reported as 0 by the ladder, like T_4 = (0, 0)); T_k and T_-k share one.
LOW_ORDER_U = [
    0,
    0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
    1,
    0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
    0,
    0x57119FD0DD4E22D8868E1C58C45C44045BEF839C55B1D0B1248C50A3BC959C5F,
    1,
    0x00B8495F16056286FDB1329CEB8D09DA6AC49FF1FAE35616AEB8413B7C7AEBE0,
]

SAMPLES = 20_000


def _ladder(k: int, u: int) -> int:
    """u([k]P) for an unclamped k (RFC 7748's ladder, in Python integers:
    independent of both crust's field code and libsodium)."""
    x1, x2, z2, x3, z3 = u, 1, 0, u, 1
    for t in reversed(range(k.bit_length())):
        if (k >> t) & 1:
            x2, x3, z2, z3 = x3, x2, z3, z2
        a, b = x2 + z2, x2 - z2
        aa, bb = a * a % P, b * b % P
        e = aa - bb
        c, d = x3 + z3, x3 - z3
        da, cb = d * a % P, c * b % P
        x3, z3 = (da + cb) ** 2 % P, x1 * (da - cb) ** 2 % P
        x2, z2 = aa * bb % P, e * (aa + 121665 * e) % P
        if (k >> t) & 1:
            x2, x3, z2, z3 = x3, x2, z3, z2
    return x2 * pow(z2, P - 2, P) % P


def _dirty_samples(rng: random.Random, n: int) -> tuple[list[bytes], int]:
    """n representatives from key generation, and the attempts it took."""
    out: list[bytes] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        found = elligator.key_pair(rng.randbytes(32), rng.randrange(256))
        if found is not None:
            out.append(found[0])
    return out, attempts


def _clean_samples(rng: random.Random, n: int, *, pad: bool) -> list[bytes]:
    """The naive construction: representatives of ordinary X25519 public
    keys (with or without random padding bits)."""
    out: list[bytes] = []
    while len(out) < n:
        tweak = rng.randrange(256)
        rep = elligator.representative(
            crypto_scalarmult_base(rng.randbytes(32)), tweak if pad else tweak & 1
        )
        if rep is not None:
            out.append(rep)
    return out


@pytest.fixture(scope="module")
def dirty() -> tuple[list[bytes], int]:
    return _dirty_samples(random.Random(0x0081), SAMPLES)


# ---- Diffie-Hellman and the low-order component ----


def test_dirty_key_agrees_with_the_clean_key_in_x25519() -> None:
    rng = random.Random(21)
    seen_k = set()
    for _ in range(300):
        private = rng.randbytes(32)
        dirty = elligator.public_key(private)
        clean = crypto_scalarmult_base(private)
        k = private[0] & 7
        seen_k.add(k)
        assert (dirty == clean) == (k == 0)
        peer = os.urandom(32)
        # The peer's X25519 against the dirty key is the usual secret ...
        assert crypto_scalarmult(peer, dirty) == crypto_scalarmult(peer, clean)
        # ... which the owner computes as usual from the peer's key.
        assert crypto_scalarmult(private, crypto_scalarmult_base(peer)) == crypto_scalarmult(
            peer, dirty
        )
    assert seen_k == set(range(8))


def test_dirty_key_carries_the_low_order_point_its_private_key_names() -> None:
    # [ell](P + T_k) = [ell]T_k = T_{5k}: the component is the one the
    # private key's low 3 bits choose; [ell] of a clean key is the identity.
    rng = random.Random(22)
    for k in range(8):
        private = bytes([(rng.randrange(256) & ~7) | k]) + rng.randbytes(31)
        assert _ladder(ELL, u_int(elligator.public_key(private))) == LOW_ORDER_U[5 * k % 8]
        assert _ladder(ELL, u_int(crypto_scalarmult_base(private))) == 0
        assert _ladder(8 * ELL, u_int(elligator.public_key(private))) == 0


def test_generate_gives_a_usable_key_pair() -> None:
    attempts = []
    for _ in range(50):
        pair = elligator.generate()
        attempts.append(pair.attempts)
        assert elligator.decode(pair.representative) == pair.public
        assert pair.public == elligator.public_key(pair.private)
        peer = os.urandom(32)
        assert crypto_scalarmult(peer, elligator.decode(pair.representative)) == (
            crypto_scalarmult(pair.private, crypto_scalarmult_base(peer))
        )
    assert min(attempts) >= 1 and max(attempts) > 1  # 2^-50 to see only firsts


def test_key_pair_refuses_what_has_no_representative() -> None:
    rng = random.Random(23)
    refused = 0
    for _ in range(200):
        private = rng.randbytes(32)
        found = elligator.key_pair(private, 0)
        rev = elligator.representative(elligator.public_key(private), 0)
        assert (found is None) == (rev is None)
        refused += found is None
        if found is not None:
            assert found == (rev, elligator.public_key(private))
    assert 40 < refused < 160


# ---- the distribution ----


def test_representable_fraction_is_one_half(dirty: tuple[list[bytes], int]) -> None:
    samples, attempts = dirty
    fraction = len(samples) / attempts
    # binomial(attempts, 1/2): 6 sd of the fraction
    assert abs(fraction - 0.5) < 6 * 0.5 / math.sqrt(attempts), (fraction, attempts)


def test_every_bit_of_dirty_representatives_is_fair(dirty: tuple[list[bytes], int]) -> None:
    samples, _ = dirty
    bound = bit_bound(len(samples))
    freqs = bit_frequencies(samples)
    worst = max(range(256), key=lambda i: abs(freqs[i] - 0.5))
    assert abs(freqs[worst] - 0.5) < bound, (worst, freqs[worst], bound)
    assert len(set(samples)) == len(samples)


def test_every_byte_of_dirty_representatives_is_uniform(dirty: tuple[list[bytes], int]) -> None:
    # 256 values per position, 32 positions: ~1e-6 overall for a fair source.
    samples, _ = dirty
    worst, chi2 = worst_byte_chi2(samples)
    assert chi2 < BYTE_CHI2_BOUND_32, (worst, chi2)


def test_the_bit_test_catches_missing_padding() -> None:
    # Without the random top bits, bits 254 and 255 are always 0.
    samples = _clean_samples(random.Random(24), 2_000, pad=False)
    freqs = bit_frequencies(samples)
    bound = bit_bound(len(samples))
    assert freqs[254] == freqs[255] == 0.0
    assert abs(freqs[254] - 0.5) > bound
    assert byte_chi2(samples, 31) > BYTE_CHI2_BOUND_32


def test_decoded_points_of_dirty_keys_sit_in_the_subgroup_one_time_in_eight(
    dirty: tuple[list[bytes], int],
) -> None:
    # A uniformly random string decodes to the prime-order subgroup with
    # probability 1/8 (the image of the map is spread evenly over the
    # cosets); so do dirty keys' representatives. Clean keys' always do:
    # this is the distinguisher that sees them, which no bit count can
    # (their bits pass the test above; docs/design/0081 reports it).
    n = 2_000
    samples = dirty[0][:n]
    in_dirty = sum(in_prime_order_subgroup(elligator.decode(r)) for r in samples)
    in_random = sum(in_prime_order_subgroup(elligator.decode(os.urandom(32))) for _ in range(n))
    assert abs(in_dirty - n / 8) < subgroup_band(n), in_dirty
    assert abs(in_random - n / 8) < subgroup_band(n), in_random
    clean = _clean_samples(random.Random(25), 200, pad=True)
    assert all(in_prime_order_subgroup(elligator.decode(r)) for r in clean)
    # The padded clean representatives pass the bit test all the same.
    more_clean = clean + _clean_samples(random.Random(26), 1_800, pad=True)
    freqs = bit_frequencies(more_clean)
    assert max(abs(f - 0.5) for f in freqs) < bit_bound(len(more_clean))


# ---- the binding ----


def test_decode_takes_any_32_bytes_and_ignores_the_padding() -> None:
    for _ in range(200):
        r = bytearray(os.urandom(32))
        u = elligator.decode(bytes(r))
        assert u_int(u) == int.from_bytes(u, "little")  # canonical
        for pad in range(4):
            r[31] = (r[31] & 0x3F) | (pad << 6)
            assert _core.elligator_map(memoryview(r)) == u
    assert elligator.decode(bytes(32)) == bytes(32)
    assert elligator.decode(b"\xff" * 32) == elligator.decode(b"\xff" * 31 + b"\x3f")


def test_representative_round_trips_with_every_tweak() -> None:
    u = elligator.decode(os.urandom(32))
    reps = set()
    for tweak in range(256):
        rep = elligator.representative(u, tweak)
        assert rep is not None
        assert rep[31] & 0xC0 == tweak & 0xC0
        assert elligator.decode(rep) == u
        reps.add((rep[:31], rep[31] & 0x3F))
    assert len(reps) == 2  # one per branch: bit 0 of the tweak


@pytest.mark.parametrize("bad", [b"", b"\x00" * 31, b"\x00" * 33])
def test_wrong_lengths_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        elligator.decode(bad)
    with pytest.raises(ValueError):
        elligator.representative(bad, 0)
    with pytest.raises(ValueError):
        elligator.public_key(bad)
    with pytest.raises(ValueError):
        elligator.key_pair(bad, 0)


@pytest.mark.parametrize("tweak", [-1, 256])
def test_tweak_must_be_a_byte(tweak: int) -> None:
    with pytest.raises(ValueError):
        elligator.representative(bytes(32), tweak)
    with pytest.raises(ValueError):
        elligator.key_pair(bytes(32), tweak)
