"""What an observer runs on 32-byte strings to tell X25519 keys (or badly
made Elligator representatives) from random bytes, and the bounds a
uniform source stays within but with probability ~1e-6. Shared by the
Elligator tests (tests/unit/test_elligator.py), the masked handshake's
(tests/unit/test_noise_masked.py) and the masked header's
(tests/unit/test_header_mask.py, on 13-byte headers); docs/design/0081
reports the figures.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from nacl.bindings import crypto_core_ed25519_is_valid_point

P = 2**255 - 19
A = 486662


def u_int(b: bytes) -> int:
    """A u-coordinate's 32 bytes as X25519 reads them (reduced mod p)."""
    return int.from_bytes(b, "little") % P


def on_curve(b: bytes) -> bool:
    """Whether 32 bytes, read as X25519 reads a u-coordinate (bit 255
    dropped), are the u of a Curve25519 point rather than of its twist:
    u^3 + A u^2 + u is a square (Euler's criterion). Every X25519 public
    key is; half of random strings are."""
    u = (int.from_bytes(b, "little") & ((1 << 255) - 1)) % P
    g = (u * u * u + A * u * u + u) % P
    return g == 0 or pow(g, (P - 1) // 2, P) == 1


def in_prime_order_subgroup(u: bytes) -> bool:
    """The distinguisher an observer runs on a decoded representative:
    libsodium's Edwards point check (on the curve, not of small order, in
    the prime-order subgroup) on the birationally equivalent point
    y = (u - 1)/(u + 1). Either sign of x does: -Q is in the subgroup
    exactly when Q is."""
    x = u_int(u)
    y = (x - 1) * pow(x + 1, P - 2, P) % P
    return bool(crypto_core_ed25519_is_valid_point(y.to_bytes(32, "little")))


def bit_frequencies(samples: list[bytes]) -> list[float]:
    """The frequency of 1 at each bit position (256 for 32-byte samples),
    bit i being bit i % 8 of byte i // 8."""
    bits = 8 * len(samples[0])
    counts = [0] * bits
    for s in samples:
        n = int.from_bytes(s, "little")
        for i in range(bits):
            counts[i] += (n >> i) & 1
    return [c / len(samples) for c in counts]


def bit_bound(n: int) -> float:
    """Largest |frequency - 1/2| a uniform source shows in any of 256 bit
    positions but with probability ~1e-6 (z = 6.3: two-sided tail
    1e-6/256 per position)."""
    return 6.3 * 0.5 / math.sqrt(n)


def byte_chi2(samples: list[bytes], position: int) -> float:
    """Chi-square of the byte values at one position against uniform."""
    counts = [0] * 256
    for s in samples:
        counts[s[position]] += 1
    expected = len(samples) / 256
    return sum((c - expected) ** 2 / expected for c in counts)


def chi2_bound(df: int, tail: float) -> float:
    """The chi-square quantile with upper tail ``tail`` (Wilson-Hilferty's
    normal approximation, close to exact at 255 degrees of freedom)."""
    z = NormalDist().inv_cdf(1 - tail)
    h = 2 / (9 * df)
    return float(df * (1 - h + z * math.sqrt(h)) ** 3)


def worst_byte_chi2(samples: list[bytes]) -> tuple[int, float]:
    """The byte position whose values are least uniform, and its chi-square."""
    worst = max(range(len(samples[0])), key=lambda i: byte_chi2(samples, i))
    return worst, byte_chi2(samples, worst)


#: The bound for worst_byte_chi2 over 32 positions: ~1e-6 overall.
BYTE_CHI2_BOUND_32 = chi2_bound(255, 1e-6 / 32)


def subgroup_band(n: int) -> float:
    """6 standard deviations of the count of n uniform strings that decode
    into the prime-order subgroup (probability 1/8 each)."""
    return 6 * math.sqrt(n * (1 / 8) * (7 / 8))
